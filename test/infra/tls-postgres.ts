// A PostgreSQL of a test's own that accepts TLS connections only (`hostssl`, and `hostnossl …
// reject`), with a self-signed certificate for a given host name: Debian's server through
// test/infra/pg-up.sh, on 127.0.0.1 on a free port, superuser postgres / pgtestpw.
import { execFile } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from '../../src/postgres/cluster.ts';
import { root } from '../helpers.ts';

const exec = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';

/** A running TLS-only server. */
export interface TlsPostgres {
  port: number;
  /** The server's certificate (its own CA: self-signed), for sslrootcert. */
  certFile: string;
  /** Stops the server (immediate) and removes its directory. */
  stop(): Promise<void>;
}

/** Starts it, with a certificate for `hostName` (CN and subjectAltName), and a table `t` of 10 rows in `postgres`. */
export async function startTlsPostgres(hostName: string): Promise<TlsPostgres> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-tls-pg-'));
  const port = await freePort();
  const asPostgres = (cmd: string, args: string[]) => (process.getuid?.() === 0 ? exec('runuser', ['-u', 'postgres', '--', cmd, ...args]) : exec(cmd, args));
  const stop = async () => {
    await asPostgres(`${BIN}/pg_ctl`, ['-D', path.join(dir, 'data'), 'stop', '-m', 'immediate']).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await exec('bash', [path.join(root, 'test/infra/pg-up.sh')], { env: { ...process.env, D: dir, PG_PORT: String(port), PG_BIN_DIR: BIN } });
    const data = path.join(dir, 'data');
    await exec('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${hostName}`, '-addext', `subjectAltName=DNS:${hostName}`, '-keyout', path.join(data, 'server.key'), '-out', path.join(data, 'server.crt')]);
    await writeFile(path.join(data, 'pg_hba.conf'), 'local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n');
    const owner = await stat(data);
    for (const f of ['server.key', 'server.crt', 'pg_hba.conf']) await chown(path.join(data, f), owner.uid, owner.gid);
    await chmod(path.join(data, 'server.key'), 0o600);
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: 'pgtestpw', database: 'postgres', ssl: false });
    await client.connect();
    await client.query('ALTER SYSTEM SET ssl = on');
    await client.query('SELECT pg_reload_conf()');
    await client.query('CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)');
    await client.end();
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, certFile: path.join(dir, 'data', 'server.crt'), stop };
}
