import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, dumpWithCli, realPgBin, sql } from '../helpers.ts';
import { tempDir, tempFakePgBin, tempLocation } from '../infra/temp.ts';

async function tmpFile(name: string, text: string): Promise<string> {
  const file = path.join(await tempDir('pgb-smoke-'), name);
  await writeFile(file, text);
  return file;
}

describe('drill checks', () => {
  it('records the migration head at dump time and checks it after the restore', async () => {
    const db = await createDatabase('alembic');
    await sql(db, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); INSERT INTO alembic_version VALUES ('4f2e9c1d7a3b')");
    const to = await tempLocation();
    const { manifest, manifestKey } = await dumpWithCli(db, to);
    assert.deepEqual(manifest.migrationHead, { table: 'public.alembic_version', head: '4f2e9c1d7a3b' });
    const ok = await cli(['drill', '--from', to, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).migrationHead, { expected: '4f2e9c1d7a3b', actual: '4f2e9c1d7a3b', ok: true });

    // A manifest that recorded another head: the drill must notice.
    const file = path.join(to.replace('file://', ''), manifestKey);
    const edited = JSON.parse(await readFile(file, 'utf8'));
    edited.migrationHead.head = 'ffffffffffff';
    await writeFile(file, JSON.stringify(edited));
    const bad = await cli(['drill', '--from', to]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /migration head is 4f2e9c1d7a3b after the restore, the manifest says ffffffffffff/);
  });

  it('finds each migration tool\'s head', async () => {
    const cases: [string, string][] = [
      ['CREATE TABLE schema_migrations (version varchar PRIMARY KEY); INSERT INTO schema_migrations VALUES (\'20260101000000\'), (\'20261122000000\')', '20261122000000'],
      ['CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar, success bool); INSERT INTO flyway_schema_history VALUES (1, \'1\', true), (2, \'2.1\', true), (3, \'3\', false)', '2.1'],
      ['CREATE TABLE _prisma_migrations (migration_name varchar, finished_at timestamptz, rolled_back_at timestamptz); INSERT INTO _prisma_migrations VALUES (\'20260101_init\', now() - interval \'1 day\', null), (\'20261122_users\', now(), null)', '20261122_users'],
      ['CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar, name varchar); INSERT INTO django_migrations (app, name) VALUES (\'auth\', \'0001_initial\'), (\'shop\', \'0007_orders\')', 'shop.0007_orders'],
      ['CREATE TABLE knex_migrations (id serial PRIMARY KEY, name varchar); INSERT INTO knex_migrations (name) VALUES (\'001_init.js\'), (\'002_users.js\')', '002_users.js'],
    ];
    for (const [ddl, head] of cases) {
      const db = await createDatabase('migr', false);
      await sql(db, ddl);
      const { manifest } = await dumpWithCli(db, await tempLocation());
      assert.equal(manifest.migrationHead?.head, head, ddl);
    }
  });

  it('reports a sequence behind its column', async () => {
    const db = await createDatabase('seq');
    await sql(db, "SELECT setval('customers_id_seq', 10)");
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const r = await cli(['drill', '--from', to, '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.sequencesBehind.length, 1);
    assert.match(report.reason, /sequence public\.customers_id_seq is behind public\.customers\.id: its value is 10, the column's max is 2000/);
  });

  it('runs smoke SQL with stated expectations, and fails the drill on an unmet one', async () => {
    const db = await createDatabase('smoke');
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const passing = await tmpFile('smoke.sql', `-- smoke checks for the shop
-- expect: rows >= 1
SELECT * FROM customers WHERE email = 'customer1@example.com';

-- expect: value = 2000
SELECT count(*) FROM customers;

-- expect: value = t
SELECT customer_count() > 0;

-- expect: ok
SELECT * FROM order_totals LIMIT 1;
`);
    const ok = await cli(['drill', '--from', to, '--smoke-sql', passing, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).smoke.map((s: { ok: boolean }) => s.ok), [true, true, true, true]);

    const failing = await tmpFile('smoke.sql', "-- expect: value > 5000\nSELECT count(*) FROM orders;\n-- expect: ok\nSELECT * FROM no_such_table;\n");
    const bad = await cli(['drill', '--from', to, '--smoke-sql', failing, '--json']);
    assert.equal(bad.code, 1);
    const report = JSON.parse(bad.stdout);
    assert.match(report.problems.join('\n'), /smoke check at line 1 expected value > 5000, got 5000/);
    assert.match(report.problems.join('\n'), /smoke check at line 3 expected ok, got error: relation "no_such_table" does not exist/);
  });

  it('rejects an unreadable or malformed smoke SQL file, exit 2', async () => {
    const to = await tempLocation();
    const missing = await cli(['drill', '--from', to, '--smoke-sql', '/nonexistent/smoke.sql']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the smoke SQL file \/nonexistent\/smoke.sql: ENOENT/);
    const malformed = await cli(['drill', '--from', to, '--smoke-sql', await tmpFile('s.sql', 'SELECT 1;\n')]);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, /s\.sql:1: a query without an expectation/);
  });

  it('fails early, naming the extension, when the target lacks one the backup needs', async () => {
    // A tiny extension installed for the dump and removed before the drill.
    const share = path.join((await realPgBin()).replace(/\/lib\/postgresql\/(\d+)\/bin$/, '/share/postgresql/$1'), 'extension');
    const name = `pgb_test_ext_${process.pid}`;
    await writeFile(path.join(share, `${name}.control`), "default_version = '1.0'\nrelocatable = true\n");
    await writeFile(path.join(share, `${name}--1.0.sql`), 'CREATE FUNCTION pgb_ext_answer() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$;\n');
    const to = await tempLocation();
    try {
      const db = await createDatabase('ext');
      await sql(db, `CREATE EXTENSION ${name}`);
      await dumpWithCli(db, to);
    } finally {
      await rm(path.join(share, `${name}.control`), { force: true });
      await rm(path.join(share, `${name}--1.0.sql`), { force: true });
    }
    const r = await cli(['drill', '--from', to, '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.phases.restoreMs, 0, 'no restore was attempted');
    assert.match(report.reason, new RegExp(`the target lacks extension ${name} that the backup needs`));
  });

  it('restores in parallel and enforces RTO/RPO budgets', async () => {
    const db = await createDatabase('budget');
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const ok = await cli(['drill', '--from', to, '--jobs', '4', '--max-rto', '10m', '--max-rpo', '1h', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const report = JSON.parse(ok.stdout);
    // RTO: wall time from the download's start (the cluster starts meanwhile) to the checks' end.
    const p = report.phases;
    assert.ok(report.rtoMs + 3 >= Math.max(p.downloadMs, p.clusterReadyMs) + p.restoreMs + p.checksMs, JSON.stringify({ rtoMs: report.rtoMs, ...p }));
    assert.match(ok.stderr, /restoring into .* with pg_restore [\d.]+, 4 jobs/);
    const tight = await cli(['drill', '--from', to, '--max-rto', '1ms', '--max-rpo', '1ms', '--json']);
    assert.equal(tight.code, 1);
    const problems = JSON.parse(tight.stdout).problems.join('\n');
    assert.match(problems, /RTO .* exceeds the budget --max-rto 1ms/);
    assert.match(problems, /RPO .* exceeds the budget --max-rpo 1ms/);
    for (const [flag, value, expected] of [['--jobs', '0', /--jobs must be a whole number/], ['--max-rto', 'soon', /--max-rto "soon" is not a duration/]] as const) {
      const r = await cli(['drill', '--from', to, flag, value]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, expected);
    }
  });

  it('refuses a pg_restore older than the archive\'s pg_dump, exit 2', async () => {
    const db = await createDatabase('oldrestore', false);
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const { fakePgBin } = await import('../helpers.ts');
    const bin = await tempFakePgBin('exit 0');
    const { unlink } = await import('node:fs/promises');
    await unlink(path.join(bin, 'pg_restore'));
    await writeFile(path.join(bin, 'pg_restore'), '#!/bin/bash\necho "pg_restore (PostgreSQL) 9.6.24"\n', { mode: 0o755 });
    for (const command of ['drill', 'verify']) {
      const r = await cli([command, '--from', to], { PG_BIN_DIR: bin });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /archive written by pg_dump \d+\.\d+ needs pg_restore \d+ or newer but found pg_restore 9\.6 .*install postgresql-client-\d+/);
    }
  });

  it('reads custom archives back without psql installed (only plain dumps and the globals need it)', async () => {
    const db = await createDatabase('nopsql');
    // A run with globals: the drill restores them with psql, so without psql it says so (exit 2).
    const withGlobals = await tempLocation();
    await dumpWithCli(db, withGlobals);
    const noPsql = await tempFakePgBin('exit 0');
    await (await import('node:fs/promises')).unlink(path.join(noPsql, 'psql'));
    const refused = await cli(['drill', '--from', withGlobals], { PG_BIN_DIR: noPsql });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /restoring globals written by pg_dumpall \S+ needs psql \d+ or newer but no psql found: install postgresql-client-\d+/);
    const to = await tempLocation();
    await dumpWithCli(db, to, ['--no-globals']);
    const { fakePgBin } = await import('../helpers.ts');
    const bin = await tempFakePgBin('exit 0');
    const { unlink } = await import('node:fs/promises');
    await unlink(path.join(bin, 'psql'));
    for (const args of [['verify', '--level', 'schema'], ['drill']]) {
      const r = await cli([...args, '--from', to], { PG_BIN_DIR: bin });
      assert.equal(r.code, 0, r.stderr);
    }
  });

  it('refuses a target server older than the source', async () => {
    const db = await createDatabase('older');
    const to = await tempLocation();
    const { manifestKey } = await dumpWithCli(db, to);
    const file = path.join(to.replace('file://', ''), manifestKey);
    const edited = JSON.parse(await readFile(file, 'utf8'));
    edited.server = { version: '99.1', versionNum: 990001, major: 99 };
    await writeFile(file, JSON.stringify(edited));
    const target = await createDatabase('oldtarget', false);
    const r = await cli(['drill', '--from', to, '--target-url', dbUrl(target)]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /older than the source's 99\.1: restore into major 99 or newer/);
  });
});

describe('migration head probe', () => {
  it('ignores a same-named table of another shape without breaking the dump', async () => {
    const db = await createDatabase('shape');
    await sql(db, 'CREATE TABLE alembic_version (something int); INSERT INTO alembic_version VALUES (1)');
    const { manifest } = await dumpWithCli(db, await tempLocation());
    assert.equal(manifest.migrationHead, undefined);
    assert.equal(manifest.tables.length, 5);
  });
});
