import * as core from '@actions/core';
import { UsageError, registerSecret } from '../errors.ts';
import { writeSshInputs, type SshTunnelSettings } from '../postgres/ssh-tunnel.ts';
import { optional } from './action.ts';

/** The inputs of an action that can reach its database through an SSH bastion (dump, drill). */
export const sshInputs = {
  'ssh-tunnel': optional,
  'ssh-private-key': optional,
  'ssh-known-hosts': optional,
};

const INPUT_NAMES = { destination: 'input "ssh-tunnel"', privateKey: 'input "ssh-private-key"', knownHosts: 'input "ssh-known-hosts"' };

/**
 * The tunnel settings of the `ssh-tunnel`, `ssh-private-key` (the key's content) and
 * `ssh-known-hosts` (the bastion's known_hosts lines) inputs. The key is masked first (whole and
 * line by line: the runner masks a log line only by whole registered values), then written
 * with the known hosts to a new 0700 directory (key 0600) that `cleanup` removes: call it in a
 * `finally`. Without `ssh-tunnel`: no settings, nothing written.
 * @throws UsageError for a key or known hosts input without `ssh-tunnel`.
 */
export async function sshTunnelFromInputs(inputs: { 'ssh-tunnel'?: string; 'ssh-private-key'?: string; 'ssh-known-hosts'?: string }): Promise<{ settings?: SshTunnelSettings; cleanup(): Promise<void> }> {
  const key = inputs['ssh-private-key'];
  if (key) {
    for (const secret of [key, key.trim(), ...key.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('-----'))]) {
      core.setSecret(secret);
      registerSecret(secret);
    }
  }
  if (!inputs['ssh-tunnel']) {
    if (key || inputs['ssh-known-hosts']) throw new UsageError('inputs "ssh-private-key" and "ssh-known-hosts" go with input "ssh-tunnel" (USER@BASTION[:PORT])');
    return { cleanup: async () => undefined };
  }
  const files = await writeSshInputs(key, inputs['ssh-known-hosts']);
  return {
    settings: { destination: inputs['ssh-tunnel'], privateKeyFile: files.privateKeyFile, knownHostsFile: files.knownHostsFile, names: INPUT_NAMES },
    cleanup: files.cleanup,
  };
}
