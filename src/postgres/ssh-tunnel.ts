import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, watch, type FSWatcher } from 'node:fs';
import { access, chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { UsageError, messageOf, redact, registerSecret } from '../errors.ts';
import type { Logger } from '../log.ts';
import { freePort } from './cluster.ts';
import { resolveConnection, type DatabaseConnection } from './connection.ts';
import { endpointOf } from './diagnose.ts';

// --ssh-tunnel: a database in a private network, reached through a bastion with OpenSSH's
// client. One `ssh -N` process forwards a loopback port per database server for the run; the
// database URLs are rewritten to it (host name kept for TLS, `hostaddr=127.0.0.1` and the local
// port to connect); the bastion's host key is checked against the known hosts given, never
// trusted on first use; the process is ended on every exit path.

/** How to reach the bastion, as the user gave it. */
export interface SshTunnelSettings {
  /** `USER@HOST[:PORT]` (IPv6 host in brackets: `USER@[2001:db8::1]:22`). */
  destination: string;
  /** A private key file (unencrypted; OpenSSH or PEM format). */
  privateKeyFile?: string;
  /** A known_hosts file holding the bastion's host key. */
  knownHostsFile?: string;
  /** How the three are named in messages: CLI flags or action inputs. */
  names?: { destination: string; privateKey: string; knownHosts: string };
}

const CLI_NAMES = { destination: '--ssh-tunnel', privateKey: '--ssh-private-key-file', knownHosts: '--ssh-known-hosts-file' };

/** A bastion address parsed from `USER@HOST[:PORT]`. */
export interface SshDestination {
  user: string;
  host: string;
  port: number;
}

/**
 * Parses `USER@HOST[:PORT]` (PORT default 22; an IPv6 host in brackets). The user and host are
 * checked against the characters a user name and a host name may hold, so neither can be read
 * by ssh as an option.
 * @throws UsageError naming the expected form.
 */
export function parseSshDestination(text: string, name = CLI_NAMES.destination): SshDestination {
  const m = /^([A-Za-z0-9._][A-Za-z0-9._-]*)@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(\d{1,5}))?$/.exec(text.trim());
  const port = m?.[3] === undefined ? 22 : Number(m[3]);
  if (!m || port < 1 || port > 65535) throw new UsageError(`${name} must be USER@HOST or USER@HOST:PORT (an IPv6 host in brackets), e.g. backup@bastion.example.com:22`);
  return { user: m[1]!, host: m[2]!.replace(/^\[(.*)\]$/, '$1'), port };
}

/** The `[host]:port` / `host` form a known_hosts line has for this bastion (ssh-keyscan writes the same). */
function knownHostsName(d: SshDestination): string {
  return d.port === 22 ? d.host : `[${d.host}]:${d.port}`;
}

/** How to get the bastion's host key without trusting the network: for messages. */
function keyscanHint(d: SshDestination): string {
  return `get it with \`ssh-keyscan${d.port === 22 ? '' : ` -p ${d.port}`} ${d.host}\` from a network you trust and compare its fingerprint (\`ssh-keygen -lf FILE\`) with the bastion's own (\`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\` on it)`;
}

/** One forward of a running tunnel: a loopback port to a database server as the bastion sees it. */
export interface SshForward {
  /** The database host and port as given in the URL (resolved by the bastion). */
  host: string;
  port: number;
  /** The port on 127.0.0.1 that reaches it. */
  localPort: number;
}

/** A running tunnel. */
export interface SshTunnel {
  forwards: SshForward[];
  /** The ssh process id. */
  pid: number;
  /**
   * The last channel error ssh reported after start (the bastion could not reach a database
   * server: `connect failed: Connection refused`, `administratively prohibited`), if any.
   */
  channelError(): string | undefined;
  /** Ends ssh (SIGTERM, SIGKILL after 5 s), waits for its exit, removes its directory. Safe to call twice. */
  close(): Promise<void>;
}

/** How long {@link openSshTunnel} waits for the forward to be ready, in ms (ssh's own ConnectTimeout is 15 s). */
export const TUNNEL_READY_TIMEOUT_MS = 45_000;

/** Live tunnels and their directories, ended and removed synchronously if the process exits without closing them (a second signal's process.exit). */
const live = new Map<ChildProcess, string>();
let exitHook = false;
function killOnExit(child: ChildProcess, dir: string): void {
  live.set(child, dir);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const [c, d] of live) {
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
        rmSync(d, { recursive: true, force: true });
      }
    });
  }
}

/** `setpriv --pdeathsig TERM` when util-linux's setpriv is there: ssh then ends with this process even on SIGKILL. */
async function deathSignalPrefix(): Promise<string[]> {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    try {
      await access(path.join(dir, 'setpriv'));
      return [path.join(dir, 'setpriv'), '--pdeathsig', 'TERM', '--'];
    } catch {
      // not here
    }
  }
  return [];
}

/**
 * The one line for an ssh that exited before the forward was ready, from its stderr
 * (LogLevel=INFO): host key unknown or changed, connection refused / timed out / unknown host,
 * key refused, unreadable key, bind failure.
 */
export function sshFailure(stderr: string, d: SshDestination, settings: SshTunnelSettings): UsageError {
  const names = settings.names ?? CLI_NAMES;
  const bastion = `${d.user}@${knownHostsName(d)}`;
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines.filter((l) => !/^@+$|^@ /.test(l)).at(-1) ?? 'ssh exited';
  const say = (text: string) => new UsageError(redact(`ssh tunnel to ${bastion} failed: ${text}`));
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed|host key .* differs/i.test(stderr)) {
    return say(`the bastion's host key does not match the one in ${names.knownHosts} (a changed key, or someone in between): nothing was sent to it; ${keyscanHint(d)}, then update ${names.knownHosts}`);
  }
  if (/No \S+ host key is known for|Host key verification failed/i.test(stderr)) {
    return say(`${names.knownHosts} has no host key for ${knownHostsName(d)}: nothing was sent to it; add the bastion's line (it starts with ${knownHostsName(d)}): ${keyscanHint(d)}`);
  }
  if (/Connection refused/i.test(stderr)) return say(`the bastion refused the connection on port ${d.port} (nothing listens there): check the host and port of ${names.destination}`);
  if (/timed out/i.test(stderr)) return say(`no answer from the bastion on port ${d.port} (${last}): check the host, the port and firewalls`);
  if (/Could not resolve hostname|Name or service not known|Temporary failure in name resolution/i.test(stderr)) return say(`unknown host ${d.host} (${last}): check the host of ${names.destination}`);
  if (/UNPROTECTED PRIVATE KEY FILE|bad permissions/i.test(stderr)) return say(`the private key file is readable by others, so ssh ignores it: chmod 600 it (${names.privateKey})`);
  if (/Load key .*(invalid format|error in libcrypto)|invalid format/i.test(stderr)) return say(`the private key cannot be read (invalid format): give an unencrypted OpenSSH or PEM private key, whole, with its last newline (${names.privateKey})`);
  if (/Permission denied/i.test(stderr)) return say(`the bastion refused the key for user ${d.user} (${last}): check the user, that the key's public half is in its authorized_keys, and that the key has no passphrase`);
  if (/Could not request local forwarding|Address already in use/i.test(stderr)) return say(`the local end of the tunnel could not be opened (${last})`);
  return say(last);
}

/**
 * Starts `ssh -N` with one `-L 127.0.0.1:<free port>:<host>:<port>` per database server and
 * resolves once the forwards listen. OpenSSH sets up the local forwards right after
 * authentication and only then creates the control socket (ssh.c: ssh_init_forwarding, then
 * muxserver_listen, which links the socket into place whole), and with ExitOnForwardFailure a
 * forward it cannot bind ends it: so the control socket appearing in the tunnel's own 0700
 * directory means ready, watched with fs.watch, not guessed. Host keys come only from the
 * known hosts file (StrictHostKeyChecking=yes, no global file, none added); no config file, no
 * agent, no password prompt (BatchMode). ssh is killed with this process (setpriv --pdeathsig,
 * and an exit hook).
 * @throws UsageError in one line for a missing/empty known hosts file, an unreadable key, and
 * every failure ssh reports ({@link sshFailure}); `signal.reason` when aborted.
 */
export async function openSshTunnel(settings: SshTunnelSettings, targets: { host: string; port: number }[], options: { signal?: AbortSignal; logger?: Logger; sshPath?: string } = {}): Promise<SshTunnel> {
  const names = settings.names ?? CLI_NAMES;
  const d = parseSshDestination(settings.destination, names.destination);
  if (!settings.knownHostsFile) {
    throw new UsageError(`${names.destination} needs ${names.knownHosts}: the bastion's host key is never trusted on first use (on a fresh runner that verifies nothing); ${keyscanHint(d)}`);
  }
  let known: string;
  try {
    known = await readFile(settings.knownHostsFile, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${names.knownHosts} ${settings.knownHostsFile} (${(err as NodeJS.ErrnoException).code ?? messageOf(err)})`);
  }
  if (!known.split('\n').some((l) => l.trim() && !l.trim().startsWith('#'))) {
    throw new UsageError(`${names.knownHosts} holds no host key: the bastion's host key is never trusted on first use; ${keyscanHint(d)}`);
  }
  if (!settings.privateKeyFile) throw new UsageError(`${names.destination} needs ${names.privateKey}: an unencrypted private key whose public half is in the bastion user's authorized_keys`);
  try {
    await access(settings.privateKeyFile);
  } catch (err) {
    throw new UsageError(`cannot read ${names.privateKey} ${settings.privateKeyFile} (${(err as NodeJS.ErrnoException).code ?? messageOf(err)})`);
  }
  const unique = [...new Map(targets.map((t) => [`${t.host}:${t.port}`, t])).values()];
  const prefix = await deathSignalPrefix();
  for (let attempt = 1; ; attempt++) {
    // ssh binds the control socket at <path>.<16 random chars>: a Unix socket path must stay under 108 bytes.
    const base = os.tmpdir().length > 60 ? '/tmp' : os.tmpdir();
    const dir = await mkdtemp(path.join(base, 'pgb-ssh-'));
    await chmod(dir, 0o700);
    const forwards: SshForward[] = [];
    for (const t of unique) forwards.push({ ...t, localPort: await freePort() });
    try {
      return await startSsh(settings, d, forwards, dir, prefix, options);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      // Another process took a free port between freePort() and ssh's bind: try other ports.
      if (attempt < 3 && err instanceof UsageError && /local end of the tunnel could not be opened/.test(err.message)) continue;
      throw err;
    }
  }
}

async function startSsh(settings: SshTunnelSettings, d: SshDestination, forwards: SshForward[], dir: string, prefix: string[], options: { signal?: AbortSignal; logger?: Logger; sshPath?: string }): Promise<SshTunnel> {
  options.signal?.throwIfAborted();
  const control = path.join(dir, 'control');
  const bracket = (h: string) => (net.isIPv6(h) ? `[${h}]` : h);
  const args = [
    '-N', '-n', '-T',
    '-F', '/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${settings.knownHostsFile}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'UpdateHostKeys=no',
    '-o', 'CheckHostIP=no',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', `IdentityFile=${settings.privateKeyFile}`,
    '-o', 'PasswordAuthentication=no',
    '-o', 'KbdInteractiveAuthentication=no',
    '-o', 'ExitOnForwardFailure=yes',
    '-o', 'ConnectTimeout=15',
    '-o', 'ServerAliveInterval=15',
    '-o', 'ServerAliveCountMax=3',
    '-o', 'ControlMaster=yes',
    '-o', `ControlPath=${control}`,
    '-o', 'ControlPersist=no',
    '-o', 'LogLevel=INFO', // INFO: ssh reports a forward the bastion could not open ("channel N: open failed") at this level
    '-p', String(d.port),
    '-l', d.user,
    ...forwards.flatMap((f) => ['-L', `127.0.0.1:${f.localPort}:${bracket(f.host)}:${f.port}`]),
    '--', d.host,
  ];
  const ssh = options.sshPath ?? 'ssh';
  const [cmd, ...rest] = [...prefix, ssh, ...args];
  const child = spawn(cmd!, rest, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, SSH_AUTH_SOCK: '' } });
  killOnExit(child, dir);
  let stderr = '';
  let channelError: string | undefined;
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-8192);
    const m = /channel \d+: open failed: ([^\r\n]+)/.exec(chunk.toString());
    if (m) channelError = m[1]!.trim();
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  let closing: Promise<void> | undefined;
  // One closing, whoever asks first (an abort, the end of the run): every caller waits for all of it.
  const close = () => (closing ??= (async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
    live.delete(child);
    await rm(dir, { recursive: true, force: true });
  })());
  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (existsSync(control)) resolve();
      };
      watcher = watch(dir, check);
      check();
      child.once('error', (err) => reject(new UsageError(`cannot run ssh (${messageOf(err)}): install OpenSSH's client (Debian/Ubuntu: openssh-client)`)));
      // 'close': the exit status and all of stderr are in.
      child.once('close', () => reject(sshFailure(stderr, d, settings)));
      timer = setTimeout(() => reject(new UsageError(`ssh tunnel to ${d.user}@${knownHostsName(d)} was not ready within ${TUNNEL_READY_TIMEOUT_MS / 1000} s (${stderr.trim().split('\n').at(-1) || 'no message'}): check the bastion's host, port and firewalls`)), TUNNEL_READY_TIMEOUT_MS);
      onAbort = () => reject(options.signal!.reason);
      options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  } catch (err) {
    await close();
    throw err;
  } finally {
    watcher?.close();
    clearTimeout(timer);
    if (onAbort) options.signal?.removeEventListener('abort', onAbort);
  }
  for (const f of forwards) options.logger?.info(`ssh tunnel: 127.0.0.1:${f.localPort} → ${bracket(f.host)}:${f.port} through ${d.user}@${knownHostsName(d)} (host key checked)`);
  return { forwards, pid: child.pid!, channelError: () => channelError, close };
}

/**
 * A connection routed through a forward: the host name kept (libpq checks a verify-full
 * certificate against it and sends it as SNI), `hostaddr=127.0.0.1` and the local port to
 * connect (PostgreSQL docs, "Parameter Key Words": hostaddr is used to connect, host for
 * authentication and TLS). Returned as a URL with the password, for the commands that take URLs.
 */
export function throughForward(conn: DatabaseConnection, forward: SshForward): string {
  const u = new URL(conn.url);
  u.searchParams.delete('host');
  u.searchParams.delete('port');
  u.searchParams.set('hostaddr', '127.0.0.1');
  u.hostname = net.isIPv6(forward.host) ? `[${forward.host}]` : forward.host;
  u.port = String(forward.localPort);
  if (conn.password !== undefined) u.password = encodeURIComponent(conn.password);
  return u.href;
}

/**
 * Runs `fn` with the database URLs routed through an SSH tunnel when `settings` names a bastion
 * (else with `urls` unchanged): resolves each URL (none: `DATABASE_URL`, then the `PG*`
 * variables), opens one tunnel with a forward per database server, calls `fn` with the rewritten
 * URLs, and closes the tunnel whatever happens (success, failure, abort). When a command fails
 * while ssh reported that the bastion could not reach the database server, that is the error
 * reported (the first real cause), not the connection's "closed during start-up".
 * @throws UsageError for a URL that names no single TCP host (a Unix socket, a host list) and
 * for every failure of {@link openSshTunnel}; otherwise what `fn` throws.
 */
export async function withSshTunnel<T>(settings: SshTunnelSettings | undefined, urls: (string | undefined)[], fn: (urls: string[]) => Promise<T>, options: { signal?: AbortSignal; logger?: Logger; sshPath?: string } = {}): Promise<T> {
  const given = urls.filter((u): u is string => Boolean(u?.trim()));
  if (!settings?.destination) return fn(given);
  const names = settings.names ?? CLI_NAMES;
  const conns = given.length ? given.map((u) => resolveConnection(u)) : [resolveConnection(undefined)];
  const endpoints = conns.map((c) => {
    const e = endpointOf(c, {});
    if (!e) throw new UsageError(`${names.destination} forwards TCP: give the database URL's host and port as the bastion sees them (not a Unix socket or a list of hosts)`);
    if (e.hostaddr) throw new UsageError(`${names.destination} sets hostaddr itself: remove hostaddr from the database URL`);
    return e;
  });
  const tunnel = await openSshTunnel(settings, endpoints, options);
  // A signal ends the tunnel at once: connections through it close, so nothing waits on a
  // connect timeout before the run can end.
  const onAbort = () => void tunnel.close();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const rewritten = conns.map((c, i) => throughForward(c, tunnel.forwards.find((f) => f.host === endpoints[i]!.host && f.port === endpoints[i]!.port)!));
    for (const u of rewritten) registerSecret(new URL(u).password);
    try {
      return await fn(rewritten);
    } catch (err) {
      const channel = tunnel.channelError();
      if (channel && !options.signal?.aborted) {
        const d = parseSshDestination(settings.destination, names.destination);
        throw new UsageError(`cannot reach the database through the SSH tunnel: the bastion ${d.host} could not open a connection to ${endpoints.map((e) => `${e.host}:${e.port}`).join(', ')} (${channel}); check the database host and port as the bastion sees them, and that the bastion allows TCP forwarding there`);
      }
      throw err;
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await tunnel.close();
  }
}

/**
 * Writes an action's `ssh-private-key` and `ssh-known-hosts` inputs (their content) to files in
 * a new 0700 directory (the key 0600, line endings made LF and a final newline added, as
 * OpenSSH needs), for {@link withSshTunnel}; `cleanup` removes the directory.
 */
export async function writeSshInputs(privateKey: string | undefined, knownHosts: string | undefined): Promise<{ privateKeyFile?: string; knownHostsFile?: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-ssh-inputs-'));
  await chmod(dir, 0o700);
  const normal = (s: string) => `${s.replace(/\r\n?/g, '\n').trim()}\n`;
  const out: { privateKeyFile?: string; knownHostsFile?: string } = {};
  if (privateKey?.trim()) {
    out.privateKeyFile = path.join(dir, 'key');
    await writeFile(out.privateKeyFile, normal(privateKey), { mode: 0o600 });
  }
  if (knownHosts?.trim()) {
    out.knownHostsFile = path.join(dir, 'known_hosts');
    await writeFile(out.knownHostsFile, normal(knownHosts), { mode: 0o600 });
  }
  return { ...out, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
