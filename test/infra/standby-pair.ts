// A PostgreSQL primary and its streaming hot standby, for the tests of dumping from a read
// replica: the primary is initdb'ed here (as the postgres OS user when this process is root, as
// initdb refuses root), the standby is `pg_basebackup -R -c fast` of it; both listen on 127.0.0.1
// on free ports (scram, password `pgtestpw` for the superuser postgres) and on a Unix socket in
// their directory (trust, the replication connection). Stopped and removed by stop().
import { appendFile, chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../../src/postgres/cluster.ts';
import { realPgBin, run } from '../helpers.ts';

export const PAIR_PASSWORD = 'pgtestpw';

export interface StandbyPair {
  /** The pair's directory (data directories, sockets, logs). */
  dir: string;
  primaryPort: number;
  standbyPort: number;
  /** A TCP URL of the primary for `user` (default postgres) and `database`. */
  primaryUrl(database: string, user?: string, password?: string): string;
  /** A TCP URL of the standby. */
  standbyUrl(database: string, user?: string, password?: string): string;
  /** Runs SQL as postgres on the primary and returns the rows of the last statement. */
  primary<T extends pg.QueryResultRow = pg.QueryResultRow>(database: string, text: string): Promise<T[]>;
  /** Runs SQL as postgres on the standby. */
  standby<T extends pg.QueryResultRow = pg.QueryResultRow>(database: string, text: string): Promise<T[]>;
  /**
   * Waits until the standby has received (`'receive'`) or replayed (`'replay'`) the primary's
   * current WAL position (the LSN of the last commit: synchronous_commit is on, so it is flushed and sent). Rejects after `ms`.
   */
  caughtUp(what: 'receive' | 'replay', ms?: number): Promise<string>;
  /** Stops both servers (immediate) and removes the directory. Safe to call twice. */
  stop(): Promise<void>;
}

const asRoot = process.getuid?.() === 0;

async function asPostgres(args: string[], cwd: string): Promise<void> {
  const r = asRoot ? await run('runuser', ['-u', 'postgres', '--', ...args], { cwd }) : await run(args[0]!, args.slice(1), { cwd });
  if (r.code !== 0) throw new Error(`${args.map((a) => path.basename(a)).slice(0, 2).join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
}

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query<T>(text);
    return (Array.isArray(result) ? result.at(-1)!.rows : result.rows) as T[];
  } finally {
    await client.end();
  }
}

/**
 * Starts the pair. `standbySettings` are appended to the standby's postgresql.conf (e.g.
 * `max_standby_streaming_delay=0`, `hot_standby_feedback=off`).
 */
export async function startStandbyPair(standbySettings: Record<string, string> = {}): Promise<StandbyPair> {
  const bin = await realPgBin();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-standby-'));
  await chmod(dir, 0o755);
  const [primaryPort, standbyPort] = [await freePort(), await freePort()];
  const primaryData = path.join(dir, 'primary');
  const standbyData = path.join(dir, 'standby');
  const started: string[] = [];
  const stop = async () => {
    for (const data of started.splice(0).reverse()) await asPostgres([path.join(bin, 'pg_ctl'), '-D', data, 'stop', '-m', 'immediate'], '/').catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await writeFile(path.join(dir, 'pw'), `${PAIR_PASSWORD}\n`);
    if (asRoot) {
      const { uid, gid } = await run('id', ['-u', 'postgres']).then(async (u) => ({ uid: Number(u.stdout), gid: Number((await run('id', ['-g', 'postgres'])).stdout) }));
      await chown(dir, uid, gid);
      await chown(path.join(dir, 'pw'), uid, gid);
    }
    await asPostgres([path.join(bin, 'initdb'), '-D', primaryData, '-U', 'postgres', `--pwfile=${path.join(dir, 'pw')}`, '--auth-host=scram-sha-256', '--auth-local=trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], dir);
    const common = ["listen_addresses='127.0.0.1'", `unix_socket_directories='${dir}'`, 'fsync=off', 'full_page_writes=on', 'autovacuum=off', 'shared_buffers=16MB', 'max_connections=30'];
    await appendFile(path.join(primaryData, 'postgresql.conf'), `${[`port=${primaryPort}`, ...common, 'wal_level=replica', 'max_wal_senders=4', 'wal_keep_size=64MB'].join('\n')}\n`);
    await asPostgres([path.join(bin, 'pg_ctl'), '-D', primaryData, '-l', path.join(dir, 'primary.log'), '-w', '-t', '60', 'start'], dir);
    started.push(primaryData);
    await asPostgres([path.join(bin, 'pg_basebackup'), '-h', dir, '-p', String(primaryPort), '-U', 'postgres', '-D', standbyData, '-R', '-c', 'fast', '-X', 'stream', '--no-sync'], dir);
    const extra = Object.entries(standbySettings).map(([k, v]) => `${k}='${v}'`);
    await appendFile(path.join(standbyData, 'postgresql.conf'), `${[`port=${standbyPort}`, 'hot_standby=on', ...extra].join('\n')}\n`);
    await asPostgres([path.join(bin, 'pg_ctl'), '-D', standbyData, '-l', path.join(dir, 'standby.log'), '-w', '-t', '60', 'start'], dir);
    started.push(standbyData);
  } catch (err) {
    await stop();
    throw err;
  }
  const url = (port: number) => (database: string, user = 'postgres', password = PAIR_PASSWORD) => `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  const primaryUrl = url(primaryPort);
  const standbyUrl = url(standbyPort);
  return {
    dir,
    primaryPort,
    standbyPort,
    primaryUrl,
    standbyUrl,
    primary: (database, text) => query(primaryUrl(database), text),
    standby: (database, text) => query(standbyUrl(database), text),
    async caughtUp(what, ms = 60_000) {
      const lsn = (await query<{ lsn: string }>(primaryUrl('postgres'), 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!.lsn;
      const fn = what === 'receive' ? 'pg_last_wal_receive_lsn()' : 'pg_last_wal_replay_lsn()';
      for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
        const rows = await query<{ ok: boolean }>(standbyUrl('postgres'), `SELECT ${fn} >= '${lsn}'::pg_lsn AS ok`);
        if (rows[0]!.ok) return lsn;
      }
      throw new Error(`the standby did not ${what} ${lsn} within ${ms} ms`);
    },
    stop,
  };
}
