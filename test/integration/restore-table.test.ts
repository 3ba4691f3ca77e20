// restore --table / --schema on a real server: the selected tables come with their index,
// constraints, trigger (and its function when the target lacks it), sequences with their
// values, comment, grant and RLS policy, and nothing else; a foreign key to a table outside the
// selection is named; a table missing from the backup is a usage error; --clean replaces only
// the selected table; and the row counts after every restore are checked against the manifest.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, dumpWithCli, sql } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';
import { dropAfter, falsifyRowCount, randomRole, sourceDatabase } from '../restore-selection-fixture.ts';

const tablesOf = async (db: string) =>
  (await sql<{ t: string }>(db, `SELECT n.nspname || '.' || c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)).map((r) => r.t);

describe('restore --table / --schema', () => {
  it('one table with its index, FK among the selected, trigger, sequences, comment, grant and policy, and nothing else', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26tab_src', role));
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const target = dbs.add(await createDatabase('h26tab_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'public.orders', '--table', 'public.customers', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(await tablesOf(target), ['public.customers', 'public.orders']);
    assert.deepEqual(out.selection.outsideForeignKeys, []);
    assert.deepEqual(out.selection.prerequisites, ['function public.touch()']);
    assert.equal(out.checks.ok, true);
    assert.deepEqual(out.checks.tables.map((x: { table: string; expected: number; actual: number }) => [x.table, x.expected, x.actual]), [['customers', 40, 40], ['orders', 300, 300]]);
    const [facts] = await sql(
      target,
      `SELECT (SELECT count(*)::int FROM orders) AS orders,
              (SELECT count(*)::int FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'f') AS fks,
              to_regclass('public.orders_note_idx') IS NOT NULL AS idx,
              (SELECT count(*)::int FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgname = 'orders_touch') AS trg,
              obj_description('orders'::regclass, 'pg_class') AS comment,
              has_table_privilege('${role}', 'orders', 'SELECT') AS granted,
              (SELECT relrowsecurity FROM pg_class WHERE oid = 'orders'::regclass) AS rls,
              (SELECT count(*)::int FROM pg_policy WHERE polrelid = 'orders'::regclass) AS policies`,
    );
    assert.deepEqual(facts, { orders: 300, fks: 1, idx: true, trg: 1, comment: 'every order', granted: true, rls: true, policies: 1 });
    // The sequences come with their values: the next ids follow the restored rows.
    const [next] = await sql(target, `INSERT INTO customers (name) VALUES ('new') RETURNING id`);
    assert.equal(next!.id, 41);
    const [nextOrder] = await sql(target, `INSERT INTO orders (customer_id, note) VALUES (41, 'new') RETURNING id, touched IS NOT NULL AS touched`);
    assert.deepEqual(nextOrder, { id: '301', touched: true });
  });

  it('--schema restores the schema and its tables only', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26sch_src', role));
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const target = dbs.add(await createDatabase('h26sch_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--schema', 'sales', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await tablesOf(target), ['sales.regions', 'sales.targets']);
    const [c] = await sql(target, `SELECT (SELECT count(*)::int FROM sales.targets) AS n, (SELECT count(*)::int FROM pg_constraint WHERE conrelid = 'sales.targets'::regclass AND contype = 'f') AS fks`);
    assert.deepEqual(c, { n: 10, fks: 1 });
    assert.equal(JSON.parse(r.stdout).checks.tables.length, 2);
  });

  it('names with spaces, quotes and dots: --table with quoted parts', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const source = dbs.add(await createDatabase('h26odd_src', false));
    await sql(source, `CREATE SCHEMA "sch ë"; CREATE TABLE "sch ë"."we ""ird"".x" (id serial PRIMARY KEY, v text); INSERT INTO "sch ë"."we ""ird"".x" (v) VALUES ('a'), ('b'); CREATE TABLE "sch ë".other (id int)`);
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const target = dbs.add(await createDatabase('h26odd_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', '"sch ë"."we ""ird"".x"', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await tablesOf(target), ['sch ë.we "ird".x']);
    assert.deepEqual(JSON.parse(r.stdout).checks.tables.map((x: { actual: number }) => x.actual), [2]);
    assert.deepEqual(JSON.parse(r.stdout).selection.prerequisites, ['schema sch ë']);
  });

  it('a foreign key to a table outside the selection is named (warning and JSON), not silently dropped', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26fk_src', role));
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const target = dbs.add(await createDatabase('h26fk_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'public.orders', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /foreign key orders_customer_id_fkey of public\.orders references public\.customers, which is not selected: it is not restored/);
    assert.deepEqual(JSON.parse(r.stdout).selection.outsideForeignKeys, [{ table: 'public.orders', constraint: 'orders_customer_id_fkey', references: ['public.customers'] }]);
    assert.deepEqual(await tablesOf(target), ['public.orders']);
  });

  it('a partitioned table comes with its partitions (two levels), their rows and indexes; one partition alone is a table of its own', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const source = dbs.add(await createDatabase('h26part_src', false));
    await sql(source, `CREATE TABLE events (id int, at date NOT NULL, body text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
      CREATE TABLE events_2026_01 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
      CREATE TABLE events_2026_02 PARTITION OF events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01') PARTITION BY RANGE (id);
      CREATE TABLE events_2026_02_low PARTITION OF events_2026_02 FOR VALUES FROM (MINVALUE) TO (500);
      CREATE TABLE events_2026_02_high PARTITION OF events_2026_02 FOR VALUES FROM (500) TO (MAXVALUE);
      CREATE TABLE other (id int PRIMARY KEY);
      INSERT INTO events SELECT g, date '2026-01-01' + (g % 50), 'e' || g FROM generate_series(1, 1000) g;
      INSERT INTO other SELECT generate_series(1, 5);`);
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const whole = dbs.add(await createDatabase('h26part_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(whole), '--table', 'public.events', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).checks.ok, true);
    assert.deepEqual(await tablesOf(whole), ['public.events_2026_01', 'public.events_2026_02_high', 'public.events_2026_02_low']);
    const [facts] = await sql(whole, `SELECT (SELECT count(*)::int FROM events) AS rows, (SELECT count(*)::int FROM events_2026_02) AS feb,
      (SELECT count(*)::int FROM pg_inherits WHERE inhparent = 'events'::regclass) AS parts, to_regclass('public.other') IS NULL AS no_other,
      (SELECT count(*)::int FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relispartition) AS attached_indexes`);
    assert.deepEqual(facts, { rows: 1000, feb: 380, parts: 2, no_other: true, attached_indexes: 4 });
    const single = dbs.add(await createDatabase('h26part_one', false));
    const one = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(single), '--table', 'public.events_2026_01']);
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(await tablesOf(single), ['public.events_2026_01']);
    const [alone] = await sql(single, `SELECT count(*)::int AS n, (SELECT relispartition FROM pg_class WHERE oid = 'events_2026_01'::regclass) AS partition FROM events_2026_01`);
    assert.deepEqual(alone, { n: 620, partition: false });
  });

  it('a table missing from the backup: exit 2, one line naming it, nothing restored', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26miss_src', role));
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const target = dbs.add(await createDatabase('h26miss_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'public.invoices']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /table public\.invoices is not in the backup \(it holds 5 tables: public\.audit, public\.customers, public\.orders/);
    assert.deepEqual(await tablesOf(target), []);
    const bad = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'orders']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--table "orders" is not SCHEMA\.TABLE/);
  });

  it('without --clean a table that exists is refused (exit 2); --clean replaces only that table, after a safety dump', { timeout: 240_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26cl_src', role));
    const to = await tempLocation();
    await dumpWithCli(source, to);
    // The live database: the same tables, later changed: audit lost rows, customers gained one.
    const live = dbs.add(await sourceDatabase('h26cl_live', role));
    await sql(live, `DELETE FROM audit WHERE id > 5; INSERT INTO customers (name) VALUES ('live only'); UPDATE orders SET note = 'live' WHERE id <= 10`);
    const before = await sql(live, `SELECT (SELECT count(*)::int FROM customers) AS customers, (SELECT count(*)::int FROM orders WHERE note = 'live') AS live_orders`);
    const refused = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--table', 'public.audit']);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /already has public\.audit, public\.audit_id_seq: pass --clean to replace them/);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--table', 'public.audit', '--clean', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.ok(out.safetyDump?.backupUri, 'the target was dumped first');
    assert.equal((await sql(live, 'SELECT count(*)::int AS n FROM audit'))[0]!.n, 25);
    assert.deepEqual(await sql(live, `SELECT (SELECT count(*)::int FROM customers) AS customers, (SELECT count(*)::int FROM orders WHERE note = 'live') AS live_orders`), before);
    assert.equal((await sql(live, `SELECT nextval('audit_id_seq')::int AS n`))[0]!.n, 26);
  });

  it('--clean of a table that another table of the target references: refused before any write, naming that table', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26dep_src', role));
    const to = await tempLocation();
    await dumpWithCli(source, to);
    const live = dbs.add(await sourceDatabase('h26dep_live', role));
    await sql(live, `INSERT INTO customers (name) VALUES ('live only')`);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--table', 'public.customers', '--clean', '--no-safety-dump']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /restore refused, nothing was changed .*: table public\.orders depends on table public\.customers: --clean drops and re-creates/);
    assert.equal((await sql(live, 'SELECT count(*)::int AS n FROM customers'))[0]!.n, 41);
  });

  it('row counts in the archive that differ from the manifest: exit 1 before the commit, the target untouched, the checks in --json', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26cnt_src', role));
    const to = await tempLocation();
    const { manifestKey } = await dumpWithCli(source, to);
    await falsifyRowCount(to, manifestKey, 'public', 'orders', 299);
    const target = dbs.add(await createDatabase('h26cnt_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the checks before the commit failed: row count of public\.orders in the archive is 300, the manifest says 299; pg_restore was stopped before its commit and the server rolled back/);
    const out = JSON.parse(r.stdout);
    assert.equal(out.checks.ok, false);
    assert.deepEqual(out.checks.beforeCommit, { counted: true, note: "the archive's rows differ from the manifest: nothing was committed" });
    assert.deepEqual(await tablesOf(target), [], 'rolled back: nothing of the backup is in the target');
    // --table checks the selected tables only: the same backup restores audit, counted before the commit.
    const other = dbs.add(await createDatabase('h26cnt_dst2', false));
    const one = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(other), '--table', 'public.audit']);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stderr, /the archive's rows of 1 table match the manifest \(counted before the commit\)/);
    assert.match(one.stderr, /row counts: 1\/1 table match the manifest/);
  });

  it('directory format: a row count that differs is found before anything is restored', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26dir_src', role));
    const to = await tempLocation();
    const { manifestKey } = await dumpWithCli(source, to, ['--format', 'directory']);
    const target = dbs.add(await createDatabase('h26dir_dst', false));
    const ok = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'public.customers']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /the archive's rows of 1 table match the manifest \(counted before the commit\)/);
    await falsifyRowCount(to, manifestKey, 'public', 'audit', 26);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'public.audit']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /row count of public\.audit in the archive is 25, the manifest says 26; nothing was restored/);
    assert.deepEqual(await tablesOf(target), ['public.customers']);
  });

  it('plain SQL: the rows are counted after the commit; a mismatch exits 1 and says the restore is committed', { timeout: 180_000 }, async (t) => {
    const dbs = dropAfter(t);
    const role = await randomRole(t, dbs.all);
    const source = dbs.add(await sourceDatabase('h26pl_src', role));
    const to = await tempLocation();
    const { manifestKey } = await dumpWithCli(source, to, ['--format', 'plain']);
    await falsifyRowCount(to, manifestKey, 'public', 'orders', 301);
    const target = dbs.add(await createDatabase('h26pl_dst', false));
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the checks after the restore failed: row count of public\.orders is 300, the manifest says 301; the restore is committed/);
    assert.equal(JSON.parse(r.stdout).checks.tables.find((x: { table: string }) => x.table === 'orders').actual, 300);
    const refused = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--table', 'public.orders']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--table\/--schema need a custom or directory backup: .* is plain SQL, which has no TOC/);
  });
});
