import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import type { SshTunnelSettings } from '../postgres/ssh-tunnel.ts';

/** The `--ssh-tunnel` flags as commander names them. */
export interface SshFlags {
  sshTunnel?: string;
  sshPrivateKeyFile?: string;
  sshKnownHostsFile?: string;
}

/**
 * Adds `--ssh-tunnel`, `--ssh-private-key-file` and `--ssh-known-hosts-file` to a command that
 * connects to a database (dump: --database-url; drill, restore: --target-url). `what` names the
 * URL option in the help.
 */
export function sshTunnelOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--ssh-tunnel <user@host[:port]>', `reach ${what} through this SSH bastion (OpenSSH's ssh; the URL's host and port as the bastion sees them); needs --ssh-private-key-file and --ssh-known-hosts-file`)
    .option('--ssh-private-key-file <file>', 'the unencrypted private key (mode 600) for --ssh-tunnel')
    .option('--ssh-known-hosts-file <file>', 'known_hosts with the bastion\'s host key (ssh-keyscan from a trusted network, fingerprint checked): never trusted on first use');
}

/**
 * The tunnel settings of the flags, or undefined without `--ssh-tunnel`.
 * @throws UsageError for a key or known hosts flag without `--ssh-tunnel`.
 */
export function sshTunnelOf(flags: SshFlags): SshTunnelSettings | undefined {
  if (!flags.sshTunnel) {
    if (flags.sshPrivateKeyFile || flags.sshKnownHostsFile) throw new UsageError('--ssh-private-key-file and --ssh-known-hosts-file go with --ssh-tunnel USER@BASTION[:PORT]');
    return undefined;
  }
  return { destination: flags.sshTunnel, privateKeyFile: flags.sshPrivateKeyFile, knownHostsFile: flags.sshKnownHostsFile };
}
