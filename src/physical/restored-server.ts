import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import pg from 'pg';
import { CheckFailedError, UsageError } from '../errors.ts';
import { findAll } from '../postgres/binaries.ts';
import { freePort, serverOptionArg, stopServer } from '../postgres/cluster.ts';
import { makeClusterDirs, readAsClusterUser, runAsClusterUser, scrubbedEnv, type ClusterIsolation } from '../postgres/cluster-user.ts';

/**
 * A PostgreSQL server started on a physically restored data directory, private to the drill:
 * no TCP listener (`listen_addresses=''`), its Unix socket in a directory only its owner can
 * enter (0700), `trust` for local connections only through that socket — the same policy as the
 * throwaway clusters of src/postgres/cluster.ts.
 */
export interface RestoredServer {
  /** The socket directory (0700) and port (the socket file's name: `.s.PGSQL.<port>`). */
  socketDir: string;
  port: number;
  /** The server log (stderr of the server and of its restore_command). */
  logFile: string;
  /** A superuser of the restored cluster, found on connecting. */
  user: string;
  /** Connects to `database` through the socket. */
  connect(database?: string): Promise<pg.Client>;
  /** Reads the server log (empty when it cannot be read). */
  log(): Promise<string>;
  /** Stops the server (immediate). Safe to call twice; never throws. */
  stop(): Promise<void>;
}

/** Options of {@link startRestoredServer}. */
export interface RestoredServerOptions {
  /** The restored data directory; its parent is the drill's private directory (this process's). */
  dataDir: string;
  /** The backup's PostgreSQL major: a physical restore runs on exactly that major. */
  major: number;
  /**
   * Who runs the server during recovery: the OS user that may read the repository (its
   * restore_command, `pgbackrest archive-get`, runs as that user). Root: the `postgres` user
   * (`PG_BACKUP_PGBACKREST_USER`), else this process's own user. No restored SQL runs then.
   */
  recovery: ClusterIsolation;
  /** Who runs the server once promoted, for the checks and the smoke SQL: the cluster user (see src/postgres/cluster-user.ts). */
  checks: ClusterIsolation;
  /** The restore_command's own settings (e.g. `PGBACKREST_ARCHIVE_ASYNC=n`): the recovery phase's environment, with `PGBACKREST_*` of this process. */
  env?: Record<string, string>;
  /** Called once the server process runs (before recovery ends). */
  onStarted?: (port: number) => void;
  /** Called once recovery ended and the server was promoted (before the restart for the checks). */
  onPromoted?: () => void;
  /** Called once the promoted server was restarted as the checks' user. */
  onHandedOver?: (description: string) => void;
  signal?: AbortSignal;
  /** Give up waiting for the end of recovery after this many ms. */
  timeoutMs: number;
}

/** The PostgreSQL `pg_ctl` of exactly `major` (physical files are only readable by their own major). */
async function pgCtlOf(major: number): Promise<string> {
  const all = await findAll('pg_ctl');
  const exact = all.find((b) => b.major === major);
  if (!exact) {
    const have = all.length ? `found ${all.map((b) => `pg_ctl ${b.version}`).join(', ')}` : 'no pg_ctl found';
    throw new UsageError(`a physical restore of PostgreSQL ${major} needs its server binaries (pg_ctl, postgres ${major}) but ${have}: install postgresql-${major} (PostgreSQL apt repository) or set PG_BIN_DIR`);
  }
  return exact.path;
}

/**
 * The command-line settings that make a restored cluster throwaway and private, whatever its
 * own postgresql.conf says (command-line settings override the configuration files; PostgreSQL
 * docs, "Setting Parameters"): its own data directory, no TCP, a private socket, its own
 * pg_hba.conf / pg_ident.conf, no WAL archiving (nothing reaches the source's repository), no
 * streaming from the source's primary, no recovery_end_command or archive_cleanup_command of the
 * source, logs to stderr (not into the source's log directory), no SSL files, and no hot standby
 * (connections wait for the promotion). Recovery settings written by the backup tool stay.
 */
export function throwawaySettings(dir: string, dataDir: string, port: number, socketDir = path.join(dir, 'socket')): [name: string, value: string][] {
  return [
    ['data_directory', dataDir],
    ['hba_file', path.join(dir, 'pg_hba.conf')],
    ['ident_file', path.join(dir, 'pg_ident.conf')],
    ['external_pid_file', ''],
    ['port', String(port)],
    ['listen_addresses', ''],
    ['unix_socket_directories', socketDir],
    ['unix_socket_permissions', '0700'],
    ['archive_mode', 'off'],
    ['primary_conninfo', ''],
    ['primary_slot_name', ''],
    ['recovery_end_command', ''],
    ['archive_cleanup_command', ''],
    ['logging_collector', 'off'],
    ['log_destination', 'stderr'],
    ['log_timezone', 'UTC'],
    ['ssl', 'off'],
    ['hot_standby', 'off'],
    ['cluster_name', 'pg-backup-drill'],
  ];
}

const optionArg = serverOptionArg;

/**
 * The recovery phase's environment: the scrubbed one ({@link scrubbedEnv}) plus the
 * restore_command's settings and every `PGBACKREST_*` variable of this process (pgBackRest reads
 * its repository options, credentials included, from them), nothing else.
 */
export function recoveryEnv(extra: Record<string, string> = {}): Record<string, string> {
  const pgbackrest = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('PGBACKREST_') && typeof e[1] === 'string'));
  return scrubbedEnv({ ...pgbackrest, ...extra });
}

/**
 * Starts PostgreSQL on a restored data directory, waits until recovery has ended and the server
 * was promoted, then hands it over: in two phases, so that restored code never runs where the
 * repository's credentials are.
 * 1. Recovery, as `options.recovery`'s user with {@link recoveryEnv} (the restore_command needs
 *    the repository). No client connects (`hot_standby = off`; the end of recovery is read from
 *    `postmaster.pid`'s status line, "ready" only once promoted), and WAL replay runs no SQL, so
 *    no function, trigger or event trigger of the backup runs in this phase.
 * 2. The promoted server is stopped (fast: a shutdown checkpoint, so the restart replays
 *    nothing), its files are given to `options.checks`' user (`chown -R`, through sudo when
 *    not root), and it starts again as that user with the scrubbed environment (PATH, locale,
 *    TZ) and its socket in a directory only this process's user can enter (as in
 *    src/postgres/cluster.ts). The checks and the user's smoke SQL run against that server.
 * The recovery log (with the restore_command's output) is `<dir>/server.log`. Missing
 * `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf` (Debian keeps them in /etc, outside the
 * backup) are written into the drill's directory.
 * @throws UsageError without the server binaries of the backup's major.
 * @throws CheckFailedError when the server stops during recovery (PostgreSQL's FATAL line),
 * recovery does not end within `timeoutMs`, or the promoted server does not restart.
 */
export async function startRestoredServer(options: RestoredServerOptions): Promise<RestoredServer> {
  const pgCtl = await pgCtlOf(options.major);
  const dir = path.dirname(options.dataDir);
  const recoverySocket = path.join(dir, 'socket');
  const checksSocket = path.join(dir, 'socket-checks');
  const logFile = path.join(dir, 'server.log');
  const checksLog = path.join(options.dataDir, 'pg-backup-checks.log');
  const { recovery, checks } = options;
  await mkdir(recoverySocket, { mode: 0o700 });
  await writeFile(path.join(dir, 'pg_hba.conf'), '# pg-backup drill: local connections through the private socket only\nlocal all all trust\n');
  await writeFile(path.join(dir, 'pg_ident.conf'), '');
  await writeFile(logFile, '');
  for (const name of ['postgresql.conf']) {
    const file = path.join(options.dataDir, name);
    if (!(await stat(file).catch(() => undefined))) await writeFile(file, '# written by pg-backup drill: the backup had no postgresql.conf\n');
  }
  if (recovery.mode === 'root') for (const f of [recoverySocket, path.join(dir, 'pg_hba.conf'), path.join(dir, 'pg_ident.conf'), logFile, path.join(options.dataDir, 'postgresql.conf')]) await chown(f, recovery.user.uid, recovery.user.gid);
  await chmod(recoverySocket, 0o700);
  const port = await freePort();
  const envOfRecovery = recoveryEnv(options.env);
  const envOfChecks = scrubbedEnv();
  let running: { iso: ClusterIsolation; env: Record<string, string> } | undefined;
  let stopped = false;
  let pidSeen = false;
  let startedAt = Date.now();
  const readLog = () => readFile(logFile, 'utf8').catch(() => '');
  const users = [...new Set(['postgres', process.env.PG_BACKUP_CLUSTER_USER, os.userInfo().username].filter((u): u is string => Boolean(u)))];
  const server: RestoredServer = {
    socketDir: checksSocket,
    port,
    logFile,
    user: users[0]!,
    async connect(database = 'postgres') {
      const client = new pg.Client({ host: server.socketDir, port, user: server.user, database, ssl: false, application_name: 'pg-backup drill', connectionTimeoutMillis: 15_000 });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    },
    log: readLog,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!running) return;
      // pg_ctl start -W returns before the postmaster writes its pid file; pg_ctl stop without
      // one stops nothing (a drill cancelled at once left a recovering server behind). Wait for
      // the file first, at most 5 s after the start.
      const pidFile = path.join(options.dataDir, 'postmaster.pid');
      while (!pidSeen && Date.now() - startedAt < 5_000 && (await readAsClusterUser(running.iso, pidFile)) === undefined) await sleep(20);
      await stopServer(running.iso, pgCtl, options.dataDir, running.env);
    },
  };
  try {
    running = { iso: recovery, env: envOfRecovery };
    startedAt = Date.now();
    const settings = throwawaySettings(dir, options.dataDir, port, recoverySocket).map(optionArg).join(' ');
    // -W: pg_ctl returns at once; the wait below knows recovery from failure and honours the signal.
    await runAsClusterUser(recovery, pgCtl, ['start', '-W', '-D', options.dataDir, '-l', logFile, '-o', settings], envOfRecovery, { cancelSignal: options.signal });
    options.onStarted?.(port);
    await waitForPromotion(options, readLog);
    pidSeen = true;
    options.onPromoted?.();

    // Phase 2: the promoted server, restarted as the checks' user without the repository's credentials.
    await runAsClusterUser(recovery, pgCtl, ['stop', '-D', options.dataDir, '-m', 'fast', '-w', '-t', '300'], envOfRecovery, { reject: false });
    running = undefined;
    if (checks.mode !== 'same-user' || recovery.user.uid !== checks.user.uid) {
      await handOver(checks, dir, [options.dataDir, path.join(dir, 'pg_hba.conf'), path.join(dir, 'pg_ident.conf'), path.join(dir, 'tablespaces')]);
    }
    await makeClusterDirs(checks, [{ path: checksSocket, mode: 0o2710, group: checks.self.gid }]);
    running = { iso: checks, env: envOfChecks };
    const checkSettings = [...throwawaySettings(dir, options.dataDir, port, checksSocket).filter(([n]) => n !== 'unix_socket_permissions'), ['unix_socket_permissions', checks.mode === 'same-user' ? '0700' : '0770'] as [string, string]];
    const restarted = await runAsClusterUser(checks, pgCtl, ['start', '-w', '-t', '120', '-D', options.dataDir, '-l', checksLog, '-o', checkSettings.map(optionArg).join(' ')], envOfChecks, { reject: false });
    if (restarted.exitCode !== 0) {
      const why = fatalLine((await readAsClusterUser(checks, checksLog)) ?? '') ?? String(restarted.stderr).trim().split('\n').at(-1);
      throw new CheckFailedError(`the promoted server did not restart as OS user ${checks.user.name}: ${why}`);
    }
    options.onHandedOver?.(checks.description);
    await findSuperuser(server, users);
    return server;
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/**
 * Gives the drill's restored files to the checks' user: `chown -R` (as root, or through `sudo
 * -n`), and lets it pass through the drill's directory (0711).
 */
async function handOver(checks: ClusterIsolation, dir: string, paths: string[]): Promise<void> {
  const present: string[] = [];
  for (const p of paths) if (await stat(p).catch(() => undefined)) present.push(p);
  const owner = `${checks.user.uid}:${checks.user.gid}`;
  const r = checks.mode === 'sudo'
    ? await execa('sudo', ['-n', '--', 'chown', '-R', '--', owner, ...present], { reject: false, stdin: 'ignore' })
    : await execa('chown', ['-R', '--', owner, ...present], { reject: false });
  if (r.exitCode !== 0) throw new CheckFailedError(`cannot give the restored data directory to OS user ${checks.user.name}: ${String(r.stderr).trim().split('\n')[0]}`);
  await chmod(dir, 0o711);
}

/** Finds the restored cluster's superuser among `users` (the source's bootstrap superuser may have another name). */
async function findSuperuser(server: RestoredServer, users: string[]): Promise<void> {
  for (const user of users) {
    server.user = user;
    try {
      const client = await server.connect();
      await client.end().catch(() => undefined);
      return;
    } catch (err) {
      const e = err as { code?: string; message?: string };
      if (e.code === '28000' && /role .* does not exist/.test(e.message ?? '')) continue;
      throw new CheckFailedError(`cannot connect to the restored server: ${e.message}`);
    }
  }
  throw new CheckFailedError(`cannot connect to the restored server as ${users.join(' or ')}: no such role; set PG_BACKUP_CLUSTER_USER to a superuser of the source cluster`);
}

/** The first FATAL or PANIC line of a server log, without its prefix. */
export function fatalLine(log: string): string | undefined {
  const line = log.split('\n').find((l) => /\b(FATAL|PANIC): /.test(l) && !/the database system is (starting up|not accepting connections|not yet accepting connections)/.test(l));
  return line?.replace(/^.*?\b(FATAL|PANIC): +/, '').trim();
}

/**
 * Polls (every 200 ms) until the server is out of recovery: `postmaster.pid`'s status line
 * says "ready", which with `hot_standby = off` it says only once recovery ended and the server
 * was promoted (PostgreSQL's pidfile.h; postmaster.c: PM_RUN). No connection is made: restored
 * code (a login event trigger) must not run while the server holds the repository's credentials.
 * Fails once the postmaster is gone (its first FATAL/PANIC line), or at the time limit.
 */
async function waitForPromotion(options: RestoredServerOptions, readLog: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  const pidFile = path.join(options.dataDir, 'postmaster.pid');
  let seen = false; // pg_ctl -W returns before the postmaster writes its pid file
  const startedAt = Date.now();
  for (;;) {
    options.signal?.throwIfAborted();
    const pidText = await readAsClusterUser(options.recovery, pidFile);
    const present = pidText !== undefined;
    seen ||= present;
    if (pidText?.split('\n')[7]?.trim() === 'ready') return;
    if ((seen && !present) || (!seen && Date.now() - startedAt > 30_000)) {
      const log = await readLog();
      throw new CheckFailedError(`the restored server stopped during recovery: ${fatalLine(log) ?? 'see its log'}`);
    }
    if (Date.now() > deadline) throw new CheckFailedError(`recovery did not end within ${Math.round(options.timeoutMs / 1000)} s (the restored server is still replaying WAL or waiting for a segment)`);
    await sleep(200, undefined, { signal: options.signal }).catch(() => undefined);
  }
}
