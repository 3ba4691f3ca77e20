// Connection diagnosis against real components, with the network conditions simulated on this
// machine only: a PgBouncer (Debian's package) on loopback in transaction and in session mode in
// front of the shared PostgreSQL; an IPv6-only host name and an IPv4-only machine played by a
// network namespace of the test's own (no interface but loopback, a hosts file bound over
// /etc/hosts inside it), so no packet can leave; the real route check in such a namespace; and
// a PostgreSQL of the test's own that accepts TLS connections only.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { adminUrl, cli, createDatabase, root, run, s3Env, sql } from '../helpers.ts';
import { dumpMany } from '../../src/commands/dump-many.ts';
import { UsageError } from '../../src/errors.ts';
import { stderrLogger } from '../../src/log.ts';
import { startPgBouncer, type PgBouncer } from '../infra/pgbouncer.ts';
import { startTlsPostgres, type TlsPostgres } from '../infra/tls-postgres.ts';
import { tempLocation } from '../infra/temp.ts';

/** Every file under a file:// location (none after a refused dump). */
async function filesIn(location: string): Promise<string[]> {
  const dir = fileURLToPath(location);
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
}

describe('a transaction-mode pooler (PgBouncer pool_mode=transaction)', () => {
  let bouncer: PgBouncer;
  let database: string;
  before(async () => {
    database = await createDatabase('diag_txpool');
    bouncer = await startPgBouncer(adminUrl(), 'transaction');
  });
  after(async () => {
    await bouncer?.stop();
    if (database) await sql('postgres', `DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  });

  it('is refused before anything is written, in one line naming the session port / direct connection', async () => {
    const to = await tempLocation();
    const r = await cli(['dump', '--to', to], { DATABASE_URL: bouncer.url(database) });
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /transaction-mode connection pooler \(a second connection was given the first one's server session\)/);
    assert.match(lines[0]!, /connect to the server directly, or through the pooler's session mode \(PgBouncer pool_mode=session, Supabase port 5432/);
    assert.doesNotMatch(r.stderr, /pgtestpw/);
    assert.deepEqual(await filesIn(to), []);
  });
});

describe('a session-mode pooler (PgBouncer pool_mode=session)', () => {
  let bouncer: PgBouncer;
  let database: string;
  before(async () => {
    database = await createDatabase('diag_sesspool');
    bouncer = await startPgBouncer(adminUrl(), 'session');
  });
  after(async () => {
    await bouncer?.stop();
    if (database) await sql('postgres', `DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  });

  it('dumps end to end through it, and the backup restores', async () => {
    const to = await tempLocation();
    const r = await cli(['dump', '--to', to, '--json', '--verify', 'archive'], { DATABASE_URL: bouncer.url(database) });
    assert.equal(r.code, 0, r.stderr);
    const manifest = JSON.parse(r.stdout);
    assert.equal(manifest.database, database);
    assert.ok(manifest.tables.length > 0);
    for (const t of manifest.tables as { schema: string; table: string; rows: number }[]) {
      const direct = await sql<{ n: string }>(database, `SELECT count(*)::text AS n FROM "${t.schema}"."${t.table}"`);
      assert.equal(t.rows, Number(direct[0]!.n), `${t.schema}.${t.table}`);
    }
    assert.equal(manifest.verification.ok, true);
  });
});

/** Runs `args` in a new network and mount namespace with only loopback, `hosts` bound over /etc/hosts. */
async function inIsolatedNetwork(hosts: string, args: string[], env: Record<string, string | undefined> = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-netns-'));
  try {
    await writeFile(path.join(dir, 'hosts'), hosts);
    return await run('unshare', ['--net', '--mount', '--', 'sh', '-c', 'ip link set lo up && mount --bind "$0" /etc/hosts && exec "$@"', path.join(dir, 'hosts'), ...args], { env });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('an IPv6-only host from a machine without an IPv6 route', () => {
  it('the real CLI, in a namespace where the host resolves only to IPv6 and nothing routes: Supabase\'s IPv4 session pooler named, nothing written', async () => {
    const to = await tempLocation();
    const r = await inIsolatedNetwork('127.0.0.1 localhost\n::1 localhost\n2001:db8::10 db.abcdefghijklmnopqrst.supabase.co\n', [
      process.execPath, path.join(root, 'bin/pg-backup.js'), 'dump', '--to', to,
    ], { ...s3Env(), DATABASE_URL: 'postgresql://postgres:s3cretpass@db.abcdefghijklmnopqrst.supabase.co:5432/postgres' });
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /cannot reach db\.abcdefghijklmnopqrst\.supabase\.co: it has only IPv6 addresses \(2001:db8::10\) and this machine has no IPv6 route/);
    assert.match(lines[0]!, /host aws-0-<region>\.pooler\.supabase\.com, port 5432, user postgres\.abcdefghijklmnopqrst \(/);
    assert.doesNotMatch(r.stderr, /s3cretpass/);
    assert.deepEqual(await filesIn(to), []);
  });

  it('dumpMany asks the injected resolver and route check, and refuses before connecting or writing', async () => {
    const calls: string[] = [];
    const to = await tempLocation();
    // "localhost": were the check skipped, the dump would reach the shared server (and succeed) — never anything off this machine.
    const url = new URL(adminUrl());
    url.hostname = 'localhost';
    await assert.rejects(dumpMany({
      databaseUrls: [url.href],
      to,
      logger: stderrLogger(true),
      networkProbes: {
        lookup: async (host) => (calls.push(`lookup ${host}`), [{ address: '2001:db8::10', family: 6 }]),
        ipv6Route: async (address) => (calls.push(`route ${address}`), false),
      },
    }), (err: unknown) => err instanceof UsageError && /^cannot reach localhost: it has only IPv6 addresses \(2001:db8::10\) and this machine has no IPv6 route/.test(err.message));
    assert.deepEqual(calls, ['lookup localhost', 'route 2001:db8::10']);
    assert.deepEqual(await filesIn(to), []);
  });

  it('the route check asks the routing table and sends nothing: no route → false; a default route → true, no datagram counted', async () => {
    const script = `
      import fs from 'node:fs';
      import { hasRoute } from ${JSON.stringify(path.join(root, 'src/postgres/diagnose.ts'))};
      const sent = () => Number(/Udp6OutDatagrams\\s+(\\d+)/.exec(fs.readFileSync('/proc/net/snmp6', 'utf8'))[1]);
      // /proc/net/dev is the namespace's own (sysfs would show the machine's loopback): transmit packets is the 10th number.
      const lo = () => Number(/^\\s*lo:(.*)$/m.exec(fs.readFileSync('/proc/net/dev', 'utf8'))[1].trim().split(/\\s+/)[9]);
      const before = [sent(), lo()];
      const ok = await hasRoute('2001:db8::10');
      const result = { ok, datagrams: sent() - before[0], loPackets: lo() - before[1] };
      if (ok) {
        // The control: one datagram really sent (it stays in this namespace) moves both counters.
        const dgram = await import('node:dgram');
        const s = dgram.createSocket('udp6');
        await new Promise((resolve) => s.send('x', 9, '2001:db8::10', resolve));
        s.close();
        result.control = { datagrams: sent() - before[0], loPackets: lo() - before[1] };
      }
      console.log(JSON.stringify(result));
    `;
    const noRoute = await run('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, '--input-type=module', '-e', script]);
    assert.equal(noRoute.code, 0, noRoute.stderr);
    assert.deepEqual(JSON.parse(noRoute.stdout), { ok: false, datagrams: 0, loPackets: 0 });
    // A default IPv6 route over loopback, inside the namespace: a packet, if one were sent, would stay in it and be counted.
    const routed = await run('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && ip -6 route add default dev lo && exec "$@"', 'sh', process.execPath, '--input-type=module', '-e', script]);
    assert.equal(routed.code, 0, routed.stderr);
    const r = JSON.parse(routed.stdout);
    assert.deepEqual({ ok: r.ok, datagrams: r.datagrams, loPackets: r.loPackets }, { ok: true, datagrams: 0, loPackets: 0 });
    assert.ok(r.control.datagrams >= 1 && r.control.loPackets >= 1, `the counters see a datagram really sent: ${routed.stdout}`);
  });
});

describe('a server that accepts TLS connections only (hostssl, hostnossl … reject)', () => {
  let server: TlsPostgres;
  let port: number;
  before(async () => {
    server = await startTlsPostgres('localhost');
    port = server.port;
  });
  after(async () => {
    await server?.stop();
  });

  it('without sslmode: the server\'s refusal becomes one line naming sslmode=require, nothing written', async () => {
    const to = await tempLocation();
    const r = await cli(['dump', '--to', to], { DATABASE_URL: `postgresql://postgres:pgtestpw@127.0.0.1:${port}/postgres` });
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /the server refused a connection without TLS \(sslmode=none: pg_hba\.conf rejects connection for host "127\.0\.0\.1".*no encryption\); it accepts TLS only: add sslmode=require/);
    assert.deepEqual(await filesIn(to), []);
  });

  it('with sslmode=require: dumps', async () => {
    const to = await tempLocation();
    const r = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: `postgresql://postgres:pgtestpw@127.0.0.1:${port}/postgres?sslmode=require` });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).tables.map((t: { table: string; rows: number }) => [t.table, t.rows]), [['t', 10]]);
  });
});
