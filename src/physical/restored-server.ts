import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import pg from 'pg';
import { CheckFailedError, UsageError } from '../errors.ts';
import { findAll } from '../postgres/binaries.ts';
import { freePort, stopServer } from '../postgres/cluster.ts';

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
  /** The restored data directory; its parent is the drill's private directory. */
  dataDir: string;
  /** The backup's PostgreSQL major: a physical restore runs on exactly that major. */
  major: number;
  /** OS user of the server (when running as root). */
  user?: { uid: number; gid: number };
  /** Extra environment of the server (its restore_command's tool reads it). */
  env?: Record<string, string>;
  /** Called once the server process runs (before recovery ends). */
  onStarted?: (port: number) => void;
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
export function throwawaySettings(dir: string, dataDir: string, port: number): [name: string, value: string][] {
  return [
    ['data_directory', dataDir],
    ['hba_file', path.join(dir, 'pg_hba.conf')],
    ['ident_file', path.join(dir, 'pg_ident.conf')],
    ['external_pid_file', ''],
    ['port', String(port)],
    ['listen_addresses', ''],
    ['unix_socket_directories', path.join(dir, 'socket')],
    ['unix_socket_permissions', '0700'],
    ['archive_mode', 'off'],
    ['primary_conninfo', ''],
    ['primary_slot_name', ''],
    ['recovery_end_command', ''],
    ['archive_cleanup_command', ''],
    ['logging_collector', 'off'],
    ['log_destination', 'stderr'],
    ['ssl', 'off'],
    ['hot_standby', 'off'],
    ['cluster_name', 'pg-backup-drill'],
  ];
}

/** One `-c name=value` for pg_ctl's `-o`, which a shell splits: single-quoted. */
function optionArg([name, value]: [string, string]): string {
  return `-c '${name}=${value.replace(/'/g, "'\\''")}'`;
}

/**
 * Starts PostgreSQL on a restored data directory and waits until recovery has ended and the
 * server was promoted (accepts connections, `pg_is_in_recovery()` false). The server's log
 * (with the restore_command's output) is `<dir>/server.log`. Missing `postgresql.conf`,
 * `pg_hba.conf` and `pg_ident.conf` (Debian keeps them in /etc, outside the backup) are written
 * empty into the data directory.
 * @throws UsageError without the server binaries of the backup's major.
 * @throws CheckFailedError when the server stops during recovery (PostgreSQL's FATAL line) or
 * recovery does not end within `timeoutMs`.
 */
export async function startRestoredServer(options: RestoredServerOptions): Promise<RestoredServer> {
  const pgCtl = await pgCtlOf(options.major);
  const dir = path.dirname(options.dataDir);
  const socketDir = path.join(dir, 'socket');
  const logFile = path.join(dir, 'server.log');
  await mkdir(socketDir, { mode: 0o700 });
  await writeFile(path.join(dir, 'pg_hba.conf'), '# pg-backup drill: local connections through the private socket only\nlocal all all trust\n');
  await writeFile(path.join(dir, 'pg_ident.conf'), '');
  await writeFile(logFile, '');
  for (const name of ['postgresql.conf']) {
    const file = path.join(options.dataDir, name);
    if (!(await stat(file).catch(() => undefined))) await writeFile(file, '# written by pg-backup drill: the backup had no postgresql.conf\n');
  }
  if (options.user) for (const f of [socketDir, path.join(dir, 'pg_hba.conf'), path.join(dir, 'pg_ident.conf'), logFile, path.join(options.dataDir, 'postgresql.conf')]) await chown(f, options.user.uid, options.user.gid);
  await chmod(socketDir, 0o700);
  const port = await freePort();
  const run = { ...(options.user ?? {}), cwd: dir, env: { ...options.env, PGTZ: 'UTC' } };
  let started = false;
  let stopped = false;
  const readLog = () => readFile(logFile, 'utf8').catch(() => '');
  const users = [...new Set(['postgres', process.env.PG_BACKUP_CLUSTER_USER, os.userInfo().username].filter((u): u is string => Boolean(u)))];
  const server: RestoredServer = {
    socketDir,
    port,
    logFile,
    user: users[0]!,
    async connect(database = 'postgres') {
      const client = new pg.Client({ host: socketDir, port, user: server.user, database, ssl: false, application_name: 'pg-backup drill', connectionTimeoutMillis: 15_000 });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    },
    log: readLog,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (started) await stopServer(pgCtl, options.dataDir, run);
    },
  };
  try {
    started = true;
    const settings = throwawaySettings(dir, options.dataDir, port).map(optionArg).join(' ');
    // -W: pg_ctl returns at once; the wait below knows recovery from failure and honours the signal.
    await execa(pgCtl, ['start', '-W', '-D', options.dataDir, '-l', logFile, '-o', settings], { ...run, cancelSignal: options.signal });
    options.onStarted?.(port);
    await waitForPromotion(server, users, options, readLog);
    return server;
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** The first FATAL or PANIC line of a server log, without its prefix. */
export function fatalLine(log: string): string | undefined {
  const line = log.split('\n').find((l) => /\b(FATAL|PANIC): /.test(l) && !/the database system is (starting up|not accepting connections|not yet accepting connections)/.test(l));
  return line?.replace(/^.*?\b(FATAL|PANIC): +/, '').trim();
}

/**
 * Polls (every 200 ms) until the server accepts a connection and is out of recovery. Fails on
 * the first FATAL/PANIC line in the log with the postmaster gone, or at the time limit.
 */
async function waitForPromotion(server: RestoredServer, users: string[], options: RestoredServerOptions, readLog: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  const pidFile = path.join(options.dataDir, 'postmaster.pid');
  let userIndex = 0;
  let seen = false; // pg_ctl -W returns before the postmaster writes its pid file
  const startedAt = Date.now();
  for (;;) {
    options.signal?.throwIfAborted();
    // postmaster.pid's 8th line is the postmaster's status: "ready" once recovery ended and it
    // accepts connections (PostgreSQL's pidfile.h). Connecting earlier only fills the log.
    const pidText = await readFile(pidFile, 'utf8').catch(() => undefined);
    const present = pidText !== undefined;
    seen ||= present;
    if (pidText?.split('\n')[7]?.trim() === 'ready') try {
      const client = await server.connect();
      try {
        const { rows } = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
        if (!rows[0]!.r) return;
      } finally {
        await client.end().catch(() => undefined);
      }
    } catch (err) {
      const e = err as { code?: string; message?: string };
      // 28000: the role does not exist; the bootstrap superuser of the source may have another name.
      if (e.code === '28000' && /role .* does not exist/.test(e.message ?? '') && userIndex + 1 < users.length) {
        server.user = users[++userIndex]!;
        continue;
      }
      if (e.code === '28000') throw new CheckFailedError(`cannot connect to the restored server as ${users.join(' or ')}: ${e.message}; set PG_BACKUP_CLUSTER_USER to a superuser of the source cluster`);
    }
    if ((seen && !present) || (!seen && Date.now() - startedAt > 30_000)) {
      const log = await readLog();
      throw new CheckFailedError(`the restored server stopped during recovery: ${fatalLine(log) ?? 'see its log'}`);
    }
    if (Date.now() > deadline) throw new CheckFailedError(`recovery did not end within ${Math.round(options.timeoutMs / 1000)} s (the restored server is still replaying WAL or waiting for a segment)`);
    await sleep(200, undefined, { signal: options.signal }).catch(() => undefined);
  }
}
