// A PgBouncer (Debian's `pgbouncer` package) in front of the shared test PostgreSQL, on
// 127.0.0.1 on a free port, for the connection diagnosis tests. It authenticates clients with the
// password of PGB_TEST_PG_URL (written to its auth_file) and uses the same to reach the server.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/postgres/cluster.ts';

/** A running PgBouncer. */
export interface PgBouncer {
  port: number;
  pid: number;
  /** `postgresql://USER:PASSWORD@127.0.0.1:<port>/<database>` through the pooler. */
  url(database: string): string;
  /** Stops it (SIGTERM, then waits for its exit) and removes its directory. */
  stop(): Promise<void>;
}

/** libpq-style quoting for pgbouncer's auth_file: `"user" "password"`, a `"` doubled. */
const quoted = (s: string) => `"${s.replace(/"/g, '""')}"`;

/**
 * Starts PgBouncer in `poolMode` in front of the server of `serverUrl` (every database, same
 * user and password). As root it runs as the `postgres` OS user (pgbouncer refuses root).
 * Resolves once it logged that it listens.
 */
export async function startPgBouncer(serverUrl: string, poolMode: 'session' | 'transaction'): Promise<PgBouncer> {
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username);
  const password = decodeURIComponent(server.password);
  const port = await freePort();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgb-pgbouncer-'));
  const asRoot = process.getuid?.() === 0;
  await fs.writeFile(path.join(dir, 'userlist.txt'), `${quoted(user)} ${quoted(password)}\n`, { mode: 0o600 });
  await fs.writeFile(path.join(dir, 'pgbouncer.ini'), [
    '[databases]',
    `* = host=${server.hostname} port=${server.port || 5432}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = scram-sha-256',
    `auth_file = ${path.join(dir, 'userlist.txt')}`,
    `pool_mode = ${poolMode}`,
    'default_pool_size = 4',
    'ignore_startup_parameters = extra_float_digits',
    `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
    '',
  ].join('\n'));
  if (asRoot) {
    const { uid, gid } = await fs.stat('/var/lib/postgresql');
    await fs.chmod(dir, 0o700);
    for (const f of ['', 'userlist.txt', 'pgbouncer.ini']) await fs.chown(path.join(dir, f), uid, gid);
  }
  const child: ChildProcess = spawn('pgbouncer', [...(asRoot ? ['-u', 'postgres'] : []), path.join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      if (/process up|listening on 127\.0\.0\.1/.test(log)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`pgbouncer exited (${code}) before listening: ${log.slice(-500)}`)));
    child.once('error', reject);
  });
  return {
    port,
    pid: child.pid!,
    url: (database) => `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
