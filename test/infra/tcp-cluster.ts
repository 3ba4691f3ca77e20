// A PostgreSQL 15 cluster of a test's own, listening on 127.0.0.1 on a free port with password
// (SCRAM) authentication over TCP and trust over its Unix socket: for tests that need fixed,
// cluster-wide role names (roles with passwords that must log in after a restore), which the
// shared server cannot give. It runs as the OS user `postgres` (the tests run as root) and is
// stopped and removed by `stop()`.
import { chmod, chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import pg from 'pg';
import { freePort } from '../../src/postgres/cluster.ts';

const BIN = '/usr/lib/postgresql/15/bin';

/** A running test cluster. */
export interface TcpCluster {
  port: number;
  /** Its directory (data and socket). */
  dir: string;
  /** Superuser `postgres` over the Unix socket, database `postgres` (trust). */
  adminUrl: string;
  /** The Unix socket URL of another database. */
  urlOf(database: string): string;
  /** `postgresql://user:password@127.0.0.1:port/database` (SCRAM over TCP). */
  tcpUrl(user: string, password: string, database: string): string;
  stop(): Promise<void>;
}

/** Starts a {@link TcpCluster}. */
export async function startTcpCluster(): Promise<TcpCluster> {
  const uid = Number((await execa('id', ['-u', 'postgres'])).stdout);
  const gid = Number((await execa('id', ['-g', 'postgres'])).stdout);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-tcp-'));
  await chmod(dir, 0o755);
  const data = path.join(dir, 'data');
  const socket = path.join(dir, 's');
  for (const d of [data, socket]) {
    await mkdir(d, { mode: 0o700 });
    await chown(d, uid, gid);
  }
  await chmod(socket, 0o777);
  const port = await freePort();
  const asPg = { uid, gid, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C.UTF-8' }, extendEnv: false, cwd: '/' } as const;
  let started = false;
  const stop = async () => {
    if (started) await execa(`${BIN}/pg_ctl`, ['stop', '-D', data, '-m', 'immediate', '-w'], { ...asPg, reject: false });
    started = false;
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await execa(`${BIN}/initdb`, ['-D', data, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync'], asPg);
    started = true;
    const opts = `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${socket} -c fsync=off -c full_page_writes=off`;
    await execa(`${BIN}/pg_ctl`, ['start', '-D', data, '-l', path.join(data, 'server.log'), '-w', '-t', '60', '-o', opts], asPg);
  } catch (err) {
    await stop();
    throw err;
  }
  const urlOf = (database: string) => `postgresql:///${encodeURIComponent(database)}?host=${encodeURIComponent(socket)}&port=${port}&user=postgres`;
  return {
    port,
    dir,
    adminUrl: urlOf('postgres'),
    urlOf,
    tcpUrl: (user, password, database) => `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    stop,
  };
}

/**
 * Runs `text` on `url` one statement at a time (statements end with `;` at a line's end: CREATE
 * DATABASE and CREATE TABLESPACE cannot run inside a multi-statement query's transaction) and
 * returns the rows of the last one.
 */
export async function queryEach<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    let rows: T[] = [];
    for (const statement of text.split(/;\s*\n/).map((t) => t.trim()).filter(Boolean)) rows = (await c.query<T>(statement)).rows;
    return rows;
  } finally {
    await c.end();
  }
}
