import { chmod, chown, mkdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa, type Options as ExecaOptions, type ResultPromise } from 'execa';
import { UsageError } from '../errors.ts';

/**
 * Who runs a throwaway PostgreSQL (drill, `verify --level schema`, demo, the physical drill's
 * restored server), and how. Restored code runs in that server as superuser (a CHECK constraint,
 * a trigger, a column default, an index expression call functions during the restore), so it can
 * run `COPY … TO PROGRAM`, `pg_read_file` and `lo_export` as the server's OS user, with the
 * server's environment. That OS user must therefore hold nothing worth stealing:
 * - `root`: pg-backup is root; the server runs as the cluster user (setuid/setgid, supplementary
 *   groups dropped), `pg-backup-drill` by default, created on demand.
 * - `sudo`: pg-backup is not root but has passwordless sudo (GitHub-hosted runners): the server
 *   runs as the cluster user through `sudo -n -u USER -- env -i …`; directories owned by that
 *   user are made and removed through `sudo -n`.
 * - `same-user`: neither, and the user consented (`--allow-same-os-user`, or the demo, which
 *   restores only data it made itself): the server runs as pg-backup's own OS user, so restored
 *   code can read this process's files and `/proc/<pid>/environ`. Reduced protection.
 * In every mode the programs start with a scrubbed environment ({@link scrubbedEnv}).
 * See docs/security.md, "Restored code cannot reach a secret".
 */
export type IsolationMode = 'root' | 'sudo' | 'same-user';

/** An OS user: name, uid, primary gid. */
export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

/** How the throwaway PostgreSQL runs: see {@link IsolationMode}. */
export interface ClusterIsolation {
  mode: IsolationMode;
  /** The OS user the server runs as. */
  user: OsUser;
  /** pg-backup's own OS user: its primary gid owns the socket directory, so only pg-backup (and root) connect. */
  self: OsUser;
  /**
   * The server runs in a network namespace of its own (`unshare --net`, loopback only): restored
   * code can reach no host, no cloud metadata endpoint. False when unshare is not available
   * (a container without CAP_SYS_ADMIN), for the same user, and for a physical drill's recovery
   * (its restore_command reaches the repository).
   */
  isolateNetwork: boolean;
  /** One line for the drill log, e.g. `throwaway cluster runs as OS user pg-backup-drill (uid 995), environment scrubbed`. */
  description: string;
}

/** The default cluster user, created on demand (`useradd --system`, no home, no shell, no sudo). */
export const DEFAULT_CLUSTER_USER = 'pg-backup-drill';

/** Groups that give their members root, or the machine's disks or containers: a cluster user in one of them is refused. */
const PRIVILEGED_GROUPS = new Set(['root', 'sudo', 'wheel', 'admin', 'adm', 'docker', 'lxd', 'disk', 'shadow', 'systemd-journal']);

/** The variables a throwaway server's programs keep (with `PGTZ=UTC`); nothing else of this process's environment reaches them. */
const KEPT_VARIABLES = ['PATH', 'TZ', 'LANG'];
/**
 * A test's leftover marker (test/infra/leftovers.ts): a random, non-secret value that lets a
 * test find the processes a run left behind. Passed through when set.
 */
const TEST_MARKER = 'PGB_LEFTOVER_MARK';

/**
 * The environment of initdb, pg_ctl and postgres: `PATH`, `TZ` and `LANG` of this process when
 * set, `LC_ALL=C.UTF-8`, `PGTZ=UTC`, plus `extra` (a physical restore's archive-get settings).
 * Nothing else: no AWS, GitHub, age or database credentials.
 */
export function scrubbedEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of [...KEPT_VARIABLES, TEST_MARKER]) {
    const value = process.env[name];
    if (value) env[name] = value;
  }
  env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  return { ...env, LC_ALL: 'C.UTF-8', PGTZ: 'UTC', ...extra };
}

/** Name, uid and gid of `name` (`id`), or undefined when there is no such user. */
async function lookupUser(name: string): Promise<OsUser | undefined> {
  const r = await execa('id', [name], { reject: false, env: { LC_ALL: 'C' } });
  if (r.exitCode !== 0) return undefined;
  const uid = /uid=(\d+)/.exec(r.stdout)?.[1];
  const gid = /gid=(\d+)/.exec(r.stdout)?.[1];
  return uid && gid ? { name, uid: Number(uid), gid: Number(gid) } : undefined;
}

/** This process's OS user. */
function selfUser(): OsUser {
  const info = os.userInfo();
  return { name: info.username, uid: info.uid, gid: info.gid };
}

/** True when `sudo -n true` succeeds: passwordless sudo to root. */
async function hasPasswordlessSudo(): Promise<boolean> {
  const r = await execa('sudo', ['-n', 'true'], { reject: false, stdin: 'ignore', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' }, extendEnv: false });
  return r.exitCode === 0;
}

/** The groups of `name` (`id -Gn`) that would give it more than an unprivileged user has. */
async function privilegedGroups(name: string): Promise<string[]> {
  const r = await execa('id', ['-Gn', name], { reject: false, env: { LC_ALL: 'C' } });
  return r.exitCode === 0 ? r.stdout.trim().split(/\s+/).filter((g) => PRIVILEGED_GROUPS.has(g)) : [];
}

const NAME = /^[a-z_][a-z0-9_-]{0,31}$/i;

/**
 * The cluster user, created when it is the default one and missing: `useradd --system
 * --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin` (directly as
 * root, else through `sudo -n`). Two processes creating it at once are fine (the loser finds it).
 */
async function ensureUser(name: string, viaSudo: boolean): Promise<OsUser> {
  const found = await lookupUser(name);
  if (found) return found;
  if (name !== DEFAULT_CLUSTER_USER) {
    throw new UsageError(`PG_BACKUP_CLUSTER_USER names OS user ${JSON.stringify(name)}, which does not exist: create it (useradd --system --user-group --no-create-home --shell /usr/sbin/nologin ${name}) or unset PG_BACKUP_CLUSTER_USER to use ${DEFAULT_CLUSTER_USER}, created on demand`);
  }
  const args = ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name];
  const r = await (viaSudo ? execa('sudo', ['-n', 'useradd', ...args], { reject: false, stdin: 'ignore' }) : execa('useradd', args, { reject: false })).catch((err: unknown) => ({ exitCode: 127, stderr: String(err) }));
  const created = await lookupUser(name);
  if (created) return created;
  const why = String(r.stderr ?? '').split('\n').map((l) => l.trim()).find(Boolean) ?? `exit code ${r.exitCode}`;
  throw new UsageError(`cannot create the OS user ${name} that runs the throwaway PostgreSQL (useradd: ${why}): create it yourself (useradd --system --user-group --no-create-home --shell /usr/sbin/nologin ${name}) or set PG_BACKUP_CLUSTER_USER to an existing unprivileged user`);
}

/** The refusal when the cluster would run as pg-backup's own OS user without consent. */
function sameUserRefusal(self: OsUser, why: string): UsageError {
  return new UsageError(
    `refusing to start a throwaway PostgreSQL as your own OS user ${self.name}: ${why}, and code restored from the backup would run as ${self.name} and could read this process's secrets (its environment, its files); run as root, or give ${self.name} passwordless sudo (the cluster then runs as ${DEFAULT_CLUSTER_USER}), or pass --allow-same-os-user to accept this (the environment is still scrubbed)`,
  );
}

const cache = new Map<string, Promise<ClusterIsolation>>();

/**
 * Decides how the throwaway PostgreSQL runs ({@link IsolationMode}) and prepares it: as root or
 * with passwordless sudo, the cluster user (`PG_BACKUP_CLUSTER_USER`, default
 * {@link DEFAULT_CLUSTER_USER}, created on demand) is looked up or created and checked
 * (not root, not this process's user, in no privileged group). Without either, it refuses
 * unless `allowSameOsUser`. Call it before starting anything (the download, initdb), so that a
 * refusal leaves nothing behind. The answer is kept for the process (one sudo probe).
 * @throws UsageError (exit 2, one line) when the cluster would run as this process's own OS user
 *   without consent, when the cluster user is missing and cannot be created, or is privileged.
 */
export function clusterIsolation(options: { allowSameOsUser?: boolean; reason?: string } = {}): Promise<ClusterIsolation> {
  const name = process.env.PG_BACKUP_CLUSTER_USER || DEFAULT_CLUSTER_USER;
  const key = `${name}\0${options.allowSameOsUser ? 1 : 0}\0${options.reason ?? ''}`;
  let found = cache.get(key);
  if (!found) {
    found = decide(name, options);
    cache.set(key, found);
    found.catch(() => cache.delete(key));
  }
  return found;
}

async function decide(name: string, options: { allowSameOsUser?: boolean; reason?: string }): Promise<ClusterIsolation> {
  const self = selfUser();
  if (!NAME.test(name)) throw new UsageError(`PG_BACKUP_CLUSTER_USER ${JSON.stringify(name)} is not an OS user name: use letters, digits, "_" or "-"`);
  const root = self.uid === 0;
  const sudo = !root && (await hasPasswordlessSudo());
  if (!root && !sudo) {
    if (!options.allowSameOsUser) throw sameUserRefusal(self, 'it is not root and has no passwordless sudo to run it as another user');
    return sameUser(self, options.reason ?? '--allow-same-os-user');
  }
  const user = await ensureUser(name, sudo);
  if (user.uid === 0) throw new UsageError(`PG_BACKUP_CLUSTER_USER ${name} is root: initdb refuses it, and restored code must not run as root; name an unprivileged user or unset it`);
  if (user.uid === self.uid) {
    if (!options.allowSameOsUser) throw sameUserRefusal(self, `PG_BACKUP_CLUSTER_USER names this user`);
    return sameUser(self, options.reason ?? '--allow-same-os-user');
  }
  const privileged = await privilegedGroups(name);
  const network = await canIsolateNetwork(sudo);
  if (privileged.length) {
    throw new UsageError(`the cluster user ${name} is in group ${privileged.join(', ')}, which gives code restored from a backup more than an unprivileged user has: remove it from ${privileged.length > 1 ? 'them' : 'it'} or set PG_BACKUP_CLUSTER_USER to an unprivileged user`);
  }
  return {
    mode: root ? 'root' : 'sudo',
    user,
    self,
    isolateNetwork: network === true,
    description: `throwaway cluster runs as OS user ${user.name} (uid ${user.uid}${root ? '' : ', through sudo'}), environment scrubbed, ${network === true ? 'no network' : `network not isolated (unshare --net: ${network})`}`,
  };
}

/** True when `unshare --net` works (as root, or through sudo), else its one-line reason. */
async function canIsolateNetwork(sudo: boolean): Promise<true | string> {
  const r = await execa(sudo ? 'sudo' : 'unshare', [...(sudo ? ['-n', '--', 'unshare'] : []), '--net', '--', 'true'], { reject: false, stdin: 'ignore', env: { LC_ALL: 'C' } }).catch((err: unknown) => ({ exitCode: 127, stderr: String(err) }));
  if (r.exitCode === 0) return true;
  return String(r.stderr ?? '').split('\n').map((l) => l.trim()).find(Boolean) ?? `exit code ${r.exitCode}`;
}

function sameUser(self: OsUser, reason: string): ClusterIsolation {
  return {
    mode: 'same-user',
    user: self,
    self,
    isolateNetwork: false,
    description: `throwaway cluster runs as your own OS user ${self.name} (uid ${self.uid}, ${reason}), environment scrubbed; protection reduced: restored code can read this user's files and processes`,
  };
}

/**
 * Runs `program` as the cluster user with exactly `env` (no other variable of this process):
 * directly with setuid/setgid as root, through `sudo -n -u USER -- env -i …` with sudo, or as
 * this process with `extendEnv: false`. The working directory is `/`. With
 * `iso.isolateNetwork`, in a network namespace of its own with only loopback up: `unshare --net
 * -- sh -c 'ip link set lo up; exec "$@"' sh setpriv --reuid U --regid G --clear-groups -- env -i
 * … program` (as root, or through `sudo -n`); each of unshare, sh, setpriv and env execs the next,
 * so the process that runs is the program itself (signals reach it).
 */
export function runAsClusterUser(iso: ClusterIsolation, program: string, args: string[], env: Record<string, string>, options: ExecaOptions = {}): ResultPromise {
  const pairs = () => Object.entries(env).map(([k, v]) => `${k}=${v}`);
  if (iso.isolateNetwork && iso.mode !== 'same-user') {
    // Loopback up, so that PostgreSQL 14 and older keep their statistics collector's UDP socket.
    const inner = ['unshare', '--net', '--', 'sh', '-c', 'ip link set lo up 2>/dev/null; exec "$@"', 'sh', 'setpriv', `--reuid=${iso.user.uid}`, `--regid=${iso.user.gid}`, '--clear-groups', '--', 'env', '-i', ...pairs(), program, ...args];
    const [file, ...rest] = iso.mode === 'sudo' ? ['sudo', '-n', '--', ...inner] : inner;
    return execa(file!, rest, { stdin: 'ignore', ...options, cwd: '/', env: { PATH: env.PATH ?? '/usr/bin:/bin' }, extendEnv: false });
  }
  if (iso.mode === 'sudo') {
    return execa('sudo', ['-n', '-u', iso.user.name, '--', 'env', '-i', ...pairs(), program, ...args], { stdin: 'ignore', ...options, cwd: '/', env: { PATH: env.PATH ?? '/usr/bin:/bin' }, extendEnv: false });
  }
  const ids = iso.mode === 'root' ? { uid: iso.user.uid, gid: iso.user.gid } : {};
  return execa(program, args, { stdin: 'ignore', ...options, ...ids, cwd: '/', env, extendEnv: false });
}

/**
 * Makes `dir` (absent; its parent belongs to this process) owned by the cluster user with
 * `mode` and group `group` (default the cluster user's): mkdir + chown as root, `sudo -n
 * install -d` with sudo, a plain mkdir otherwise (same user: group and setgid bit ignored).
 */
export async function makeClusterDirs(iso: ClusterIsolation, dirs: { path: string; mode: number; group?: number }[]): Promise<void> {
  if (iso.mode === 'sudo') {
    const script = dirs.map((_, i) => `install -d -o "$1" -g "$${i * 3 + 2}" -m "$${i * 3 + 3}" -- "$${i * 3 + 4}"`).join(' && ');
    const args = [iso.user.name, ...dirs.flatMap((d) => [String(d.group ?? iso.user.gid), (d.mode & 0o7777).toString(8), d.path])];
    const r = await execa('sudo', ['-n', '--', 'sh', '-c', script, 'sh', ...args], { reject: false, stdin: 'ignore' });
    if (r.exitCode !== 0) throw new Error(`cannot make the cluster's directories as ${iso.user.name} through sudo: ${String(r.stderr).trim().split('\n')[0] ?? `exit code ${r.exitCode}`}`);
    return;
  }
  for (const d of dirs) {
    await mkdir(d.path, { mode: 0o700 });
    if (iso.mode === 'root') await chown(d.path, iso.user.uid, d.group ?? iso.user.gid);
    await chmod(d.path, iso.mode === 'root' ? d.mode : d.mode & 0o700);
  }
}

/**
 * Removes `paths` (directories the cluster user owns, inside a directory of this process that
 * the cluster user cannot write, so it cannot swap them for links): `rm -rf` as root, through
 * `sudo -n rm -rf` with sudo. Never throws.
 */
export async function removeClusterDirs(iso: ClusterIsolation, paths: string[]): Promise<void> {
  if (iso.mode === 'sudo') {
    await execa('sudo', ['-n', '--', 'rm', '-rf', '--', ...paths], { reject: false, stdin: 'ignore' }).catch(() => undefined);
    return;
  }
  for (const p of paths) await rm(p, { recursive: true, force: true }).catch(() => undefined);
}

/** Reads a file the cluster user owns (a server log, `postmaster.pid`); undefined when it cannot. */
export async function readAsClusterUser(iso: ClusterIsolation, file: string): Promise<string | undefined> {
  if (iso.mode !== 'sudo') return readFile(file, 'utf8').catch(() => undefined);
  const r = await runAsClusterUser({ ...iso, isolateNetwork: false }, 'cat', ['--', file], scrubbedEnv(), { reject: false });
  return r.exitCode === 0 ? String(r.stdout) : undefined;
}

/** Sends `signal` to process `pid` of the cluster user (`kill` through sudo with sudo). Never throws. */
export async function signalAsClusterUser(iso: ClusterIsolation, pid: number, signal: 'SIGQUIT' | 'SIGKILL'): Promise<void> {
  if (iso.mode !== 'sudo') {
    try {
      process.kill(pid, signal);
    } catch {
      /* gone */
    }
    return;
  }
  await runAsClusterUser({ ...iso, isolateNetwork: false }, 'kill', [`-${signal.slice(3)}`, String(pid)], scrubbedEnv(), { reject: false }).catch(() => undefined);
}

/**
 * True while process `pid` runs (of any user): false once it is gone or a zombie (`/proc/<pid>/stat`
 * state Z or X), since its parent — init, for a postmaster pg_ctl left — may reap it only much
 * later (measured: 1–2 s under a container's init). Without /proc: `kill(pid, 0)`.
 */
export async function processAlive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'latin1').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' || err.code === 'ESRCH' ? '' : undefined));
  if (stat === '') return false;
  if (stat !== undefined) return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The owner uid of process `pid` (`/proc/<pid>`), or undefined. */
export async function processOwner(pid: number): Promise<number | undefined> {
  return stat(`/proc/${pid}`).then((s) => s.uid, () => undefined);
}

/**
 * Checks that the cluster user may traverse every directory down to `dir` (the work dir):
 * a UsageError naming the first it cannot enter, before anything is made.
 */
export async function checkClusterUserReaches(iso: ClusterIsolation, dir: string, what: string): Promise<void> {
  if (iso.mode === 'same-user') return;
  const groups = await execa('id', ['-G', iso.user.name], { reject: false });
  const gids = new Set([iso.user.gid, ...(groups.exitCode === 0 ? groups.stdout.trim().split(/\s+/).map(Number) : [])]);
  const dirs: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    dirs.unshift(d);
    if (d === path.dirname(d)) break;
  }
  for (const d of dirs) {
    const s = await stat(d).catch(() => undefined);
    if (!s) return; // a missing directory fails later with its own message
    const may = s.uid === iso.user.uid ? s.mode & 0o100 : gids.has(s.gid) ? s.mode & 0o010 : s.mode & 0o001;
    if (!may) {
      throw new UsageError(`the throwaway PostgreSQL runs as OS user ${iso.user.name}, who cannot enter ${d} (mode ${(s.mode & 0o777).toString(8).padStart(4, '0')}) on the way to ${what} ${dir}: choose a --work-dir (or PG_BACKUP_WORK_DIR) every user can traverse, e.g. /tmp`);
    }
  }
}
