// A backup of the database named `postgres` or `template1` drills and schema-verifies like any
// other (issue 24, item 6): the throwaway cluster's own database of that name is replaced by an
// empty one from template0. The source is a cluster of its own (the shared test server's
// `postgres` is used by every concurrent test), made with the tool's throwaway cluster.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createThrowawayDatabase, startThrowawayCluster, type ThrowawayCluster } from '../../src/postgres/cluster.ts';
import { withDatabase } from '../../src/postgres/connection.ts';
import { connect } from '../../src/postgres/server.ts';
import { cli } from '../helpers.ts';

let source: ThrowawayCluster;
let work: string;

/** Runs SQL in database `name` of the source cluster. */
async function sourceSql(name: string, text: string): Promise<void> {
  const client = await connect(withDatabase(source.connection, name));
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pgb-sysdb-'));
  await chmod(work, 0o755);
  source = await startThrowawayCluster({ minMajor: 0, workDir: work, allowSameOsUser: true });
  // Rows in each, and in template1 a table every later CREATE DATABASE would copy.
  await sourceSql('postgres', `CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL); INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 1234) g;
    CREATE VIEW big_accounts AS SELECT * FROM accounts WHERE id > 1000;`);
  await sourceSql('template1', `CREATE TABLE settings (key text PRIMARY KEY, value text); INSERT INTO settings SELECT 'k' || g, 'v' || g FROM generate_series(1, 77) g;`);
}, { timeout: 120_000 });

after(async () => {
  await source?.stop();
  await rm(work, { recursive: true, force: true });
});

const sourceUrl = (db: string) => `postgresql:///${db}?host=${encodeURIComponent(source.socketDir)}&port=${source.port}&user=postgres`;

describe('backups of postgres and template1', () => {
  for (const [database, table, rows] of [['postgres', 'accounts', 1234], ['template1', 'settings', 77]] as const) {
    it(`a ${database} backup: drill (row counts) and verify --level schema pass`, { timeout: 180_000 }, async () => {
      const bucket = await mkdtemp(path.join(work, `bucket-${database}-`));
      const from = `file://${bucket}`;
      const dumped = await cli(['dump', '--to', from, '--json'], { DATABASE_URL: sourceUrl(database) });
      assert.equal(dumped.code, 0, dumped.stderr);
      assert.match(dumped.stdout, new RegExp(`"database": ?"${database}"`));

      const drilled = await cli(['drill', '--from', from, '--work-dir', work, '--json']);
      assert.equal(drilled.code, 0, drilled.stderr);
      const report = JSON.parse(drilled.stdout);
      assert.equal(report.ok, true, drilled.stderr);
      const counted = report.tables.find((t: { table: string }) => t.table === table);
      assert.deepEqual({ expected: counted?.expected, actual: counted?.actual, ok: counted?.ok }, { expected: rows, actual: rows, ok: true }, JSON.stringify(report.tables));
      assert.doesNotMatch(drilled.stderr, /already exists/);

      const verified = await cli(['verify', '--from', from, '--level', 'schema', '--work-dir', work, '--json']);
      assert.equal(verified.code, 0, verified.stderr);
      assert.equal(JSON.parse(verified.stdout).ok, true);
      assert.doesNotMatch(verified.stderr, /already exists/);
    });
  }

  it('a replaced template1 stays a template: a database made from it has the restored table', { timeout: 120_000 }, async () => {
    const cluster = await startThrowawayCluster({ minMajor: 0, workDir: work, allowSameOsUser: true });
    try {
      const t1 = await createThrowawayDatabase(cluster, 'template1');
      const c = await connect(t1);
      await c.query('CREATE TABLE restored (id int); INSERT INTO restored VALUES (1), (2)');
      await c.end();
      const admin = await connect(cluster.connection);
      const { rows } = await admin.query<{ datistemplate: boolean }>("SELECT datistemplate FROM pg_database WHERE datname = 'template1'");
      assert.deepEqual(rows, [{ datistemplate: true }]);
      await admin.query('CREATE DATABASE copied');
      await admin.end();
      const copied = await connect(withDatabase(cluster.connection, 'copied'));
      const n = await copied.query<{ n: string }>('SELECT count(*) AS n FROM restored');
      await copied.end();
      assert.equal(n.rows[0]!.n, '2');
      // And postgres again: the admin connection moves to template1 to replace it.
      const pg = await createThrowawayDatabase(cluster, 'postgres');
      const p = await connect(pg);
      const empty = await p.query<{ n: string }>("SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace");
      await p.end();
      assert.equal(empty.rows[0]!.n, '0');
    } finally {
      await cluster.stop();
    }
  });
});
