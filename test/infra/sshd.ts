// An OpenSSH server (Debian's `openssh-server`) owned by a test: on 127.0.0.1 on a free port,
// its own config, host key and authorized key, for the --ssh-tunnel tests. It lets the test's
// OS user in (root in CI: `PermitRootLogin prohibit-password`) by key only, and allows TCP
// forwarding, so it is the bastion from which the shared PostgreSQL is "the private database".
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/postgres/cluster.ts';

const exec = promisify(execFile);

/** A running sshd and the files a client needs. */
export interface TestSshd {
  port: number;
  pid: number;
  user: string;
  /** `USER@127.0.0.1:PORT`. */
  destination: string;
  /** The client's private key (0600), whose public half sshd authorizes. */
  keyFile: string;
  /** A known_hosts file with sshd's real host key for `[127.0.0.1]:PORT`. */
  knownHostsFile: string;
  /** The directory of all of it (removed by stop). */
  dir: string;
  /** A known_hosts line for `[127.0.0.1]:PORT` with another key (a wrong host key). */
  wrongKnownHostsLine: string;
  /** Stops sshd (SIGTERM, waits for its exit) and removes the directory. */
  stop(): Promise<void>;
}

async function keygen(file: string): Promise<string> {
  await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'pg-backup-test', '-f', file]);
  return (await readFile(`${file}.pub`, 'utf8')).trim();
}

/**
 * Starts sshd in the foreground (`-D -e`); resolves once it logged that it listens. With `hosts`,
 * sshd runs in a mount namespace of its own where that text is /etc/hosts (names the bastion
 * resolves for its forwards, without DNS and without touching the machine's file).
 */
export async function startSshd(options: { hosts?: string } = {}): Promise<TestSshd> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-sshd-'));
  const port = await freePort();
  const user = os.userInfo().username;
  const hostPub = await keygen(path.join(dir, 'host_ed25519'));
  const clientPub = await keygen(path.join(dir, 'client_ed25519'));
  const otherPub = await keygen(path.join(dir, 'other_ed25519'));
  await writeFile(path.join(dir, 'authorized_keys'), `${clientPub}\n`, { mode: 0o600 });
  const hostKeyOf = (pub: string) => pub.split(' ').slice(0, 2).join(' ');
  await writeFile(path.join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${hostKeyOf(hostPub)}\n`);
  await writeFile(path.join(dir, 'sshd_config'), [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${path.join(dir, 'host_ed25519')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'StrictModes no',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'PermitRootLogin prohibit-password',
    'AllowTcpForwarding local',
    'X11Forwarding no',
    'PrintMotd no',
    'LogLevel INFO',
    '',
  ].join('\n'));
  // sshd wants its privilege separation directory (Debian: /run/sshd), made by its service otherwise.
  if (process.getuid?.() === 0) await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const sshd = ['/usr/sbin/sshd', '-D', '-e', '-f', path.join(dir, 'sshd_config')];
  if (options.hosts !== undefined) await writeFile(path.join(dir, 'hosts'), options.hosts);
  // unshare, sh and sshd exec one another: the pid is sshd's.
  const [cmd, ...args] = options.hosts === undefined ? sshd : ['unshare', '--mount', '--', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', path.join(dir, 'hosts'), ...sshd];
  const child: ChildProcess = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      if (/Server listening on 127\.0\.0\.1 port/.test(log)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`sshd exited (${code}) before listening: ${log.slice(-500)}`)));
    child.once('error', reject);
  });
  return {
    port,
    pid: child.pid!,
    user,
    destination: `${user}@127.0.0.1:${port}`,
    keyFile: path.join(dir, 'client_ed25519'),
    knownHostsFile: path.join(dir, 'known_hosts'),
    dir,
    wrongKnownHostsLine: `[127.0.0.1]:${port} ${hostKeyOf(otherPub)}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
