import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CheckFailedError, redact } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary, type PgBinary } from './binaries.ts';
import { checkReachable, serverInitdb } from './server-binaries.ts';
import {
  checkClusterUserReaches,
  clusterIsolation,
  makeClusterDirs,
  processAlive,
  processOwner,
  readAsClusterUser,
  removeClusterDirs,
  runAsClusterUser,
  scrubbedEnv,
  signalAsClusterUser,
  type ClusterIsolation,
} from './cluster-user.ts';
import { parseDatabaseUrl, withDatabase, type DatabaseConnection } from './connection.ts';
import { connect } from './server.ts';

/**
 * A PostgreSQL cluster the tool started for a drill or a demo; removed by {@link ThrowawayCluster.stop}.
 * It is reachable by this process's OS user alone (docs/security.md, "The drill's throwaway
 * cluster"): no TCP listener (`listen_addresses = ''`), one Unix socket (mode 0770) in a
 * directory owned by the cluster's OS user with this process's group (mode 2710); other OS
 * users (root aside) cannot enter it. It runs as the cluster user with a scrubbed environment
 * ({@link isolation}).
 */
export interface ThrowawayCluster {
  /** Connection to the `postgres` database as superuser `postgres` over the Unix socket (trust auth, guarded by the directory's mode). */
  connection: DatabaseConnection;
  /** The port number in the socket's name (`.s.PGSQL.<port>`); nothing listens on TCP. */
  port: number;
  /** The cluster's directory (this process's, mode 0711; 0700 as the same user), holding `data` (0700) and `socket`; deleted on stop. */
  dir: string;
  /** The directory of the server's Unix socket: `<dir>/socket`, or one under /tmp when that path is too long for a socket. */
  socketDir: string;
  /** Who runs the server and how (the drill log names it). */
  isolation: ClusterIsolation;
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
  /**
   * Run the cluster as this process's own OS user when neither root nor passwordless sudo can
   * run it as the cluster user (explicit consent: `--allow-same-os-user`; the demo). Without
   * it, that case is refused (UsageError).
   */
  allowSameOsUser?: boolean;
  /** Why the same user is acceptable, for the drill log (default `--allow-same-os-user`). */
  sameOsUserReason?: string;
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
 * connection. A name the cluster already has (`postgres`, `template1`: a backup of one of those
 * is drilled like any other) is dropped first and made anew from template0, so the restore meets
 * an empty database; a new `template1` is marked a template again. When `roles` are given, the
 * missing ones are created NOLOGIN too, so a plain dump's `OWNER TO` and `GRANT` statements replay.
 */
export async function createThrowawayDatabase(cluster: ThrowawayCluster, name: string, roles?: string[]): Promise<DatabaseConnection> {
  // The admin session must not sit in the database it drops: `postgres` is replaced from template1.
  const admin = await connect(name === 'postgres' ? withDatabase(cluster.connection, 'template1') : cluster.connection, 'pg-backup');
  try {
    const db = admin.escapeIdentifier(name);
    const { rows: existing } = await admin.query<{ datistemplate: boolean }>('SELECT datistemplate FROM pg_database WHERE datname = $1', [name]);
    if (existing[0]) {
      if (existing[0].datistemplate) await admin.query(`ALTER DATABASE ${db} IS_TEMPLATE false`);
      await admin.query(`DROP DATABASE ${db}`);
    }
    await admin.query(`CREATE DATABASE ${db} TEMPLATE template0 ENCODING 'UTF8'`);
    if (existing[0]?.datistemplate) await admin.query(`ALTER DATABASE ${db} IS_TEMPLATE true`);
    if (roles?.length) {
      const { rows } = await admin.query<{ rolname: string }>('SELECT rolname FROM pg_roles');
      const have = new Set(rows.map((r) => r.rolname));
      for (const role of roles) if (!have.has(role)) await admin.query(`CREATE ROLE ${admin.escapeIdentifier(role)} NOLOGIN`);
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

/** The port number in the throwaway cluster's socket name: with no TCP listener it only names the file, so a fixed one is fine. */
const SOCKET_PORT = 5432;
/** The longest Unix socket path Linux takes is 107 bytes (`sun_path`, less the NUL): keep a margin. */
const MAX_SOCKET_PATH = 100;

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

/** One `-c name=value` for pg_ctl's `-o`, which a shell splits: single-quoted for /bin/sh. */
export function serverOptionArg([name, value]: [string, string]): string {
  return `-c '${name}=${value.replace(/'/g, "'\\''")}'`;
}

/**
 * Starts a throwaway PostgreSQL cluster. Who runs it is decided first ({@link clusterIsolation}):
 * the cluster user (`pg-backup-drill`, created on demand) when this process is root or has
 * passwordless sudo, else this process's own user only with `allowSameOsUser` (refused
 * otherwise, before anything is made). initdb, pg_ctl and postgres get a scrubbed environment
 * ({@link scrubbedEnv}: PATH, locale, TZ; no credential of this process).
 *
 * Layout: a directory of this process under the work dir (mode 0711: others may pass, not
 * list, and the cluster user cannot write it, so it cannot swap its own directories for links
 * before they are removed), holding `data` (the cluster user's, 0700; the server log is
 * `data/pg-backup-server.log`) and `socket` (owner the cluster user, group this process's
 * primary group, mode 2710: the socket inherits that group and gets mode 0770, so this process
 * connects and no other user can; the socket directory moves to a 0711 directory under /tmp
 * when the path is too long for a socket). As the same user, both are 0700. No TCP listener;
 * trust authentication behind that guard (`--auth-local=trust --auth-host=reject`). Durability
 * is off (`fsync`, `full_page_writes`, `synchronous_commit`), since the data is thrown away;
 * with `bulkRestore`, WAL is skipped too ({@link bulkRestoreSettings}). The settings go on the
 * server's command line (pg_ctl -o), since this process cannot write the cluster user's files.
 * @throws UsageError when no suitable server binaries are installed, when the cluster would run
 *   as this process's user without `allowSameOsUser`, or when the cluster user cannot reach the
 *   work dir or the binaries.
 * @throws CheckFailedError when initdb or the server runs out of space (one line naming the directory).
 * @throws Error with one line from initdb's or the server's output when either fails otherwise.
 */
export async function startThrowawayCluster(options: ClusterOptions): Promise<ThrowawayCluster> {
  if (options.major !== undefined && options.major < options.minMajor) {
    throw new CheckFailedError(`PostgreSQL ${options.major} is older than ${options.minMajor}: a dump restores only into its source's major or a newer one`);
  }
  const iso = await clusterIsolation({ allowSameOsUser: options.allowSameOsUser, reason: options.sameOsUserReason });
  const initdb: PgBinary = options.major !== undefined ? await serverInitdb(options.major, options.logger) : await findPgBinary('initdb', options.minMajor, 'a throwaway PostgreSQL cluster');
  const bin = path.dirname(initdb.path);
  const pgCtl = path.join(bin, 'pg_ctl');
  const parent = workDirOf(options.workDir);
  if (iso.mode !== 'same-user') {
    await checkReachable(bin, iso.user, initdb.major);
    await checkClusterUserReaches(iso, parent, 'the work dir');
  }
  const env = scrubbedEnv();
  const private_ = iso.mode === 'same-user';
  const dir = await mkdtemp(path.join(parent, 'pg-backup-cluster-'));
  const data = path.join(dir, 'data');
  const log = path.join(data, 'pg-backup-server.log');
  let socketParent: string | undefined;
  let socketDir = path.join(dir, 'socket');
  let made = false;
  let started = false;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (started) await stopThrowawayServer(iso, pgCtl, data, env);
    if (made) await removeClusterDirs(iso, [data, socketDir]);
    await rm(dir, { recursive: true, force: true });
    if (socketParent) await rm(socketParent, { recursive: true, force: true });
  };
  try {
    // Others may pass through (the cluster user must), not list; as the same user, 0700.
    await chmod(dir, private_ ? 0o700 : 0o711);
    if (`${socketDir}/.s.PGSQL.${SOCKET_PORT}`.length > MAX_SOCKET_PATH) {
      socketParent = await mkdtemp('/tmp/pgb-sock-');
      await chmod(socketParent, private_ ? 0o700 : 0o711);
      socketDir = path.join(socketParent, 's');
    }
    made = true;
    await makeClusterDirs(iso, [
      { path: data, mode: 0o700 },
      { path: socketDir, mode: 0o2710, group: iso.self.gid },
    ]);
    await runAsClusterUser(iso, initdb.path, ['-D', data, '-U', 'postgres', '--auth-local=trust', '--auth-host=reject', '-E', 'UTF8', '--locale=C', '--no-sync'], env, { cancelSignal: options.signal }).catch((err: unknown) => {
      options.signal?.throwIfAborted(); // a cancelled initdb is the cancellation, not a failure
      throw clusterFailure('initdb', err, parent);
    });
    options.signal?.throwIfAborted();
    const settings: Record<string, string> = {
      listen_addresses: '',
      port: String(SOCKET_PORT),
      unix_socket_directories: /[\s,"]/.test(socketDir) ? `"${socketDir.replace(/"/g, '""')}"` : socketDir,
      unix_socket_permissions: private_ ? '0700' : '0770',
      fsync: 'off',
      full_page_writes: 'off',
      synchronous_commit: 'off',
      max_wal_size: '1GB',
      ...(options.bulkRestore ? bulkRestoreSettings(options.bulkRestore) : {}),
    };
    options.logger?.info(`starting throwaway PostgreSQL ${initdb.version} (no TCP listener; Unix socket in ${socketDir}, only this process's user can connect); ${iso.description}`);
    started = true;
    // pg_ctl start is not cancelled half-way (a postmaster it already forked would escape the
    // stop below); it is bounded by -t, and the signal is honoured right after it.
    const opts = Object.entries(settings).map(serverOptionArg).join(' ');
    await runAsClusterUser(iso, pgCtl, ['start', '-D', data, '-l', log, '-w', '-t', '60', '-o', opts], env).catch(async (err: unknown) => {
      throw clusterFailure('the PostgreSQL server', err, parent, (await readAsClusterUser(iso, log)) ?? '');
    });
    options.signal?.throwIfAborted();
    const connection = parseDatabaseUrl(`postgresql:///postgres?host=${encodeURIComponent(socketDir)}&port=${SOCKET_PORT}&user=postgres`);
    return { connection, port: SOCKET_PORT, dir, socketDir, major: initdb.major, version: initdb.version, isolation: iso, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Stops a throwaway cluster's server the way `pg_ctl stop -m immediate` does, without pg_ctl's
 * 100 ms polling: SIGQUIT to the postmaster named in `postmaster.pid` (only when that process
 * belongs to the cluster's OS user and its command line names `dataDir`), then a wait in 10 ms
 * steps, at most 30 s, for it to exit, which it does once every backend has exited (PostgreSQL
 * docs 19.5, "Shutting Down the Server": SIGQUIT is the immediate mode). Measured: 0.11–0.12 s
 * with pg_ctl (mostly its first 100 ms wait), 0.01–0.05 s so. Falls back to {@link stopServer}
 * when the pid file or the process cannot be read (no /proc), the process is not that
 * postmaster, or it has not stopped in time. Never throws.
 */
async function stopThrowawayServer(iso: ClusterIsolation, pgCtl: string, dataDir: string, env: Record<string, string>): Promise<void> {
  try {
    const pid = Number((await readAsClusterUser(iso, path.join(dataDir, 'postmaster.pid')))?.split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 1) throw new Error('no postmaster pid');
    // The pid file is the cluster user's: restored code may have rewritten it. Signal only that user's postmaster of this directory.
    if ((await processOwner(pid)) !== iso.user.uid) throw new Error("not the cluster user's process");
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    if (!cmdline.includes(dataDir)) throw new Error("not this cluster's postmaster");
    await signalAsClusterUser(iso, pid, 'SIGQUIT');
    for (const end = Date.now() + 30_000; Date.now() < end; ) {
      if (!(await processAlive(pid))) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } catch {
    /* pg_ctl below */
  }
  await stopServer(iso, pgCtl, dataDir, env);
}

/**
 * Stops the server of data directory `dataDir` at once (`pg_ctl stop -m immediate`, at most
 * 30 s) as the cluster's OS user with environment `env`; never throws (a server that is not
 * running is fine). For throwaway clusters only: immediate mode skips the shutdown checkpoint.
 */
export async function stopServer(iso: ClusterIsolation, pgCtl: string, dataDir: string, env: Record<string, string> = scrubbedEnv()): Promise<void> {
  await runAsClusterUser(iso, pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30'], env, { reject: false }).catch(() => undefined);
}
