import { access, appendFile, chmod, chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { CheckFailedError, UsageError, redact } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary, type PgBinary } from './binaries.ts';
import { serverInitdb } from './server-binaries.ts';
import { parseDatabaseUrl, withDatabase, type DatabaseConnection } from './connection.ts';
import { connect } from './server.ts';

/**
 * A PostgreSQL cluster the tool started for a drill or a demo; removed by {@link ThrowawayCluster.stop}.
 * It is reachable by this process alone (docs/security.md, "The drill's throwaway cluster"): no
 * TCP listener (`listen_addresses = ''`), one Unix socket (mode 0700) in a directory of mode
 * 0700 owned by the cluster's OS user; other OS users (root aside) cannot enter it.
 */
export interface ThrowawayCluster {
  /** Connection to the `postgres` database as superuser `postgres` over the Unix socket (trust auth, guarded by the directory's mode). */
  connection: DatabaseConnection;
  /** The port number in the socket's name (`.s.PGSQL.<port>`); nothing listens on TCP. */
  port: number;
  /** The cluster's directory (data, socket, log), mode 0700; deleted on stop. */
  dir: string;
  /** The directory of the server's Unix socket: {@link dir}, or a 0700 directory under /tmp when that path is too long for a socket. */
  socketDir: string;
  /** The server's major version. */
  major: number;
  version: string;
  /** Stops the server (immediate mode) and deletes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** Options for {@link startThrowawayCluster}. */
export interface ClusterOptions {
  /** The oldest server major version acceptable (a restore target must be the source's major or newer). */
  minMajor: number;
  /**
   * Run exactly this server major instead of the closest installed one at least `minMajor`: an
   * installed server of that major, else the binaries fetched into the download cache
   * (server-binaries.ts). Must not be below `minMajor`.
   */
  major?: number;
  /** Parent directory for the cluster's files. Default: `PG_BACKUP_WORK_DIR`, else the OS temp dir. */
  workDir?: string;
  logger?: Logger;
  /** Stops the start (initdb is killed; a server already started is stopped) and removes the directory; then rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Configure the cluster for one bulk restore ({@link bulkRestoreSettings}): WAL skipped where
   * PostgreSQL allows it, no autovacuum. Only for a cluster the tool throws away afterwards:
   * never for a user's server.
   */
  bulkRestore?: BulkRestoreSizing;
}

/** What {@link bulkRestoreSettings} sizes the cluster for. */
export interface BulkRestoreSizing {
  /** Cores this process may use; default `os.availableParallelism()` (it honours CPU affinity). */
  cores?: number;
}

/**
 * postgresql.conf settings for a throwaway cluster that receives one bulk restore (PostgreSQL
 * docs 14.4 "Populating a Database", 20.5 "Write Ahead Log"), each kept because it measured a
 * gain (2-core machine shared with other work, PostgreSQL 15, a 1.06 GB database: pgbench
 * scale 50 plus 2 M rows of text; a 731 MB custom archive restored with `pg_restore --jobs 2`):
 * - `wal_level = minimal` (with `max_wal_senders = 0`, `archive_mode = off`, which it
 *   requires): a table created or truncated in the same transaction is loaded without WAL, and
 *   parallel pg_restore issues `TRUNCATE TABLE ONLY` before the `COPY` of a table it created
 *   (pg_backup_archiver.c, restore_toc_entry); index builds skip WAL too. Measured (3 A/B
 *   pairs on a quiet machine, the archive as `pg-backup dump` stores it): restore 6.07–6.31 s →
 *   5.38–5.44 s, server CPU 6.7 s → 5.9 s, WAL written 819 MB → 0.1 MB; the cluster's
 *   directory 1866 MB → 1045 MB, and its removal 0.35–1.08 s → 0.13 s.
 *   With `--jobs 1` pg_restore issues no TRUNCATE, so the COPYs are WAL-logged (a plain dump in
 *   one `--single-transaction` still skips it). Every major from 12 to 18 takes these three.
 * - `autovacuum = off`: nothing to measure in a short drill (the launcher naps 60 s first);
 *   in a long one it keeps ANALYZE and insert-triggered VACUUM (13+) of freshly loaded tables
 *   from competing with the restore, and their lock waits from stalling a `CREATE INDEX`.
 * - `max_parallel_maintenance_workers = cores − 1` (at most 7): a parallel index build uses
 *   the leader plus that many workers, so the last big index of a restore (the other jobs
 *   done) can use every core. Workers cost CPU: a 5 M-row primary key took 1.31 s of CPU with
 *   2 workers against 1.09 s without, for a shorter wall time only when cores are idle.
 * Measured and left at PostgreSQL's defaults, because they did not help: `maintenance_work_mem`
 * (64 MB; 512 MB–1 GB cut the 5 M-integer primary key's CPU by 8 % but made a 2 M-row text
 * index 20 % slower, and 128–256 MB were slower for both — in-memory quicksort against a merge
 * of cache-sized runs; a trigram GIN index gained 6 % at 256 MB), `shared_buffers` (128 MB:
 * 1 GB changed nothing, COPY writes through a 16 MB ring and index builds bypass the buffer
 * cache; it would also count against a container's memory limit), and a larger `max_wal_size`
 * or `checkpoint_timeout` (no checkpoint ran during the restore once WAL was skipped).
 * The durability settings every throwaway cluster has (`fsync`, `full_page_writes`,
 * `synchronous_commit` off) are set by {@link startThrowawayCluster} itself.
 */
export function bulkRestoreSettings(sizing: BulkRestoreSizing): Record<string, string> {
  const cores = Math.max(1, Math.floor(sizing.cores ?? os.availableParallelism()));
  return {
    wal_level: 'minimal',
    max_wal_senders: '0',
    archive_mode: 'off',
    autovacuum: 'off',
    max_parallel_maintenance_workers: String(Math.min(7, cores - 1)),
  };
}

/** The parent directory for scratch files and throwaway clusters: `dir`, else `PG_BACKUP_WORK_DIR`, else the OS temp dir. */
export function workDirOf(dir?: string): string {
  return dir || process.env.PG_BACKUP_WORK_DIR || os.tmpdir();
}

/**
 * Creates database `name` in a throwaway cluster (from template0, UTF8) and returns its
 * connection. When `roles` are given, the missing ones are created NOLOGIN too, so a plain
 * dump's `OWNER TO` and `GRANT` statements replay.
 */
export async function createThrowawayDatabase(cluster: ThrowawayCluster, name: string, roles?: string[]): Promise<DatabaseConnection> {
  const admin = await connect(cluster.connection, 'pg-backup');
  try {
    await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(name)} TEMPLATE template0 ENCODING 'UTF8'`);
    if (roles?.length) {
      const { rows } = await admin.query<{ rolname: string }>('SELECT rolname FROM pg_roles');
      const existing = new Set(rows.map((r) => r.rolname));
      for (const role of roles) if (!existing.has(role)) await admin.query(`CREATE ROLE ${admin.escapeIdentifier(role)} NOLOGIN`);
    }
  } finally {
    await admin.end().catch(() => undefined);
  }
  return withDatabase(cluster.connection, name);
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * The OS user that runs `initdb` and `postgres`: the current user, or, when running as root
 * (which `initdb` refuses), `PG_BACKUP_CLUSTER_USER` or `postgres`.
 * @throws UsageError when running as root and that user does not exist.
 */
export async function clusterUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const name = process.env.PG_BACKUP_CLUSTER_USER || 'postgres';
  const uid = await execa('id', ['-u', name], { reject: false });
  const gid = await execa('id', ['-g', name], { reject: false });
  if (uid.exitCode !== 0 || gid.exitCode !== 0) {
    throw new UsageError(`initdb refuses to run as root and user ${JSON.stringify(name)} does not exist: create it (useradd --system postgres) or set PG_BACKUP_CLUSTER_USER`);
  }
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** The port number in the throwaway cluster's socket name: with no TCP listener it only names the file, so a fixed one is fine. */
const SOCKET_PORT = 5432;
/** The longest Unix socket path Linux takes is 107 bytes (`sun_path`, less the NUL): keep a margin. */
const MAX_SOCKET_PATH = 100;

/** A value for postgresql.conf, quoted (PostgreSQL docs 20.1.2: single quotes, doubled inside). */
function confString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * One line for a failed initdb or pg_ctl: out of space (naming `parent`), else the first line of
 * its output that says what went wrong (`initdb: error: …`, `FATAL: …`, `could not …`), never
 * the program's whole output.
 */
function clusterFailure(program: string, err: unknown, parent: string, serverLog?: string): Error {
  const e = err as { stderr?: string; stdout?: string; shortMessage?: string; message?: string };
  const text = `${e.stderr ?? ''}\n${e.stdout ?? ''}\n${serverLog ?? ''}`;
  if (/No space left on device/i.test(text)) {
    return new CheckFailedError(`${program} ran out of space in ${parent} (No space left on device): an empty cluster needs about ${Math.round(CLUSTER_BASE_BYTES / 1e6)} MB, plus the restored database; free space or choose another --work-dir`);
  }
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const reason = lines.find((l) => /\b(error|FATAL|PANIC)\b|could not|cannot/i.test(l)) ?? lines.at(-1) ?? e.shortMessage ?? e.message ?? 'failed';
  return new Error(redact(`${program} failed for the throwaway cluster in ${parent}: ${reason}`));
}

/** Disk an empty throwaway cluster takes (initdb's files and the first WAL segments), in bytes: 39 MB measured for PostgreSQL 15, with a margin. */
export const CLUSTER_BASE_BYTES = 48 * 1024 * 1024;

/**
 * Starts a throwaway PostgreSQL cluster: `initdb` into a fresh directory (mode 0700) under the
 * work dir, then `pg_ctl start` with no TCP listener and one Unix socket (mode 0700) in that
 * directory, so only this process (and root) can connect: other OS users cannot enter it. Trust
 * authentication stands behind that guard (`--auth-local=trust --auth-host=reject`). Durability
 * is off (`fsync`, `full_page_writes`, `synchronous_commit`), since the data is thrown away; with
 * `bulkRestore`, WAL is skipped too ({@link bulkRestoreSettings}).
 * @throws UsageError when no suitable server binaries are installed, or when running as root without the cluster user.
 * @throws CheckFailedError when initdb or the server runs out of space (one line naming the directory).
 * @throws Error with one line from initdb's or the server's output when either fails otherwise.
 */
export async function startThrowawayCluster(options: ClusterOptions): Promise<ThrowawayCluster> {
  if (options.major !== undefined && options.major < options.minMajor) {
    throw new CheckFailedError(`PostgreSQL ${options.major} is older than ${options.minMajor}: a dump restores only into its source's major or a newer one`);
  }
  const initdb: PgBinary = options.major !== undefined ? await serverInitdb(options.major, options.logger) : await findPgBinary('initdb', options.minMajor, 'a throwaway PostgreSQL cluster');
  const bin = path.dirname(initdb.path);
  const pgCtl = path.join(bin, 'pg_ctl');
  const parent = workDirOf(options.workDir);
  const dir = await mkdtemp(path.join(parent, 'pg-backup-cluster-'));
  const data = path.join(dir, 'data');
  const log = path.join(dir, 'server.log');
  let socketDir = dir;
  const user = await clusterUser().catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  const run = { ...(user ?? {}), cwd: dir, env: { LC_ALL: 'C.UTF-8', PGTZ: 'UTC' } } as const;
  let started = false;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (started) await stopThrowawayServer(pgCtl, data, run);
    await rm(dir, { recursive: true, force: true });
    if (socketDir !== dir) await rm(socketDir, { recursive: true, force: true });
  };
  try {
    // mkdtemp makes it 0700 already; said explicitly, since the restored data lives here.
    await chmod(dir, 0o700);
    if (user) await chown(dir, user.uid, user.gid);
    if (`${dir}/.s.PGSQL.${SOCKET_PORT}`.length > MAX_SOCKET_PATH) {
      socketDir = await mkdtemp('/tmp/pgb-sock-');
      await chmod(socketDir, 0o700);
      if (user) await chown(socketDir, user.uid, user.gid);
    }
    await execa(initdb.path, ['-D', data, '-U', 'postgres', '--auth-local=trust', '--auth-host=reject', '-E', 'UTF8', '--locale=C', '--no-sync'], { ...run, cancelSignal: options.signal }).catch((err: unknown) => {
      options.signal?.throwIfAborted(); // a cancelled initdb is the cancellation, not a failure
      throw clusterFailure('initdb', err, parent);
    });
    options.signal?.throwIfAborted();
    // In postgresql.conf rather than on pg_ctl's -o (which goes through a shell): no quoting trap.
    const settings = {
      listen_addresses: confString(''),
      port: String(SOCKET_PORT),
      unix_socket_directories: confString(socketDir),
      unix_socket_permissions: '0700',
      fsync: 'off',
      full_page_writes: 'off',
      synchronous_commit: 'off',
      max_wal_size: confString('1GB'),
      ...(options.bulkRestore ? bulkRestoreSettings(options.bulkRestore) : {}),
    };
    await appendFile(path.join(data, 'postgresql.conf'), `\n# pg-backup throwaway cluster: reachable through its private socket only\n${Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
    options.logger?.info(`starting throwaway PostgreSQL ${initdb.version} (no TCP listener; Unix socket in ${socketDir}, mode 0700)`);
    started = true;
    // pg_ctl start is not cancelled half-way (a postmaster it already forked would escape the
    // stop below); it is bounded by -t, and the signal is honoured right after it.
    await execa(pgCtl, ['start', '-D', data, '-l', log, '-w', '-t', '60'], run).catch(async (err: unknown) => {
      throw clusterFailure('the PostgreSQL server', err, parent, await readFile(log, 'utf8').catch(() => ''));
    });
    options.signal?.throwIfAborted();
    const connection = parseDatabaseUrl(`postgresql:///postgres?host=${encodeURIComponent(socketDir)}&port=${SOCKET_PORT}&user=postgres`);
    return { connection, port: SOCKET_PORT, dir, socketDir, major: initdb.major, version: initdb.version, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Stops a throwaway cluster's server the way `pg_ctl stop -m immediate` does, without pg_ctl's
 * 100 ms polling: SIGQUIT to the postmaster named in `postmaster.pid` (only when its command
 * line names `dataDir`), then a wait in 10 ms steps, at most 30 s, for the postmaster to remove
 * that file, which it does once every backend has exited (PostgreSQL docs 19.5, "Shutting Down
 * the Server": SIGQUIT is the immediate mode). Measured: 0.11–0.12 s with pg_ctl (mostly its first 100 ms wait), 0.01–0.05 s
 * so. Falls back to {@link stopServer} when the pid file or the process cannot be read (no
 * /proc), the process is not that postmaster, or it has not stopped in time. Never throws.
 */
async function stopThrowawayServer(pgCtl: string, dataDir: string, run: { uid?: number; gid?: number; cwd?: string; env?: Record<string, string> }): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  try {
    const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 1) throw new Error('no postmaster pid');
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    if (!cmdline.includes(dataDir)) throw new Error('not this cluster\'s postmaster');
    process.kill(pid, 'SIGQUIT');
    for (const end = Date.now() + 30_000; Date.now() < end; ) {
      if (!(await access(pidFile).then(() => true, () => false))) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } catch {
    /* pg_ctl below */
  }
  await stopServer(pgCtl, dataDir, run);
}

/**
 * Stops the server of data directory `dataDir` at once (`pg_ctl stop -m immediate`, at most
 * 30 s), as the OS user and in the directory `run` gives; never throws (a server that is not
 * running is fine). For throwaway clusters only: immediate mode skips the shutdown checkpoint.
 */
export async function stopServer(pgCtl: string, dataDir: string, run: { uid?: number; gid?: number; cwd?: string; env?: Record<string, string> }): Promise<void> {
  await execa(pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30'], { ...run, reject: false });
}
