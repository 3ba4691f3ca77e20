// Restore never leaves a user's database half-changed: it refuses a target that is not empty
// without --clean, checks rights and dependencies before writing, restores in one transaction,
// and names whose fault a failure was. Every case compares a full snapshot of the target
// (catalog objects with their oids, and every table's rows) before and after.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cli, createDatabase, dbUrl, dumpWithCli, sql } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

/** The source: 500 orders and ~2 MB of payload (more than the 256 KiB a restore holds back). */
const SOURCE_SQL = `
  CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL);
  INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 500) g;
  CREATE TABLE payload (id int PRIMARY KEY, body text NOT NULL);
  INSERT INTO payload SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 8000) g;`;

/** A live target: its own 500 orders, under the same table name as the backup's. */
const LIVE_SQL = `
  CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL);
  INSERT INTO orders (note) SELECT 'live ' || g FROM generate_series(1, 500) g;`;

/**
 * Everything a restore could change: every non-system schema, relation, routine, type,
 * extension and event trigger with its oid (a dropped and re-created object gets a new one),
 * and every table's row count and content hash.
 */
async function snapshot(db: string): Promise<unknown> {
  const objects = await sql(
    db,
    `SELECT 'rel' AS k, c.oid::text, n.nspname || '.' || c.relname || ':' || c.relkind::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
     UNION ALL SELECT 'proc', p.oid::text, n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
     UNION ALL SELECT 'type', t.oid::text, n.nspname || '.' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
     UNION ALL SELECT 'schema', oid::text, nspname FROM pg_namespace
     UNION ALL SELECT 'ext', oid::text, extname FROM pg_extension
     UNION ALL SELECT 'evt', oid::text, evtname FROM pg_event_trigger
     UNION ALL SELECT 'owner', c.oid::text, pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
     ORDER BY 1, 3, 2`,
  );
  const tables = await sql<{ t: string }>(db, `SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`);
  const rows: Record<string, unknown> = {};
  for (const { t } of tables) rows[t] = (await sql(db, `SELECT count(*)::int AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM ${t} x`))[0];
  return { objects, rows };
}

async function fixture(label: string, extra: string[] = []) {
  const source = await createDatabase(`${label}_src`, false);
  await sql(source, SOURCE_SQL);
  const to = await tempLocation();
  const dumped = await dumpWithCli(source, to, extra);
  const target = await createDatabase(`${label}_dst`, false);
  await sql(target, LIVE_SQL);
  return { source, to, dumped, target };
}

const objectPath = (to: string, key: string) => `${fileURLToPath(to)}/${key}`;
const live = async (db: string) => (await sql<{ n: string; note: string }>(db, 'SELECT count(*)::text AS n, min(note) AS note FROM orders'))[0];
const unchanged = (before: unknown) => `unchanged (catalog and rows compared): ${JSON.stringify((before as { rows: Record<string, { n: number }> }).rows['public.orders']?.n)} live orders`;

describe('restore into a database that is not empty', () => {
  it('refuses a target that is not empty without --clean: exit 2, one line, target unchanged', { timeout: 180_000 }, async () => {
    const { to, target } = await fixture('nonempty');
    const before = await snapshot(target);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target)]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /is not empty: it holds 1 table and 1 sequence \(public\.orders, public\.orders_id_seq\); restore into an empty database .*or pass --clean/);
    assert.deepEqual(await snapshot(target), before);
    await recordFault({ faultId: 'restore-target-not-empty', fault: 'restore into a database holding a live table (500 rows), without --clean', outcome: 'refused before any write, naming what the target holds and what to do', exit: r.code, left: `target ${unchanged(before)}; bucket: ${await leftBehind(to)}`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('--clean with a view outside the backup depending on a restored table: exit 1 naming the view, target unchanged', { timeout: 180_000 }, async () => {
    const { to, target } = await fixture('depview');
    await sql(target, 'CREATE VIEW order_notes AS SELECT note FROM orders');
    const before = await snapshot(target);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--clean']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(lastLine(r.stderr), /restore refused, nothing was changed in .* \(cause: the target database\): view public\.order_notes depends on table public\.orders: .*drop those first/);
    assert.deepEqual(await snapshot(target), before);
    assert.deepEqual(await live(target), { n: '500', note: 'live 1' });
    await recordFault({ faultId: 'restore-clean-dependent-view', fault: 'restore --clean into a database where a view (not in the backup) depends on a table the backup replaces', outcome: 'refused before any write, naming the view and the table', exit: r.code, left: `target ${unchanged(before)}; bucket: ${await leftBehind(to)}`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('a role that cannot own what the archive owns, or create in the schema, gets a target-fault message; nothing changes', { timeout: 240_000 }, async () => {
    const { to, target } = await fixture('rights');
    const role = `restorer_${randomBytes(3).toString('hex')}`;
    await sql('postgres', `CREATE ROLE ${role} LOGIN PASSWORD 'restorerpw'`);
    const u = new URL(dbUrl(target));
    u.username = role;
    u.password = 'restorerpw';
    const asRole = u.href;

    // Not the database owner: PostgreSQL 15 lets only the owner create in public.
    const before = await snapshot(target);
    const noCreate = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', asRole, '--clean', '--no-owner']);
    assert.equal(noCreate.code, 1, noCreate.stderr);
    assert.match(lastLine(noCreate.stderr), new RegExp(`\\(cause: the target database\\): role ${role} may not create objects in schema public of the target.*GRANT CREATE ON SCHEMA public TO ${role}`));
    assert.match(lastLine(noCreate.stderr), new RegExp(`role ${role} cannot drop .*table public\\.orders \\(owner postgres\\)`));
    assert.deepEqual(await snapshot(target), before);

    // The owner of an empty database, restoring ownership to the archive's owner (postgres).
    const empty = await createDatabase('rights_empty', false);
    await sql('postgres', `ALTER DATABASE "${empty}" OWNER TO ${role}`);
    const e = new URL(asRole);
    e.pathname = `/${empty}`;
    const emptyBefore = await snapshot(empty);
    const noOwner = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', e.href]);
    assert.equal(noOwner.code, 1, noOwner.stderr);
    assert.match(lastLine(noOwner.stderr), new RegExp(`restore refused, nothing was changed .*\\(cause: the target database\\): role ${role} cannot make postgres the owner of the restored objects .*restore with --no-owner`));
    assert.doesNotMatch(noOwner.stderr, /archive unreadable|restorerpw/);
    assert.deepEqual(await snapshot(empty), emptyBefore);
    // As the message says: --no-owner.
    const ok = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', e.href, '--no-owner']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await sql<{ o: string }>(empty, "SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'orders'"))[0]!.o, role);
    await recordFault({ faultId: 'restore-role-lacks-rights', fault: 'restore as a role that may not create in the target\'s schema, or may not give objects to the archive\'s owner', outcome: 'refused before any write, naming the right and the remedy (GRANT, --no-owner); with --no-owner it restores', exit: noOwner.code, left: `target ${unchanged(before)}; the empty target still empty`, file: import.meta.url, message: lastLine(noOwner.stderr) });
  });

  it('--clean replaces the backup\'s objects in one transaction, after a safety dump of the target', { timeout: 240_000 }, async () => {
    const { to, target, dumped } = await fixture('replace');
    await sql(target, 'CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)');
    const r = await cli(['restore', '--from', to, '--backup', dumped.objectKey, '--target-url', dbUrl(target), '--clean', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.replaced, true);
    assert.deepEqual(await live(target), { n: '500', note: 'order 1' });
    assert.equal((await sql<{ n: string }>(target, 'SELECT count(*)::text AS n FROM payload'))[0]!.n, '8000');
    assert.equal((await sql<{ x: number }>(target, 'SELECT x FROM keep_me'))[0]!.x, 42, 'objects outside the backup stay');
    // The safety dump holds the live rows and restores.
    assert.match(result.safetyDump.backupUri, new RegExp(`/safety-dumps/default/default/${target}/`), 'kept apart from the backups, under the backup\'s service and environment');
    const manifest = JSON.parse(await readFile(objectPath(to, result.safetyDump.manifestUri.slice(to.length + 1)), 'utf8'));
    assert.match(manifest.context.reason, /safety dump before restoring .* with --clean/);
    assert.deepEqual(manifest.tables.map((t: { table: string; rows: number }) => `${t.table}:${t.rows}`), ['keep_me:1', 'orders:500']);
    const back = await createDatabase('replace_back', false);
    const restoredSafety = await cli(['restore', '--from', to, '--backup', result.safetyDump.backupUri, '--target-url', dbUrl(back)]);
    assert.equal(restoredSafety.code, 0, restoredSafety.stderr);
    assert.deepEqual(await live(back), { n: '500', note: 'live 1' });
    // --no-safety-dump skips it.
    const again = await cli(['restore', '--from', to, '--backup', dumped.objectKey, '--target-url', dbUrl(target), '--clean', '--no-safety-dump', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).safetyDump, undefined);
  });

  for (const { faultId, damage, how } of [
    { faultId: 'restore-clean-truncated-archive', damage: 'cut at 60 %', how: async (file: string, size: number) => truncate(file, Math.floor(size * 0.6)) },
    {
      faultId: 'restore-clean-flipped-archive',
      damage: 'two bytes flipped at 70 % (uncompressed archive, pg_restore itself cannot notice)',
      how: async (file: string, size: number) => {
        const buf = await readFile(file);
        const at = Math.floor(size * 0.7);
        buf[at] = buf[at]! ^ 0x20;
        buf[at + 1] = buf[at + 1]! ^ 0x20;
        await writeFile(file, buf);
      },
    },
  ]) {
    it(`a damaged archive (${damage}) into a non-empty target with --clean: rolled back, target unchanged, the archive blamed`, { timeout: 180_000 }, async () => {
      const { to, target, dumped } = await fixture('corrupt', ['--compression', 'none']);
      const file = objectPath(to, dumped.objectKey);
      await how(file, dumped.manifest.object.sizeBytes);
      const before = await snapshot(target);
      const r = await cli(['restore', '--from', to, '--backup', dumped.objectKey, '--target-url', dbUrl(target), '--clean', '--no-safety-dump']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(lastLine(r.stderr), /restore failed and was rolled back, .* is as it was \(cause: the backup archive\): .*(the manifest says|cannot read the archive)/);
      assert.doesNotMatch(r.stderr, /cause: the target/);
      assert.deepEqual(await snapshot(target), before);
      assert.deepEqual(await live(target), { n: '500', note: 'live 1' });
      await recordFault({ faultId, fault: `restore --clean into a live database from a backup ${damage}`, outcome: 'the restore ran in one transaction and was rolled back (the tail is held back until the SHA-256 matches); the archive is named as the cause', exit: r.code, left: `target ${unchanged(before)}`, file: import.meta.url, message: lastLine(r.stderr) });
    });
  }

  it('a statement the target refuses half-way (an event trigger): rolled back, target unchanged, the target blamed', { timeout: 180_000 }, async () => {
    const { to, target } = await fixture('midway');
    // It fires after the first CREATE TABLE: the DROPs of --clean and that CREATE have run.
    await sql(target, `CREATE FUNCTION no_new_tables() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no CREATE TABLE during business hours'; END $$;
                       CREATE EVENT TRIGGER no_create ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION no_new_tables()`);
    const before = await snapshot(target);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--clean', '--no-safety-dump']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(lastLine(r.stderr), /restore failed and was rolled back, .* is as it was \(cause: the target database\): the target refused a statement: no CREATE TABLE during business hours, at: CREATE TABLE/);
    assert.deepEqual(await snapshot(target), before);
    await recordFault({ faultId: 'restore-target-refuses-midway', fault: 'restore --clean where the target refuses a statement half-way (an event trigger raising after the first CREATE TABLE, once the DROPs of --clean ran)', outcome: 'the single transaction is rolled back; the target is named as the cause', exit: r.code, left: `target ${unchanged(before)}`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('directory format: refuses a non-empty target, and with --clean restores in one transaction', { timeout: 240_000 }, async () => {
    const { to, target, dumped } = await fixture('dir', ['--format', 'directory', '--jobs', '2']);
    const refused = await cli(['restore', '--from', to, '--backup', dumped.objectKey, '--target-url', dbUrl(target)]);
    assert.equal(refused.code, 2, refused.stderr);
    await sql(target, 'CREATE VIEW v AS SELECT count(*) FROM orders');
    const dep = await cli(['restore', '--from', to, '--backup', dumped.objectKey, '--target-url', dbUrl(target), '--clean']);
    assert.equal(dep.code, 1, dep.stderr);
    assert.match(lastLine(dep.stderr), /view public\.v depends on table public\.orders/);
    await sql(target, 'DROP VIEW v');
    const ok = await cli(['restore', '--from', to, '--backup', dumped.objectKey, '--target-url', dbUrl(target), '--clean', '--no-safety-dump']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(await live(target), { n: '500', note: 'order 1' });
  });

  it('drill --target-url refuses a database that is not empty, before downloading anything: exit 2', { timeout: 180_000 }, async () => {
    const { to, target } = await fixture('drilltarget');
    const before = await snapshot(target);
    const r = await cli(['drill', '--from', to, '--target-url', dbUrl(target)]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(lastLine(r.stderr), /drill target .* is not empty: it holds 1 table and 1 sequence .*drill into an empty database/);
    assert.doesNotMatch(r.stderr, /downloading/);
    assert.deepEqual(await snapshot(target), before);
    assert.doesNotMatch(await leftBehind(to), /drill log/);
    await recordFault({ faultId: 'restore-drill-target-not-empty', fault: 'drill --target-url into a database that holds a live table', outcome: 'refused before the download, naming what the database holds', exit: r.code, left: `target ${unchanged(before)}; bucket: ${await leftBehind(to)}`, file: import.meta.url, message: lastLine(r.stderr) });
  });
});


