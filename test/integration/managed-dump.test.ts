import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import pg from 'pg';
import { readFile, readdir, rm } from 'node:fs/promises';
import { cli, createDatabase, dbUrl, fileLocation, realPgBin, run, s3Keys, s3Location, sql } from '../helpers.ts';
import { createRole, type TestRole } from '../infra/roles.ts';
import { lastLine } from '../reliability.ts';
import { runDump, planDump } from '../../src/commands/dump.ts';
import { resolveConnection } from '../../src/postgres/connection.ts';

/**
 * A managed server's backup role: it owns its database, and the platform owns schemas and
 * objects in it that the role may not read (issue 27, item 1).
 */
async function managedDatabase(t: TestContext): Promise<{ app: TestRole; platform: TestRole; db: string }> {
  const after = (fn: () => Promise<void>) => t.after(fn);
  const app = await createRole('app', after);
  const platform = await createRole('platform', after, 'NOLOGIN');
  const db = `managed_${app.name.slice(-6)}`;
  await sql('postgres', `CREATE DATABASE ${db} OWNER ${app.name}`);
  platform.databases.push(db);
  await sql(db, `CREATE SCHEMA platform AUTHORIZATION ${platform.name};
    CREATE TABLE platform.settings (k text PRIMARY KEY, v text);
    INSERT INTO platform.settings VALUES ('a', 'b');
    ALTER TABLE platform.settings OWNER TO ${platform.name}`);
  const asApp = new pg.Client({ connectionString: app.url(db) });
  await asApp.connect();
  await asApp.query(`CREATE TABLE public.orders (id serial PRIMARY KEY, total int); INSERT INTO public.orders (total) SELECT g FROM generate_series(1, 100) g`);
  await asApp.end();
  return { app, platform, db };
}

/** The flags a refusal tells the user to paste, as argv words. */
function pastedFlags(message: string): string[] {
  const m = /skip (?:it|them) with (.*?), or GRANT/.exec(message);
  assert.ok(m, message);
  return m[1]!.match(/'(?:[^']|'\\'')*'|\S+/g)!.map((w) => (w.startsWith("'") ? w.slice(1, -1).replace(/'\\''/g, "'") : w));
}

const silent = { info: () => undefined, warn: () => undefined, group: <T>(_name: string, fn: () => Promise<T>) => fn() };

describe('dump as a role that cannot read everything (managed servers)', () => {
  it('the issue\'s case: a schema owned by another role is named before anything is written, and the flag it prints skips it', { timeout: 120_000 }, async (t) => {
    const { app, db } = await managedDatabase(t);
    const to = s3Location('managed');
    const r = await cli(['dump', '--to', to], { DATABASE_URL: app.url(db) });
    assert.equal(r.code, 2, r.stderr);
    const line = lastLine(r.stderr);
    assert.match(line, new RegExp(`role "${app.name}" cannot read 1 object the dump needs: schema "platform" \\(no USAGE\\); skip it with --exclude-schema platform, or GRANT pg_read_all_data`));
    assert.doesNotMatch(r.stderr, /snapshot|pg_dump exited/);
    assert.deepEqual(await s3Keys(to), []);
    const ok = await cli(['dump', '--to', to, '--json', ...pastedFlags(line)], { DATABASE_URL: app.url(db) });
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).tables, [{ schema: 'public', table: 'orders', rows: 100 }]);
    // --schema public alone never reads the platform's schema: no refusal.
    const only = await cli(['dump', '--to', to, '--schema', 'public'], { DATABASE_URL: app.url(db) });
    assert.equal(only.code, 0, only.stderr);
    // docs/managed.md's least-privilege grant (PostgreSQL 14+) reads it all.
    await sql('postgres', `GRANT pg_read_all_data TO ${app.name}`);
    const all = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: app.url(db) });
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(JSON.parse(all.stdout).tables.map((x: { schema: string; table: string; rows: number }) => `${x.schema}.${x.table}:${x.rows}`), ['platform.settings:1', 'public.orders:100']);
  });

  it('tables, sequences, row-level security and large objects: each reported object really fails pg_dump, and the pasted flags make the dump pass', { timeout: 180_000 }, async (t) => {
    const { app, platform, db } = await managedDatabase(t);
    await sql(db, `GRANT USAGE ON SCHEMA platform TO ${app.name};
      CREATE TABLE public."Audit Log" (id int); ALTER TABLE public."Audit Log" OWNER TO ${platform.name};
      CREATE SEQUENCE public.ticket_seq; ALTER SEQUENCE public.ticket_seq OWNER TO ${platform.name};
      CREATE TABLE public.tenants (id int, tenant text); ALTER TABLE public.tenants OWNER TO ${platform.name};
      GRANT SELECT ON public.tenants TO ${app.name};
      ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
      CREATE TABLE public.readable (id int); ALTER TABLE public.readable OWNER TO ${platform.name};
      GRANT SELECT ON public.readable TO ${app.name};
      SELECT lo_from_bytea(0, 'secret'::bytea);
      DO $$ BEGIN EXECUTE format('ALTER LARGE OBJECT %s OWNER TO ${platform.name}', (SELECT max(oid) FROM pg_largeobject_metadata)); END $$`);
    const to = s3Location('managed2');
    const r = await cli(['dump', '--to', to], { DATABASE_URL: app.url(db) });
    assert.equal(r.code, 2, r.stderr);
    const line = lastLine(r.stderr);
    assert.ok(line.includes(`role "${app.name}" cannot read 5 objects the dump needs: table "platform"."settings" (no SELECT), table "public"."Audit Log" (no SELECT), table "public"."tenants" (row-level security applies to the role), sequence "public"."ticket_seq" (no SELECT), 1 large object (no SELECT); skip them with `), line);
    assert.match(line, /ALTER ROLE … BYPASSRLS for row-level security; nothing was written$/);
    assert.deepEqual(await s3Keys(to), []);
    const flags = pastedFlags(line);
    assert.deepEqual(flags, ['--exclude-table', 'platform.settings', '--exclude-table', 'public."Audit Log"', '--exclude-table-data', 'public.tenants', '--exclude-table', 'public.ticket_seq', '--pg-dump-arg=--no-blobs']);
    // No false alarm: leaving out any one of the flags, pg_dump itself fails as this role.
    const pgDump = `${await realPgBin()}/pg_dump`;
    const asPgDumpArgs = (words: string[]) => words.map((w, i) => (w.startsWith('--') && !w.includes('=') ? `${w}=${words[i + 1]}` : w.startsWith('--pg-dump-arg=') ? w.slice('--pg-dump-arg='.length) : undefined)).filter((w): w is string => w !== undefined);
    const pairs: string[][] = [];
    for (let i = 0; i < flags.length; i++) pairs.push(flags[i]!.includes('=') ? [flags[i]!] : [flags[i]!, flags[++i]!]);
    assert.equal(pairs.length, 5);
    for (let skip = 0; skip < pairs.length; skip++) {
      const args = asPgDumpArgs(pairs.filter((_, i) => i !== skip).flat());
      const d = await run(pgDump, ['--format=custom', '--file=/dev/null', '--no-sync', ...args, `--dbname=${app.url(db)}`]);
      assert.notEqual(d.code, 0, `pg_dump without ${pairs[skip]!.join(' ')} passed`);
      assert.match(d.stderr, /permission denied for (table|sequence|large object)|row-level security/, d.stderr);
    }
    const all = await run(pgDump, ['--format=custom', '--file=/dev/null', '--no-sync', ...asPgDumpArgs(flags), `--dbname=${app.url(db)}`]);
    assert.equal(all.code, 0, all.stderr);
    const ok = await cli(['dump', '--to', to, ...flags], { DATABASE_URL: app.url(db) });
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('a failure of our own row count in the snapshot is the reported cause, never pg_dump\'s lost snapshot; nothing is written', { timeout: 120_000 }, async (t) => {
    const { app, db } = await managedDatabase(t);
    const to = await fileLocation();
    t.after(() => rm(new URL(to), { recursive: true, force: true }));
    // The pre-flight passes (the platform's schema is excluded); then the row count reads it
    // anyway, as the dump did: the real "permission denied" ends the snapshot's
    // transaction while pg_dump starts and imports that snapshot.
    for (let attempt = 0; attempt < 4; attempt++) {
      const client = new pg.Client({ connectionString: app.url(db) });
      await client.connect();
      const query = client.query.bind(client) as (...a: unknown[]) => unknown;
      (client as unknown as { query: unknown }).query = (text: unknown, ...rest: unknown[]) =>
        query(typeof text === 'string' && text.includes('count(*)::text AS n FROM "public"."orders"') ? 'SELECT 0 AS i, count(*)::text AS n FROM platform.settings' : text, ...rest);
      const plan = await planDump({ to, excludeSchemas: ['platform'], logger: silent }, resolveConnection(app.url(db)));
      await assert.rejects(runDump(plan, { logger: silent, now: () => new Date() }, client), (err: Error) => {
        assert.match(err.message, /reading the row counts in the dump's snapshot: permission denied for schema platform; skip the object/);
        assert.doesNotMatch(err.message, /snapshot '|could not import|pg_dump exited|EPIPE/);
        return true;
      });
    }
    const files = (await readdir(new URL(to), { recursive: true, withFileTypes: true })).filter((e) => !e.isDirectory());
    assert.deepEqual(files.map((e) => e.name), []);
  });

  it('--profile supabase leaves out the platform\'s schemas, keeps auth, says so once, records the profile; an explicit --schema wins', { timeout: 120_000 }, async (t) => {
    const db = await createDatabase('supa', false);
    t.after(() => sql('postgres', `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).then(() => undefined));
    await sql(db, `CREATE SCHEMA auth; CREATE TABLE auth.users (id int); INSERT INTO auth.users VALUES (1), (2);
      CREATE SCHEMA realtime; CREATE TABLE realtime.messages (id int); INSERT INTO realtime.messages VALUES (1);
      CREATE SCHEMA graphql_public; CREATE FUNCTION graphql_public.graphql() RETURNS int LANGUAGE sql AS 'SELECT 1';
      CREATE TABLE public.todos (id int); INSERT INTO public.todos VALUES (1), (2), (3);`);
    const to = await fileLocation();
    t.after(() => rm(new URL(to), { recursive: true, force: true }));
    const r = await cli(['dump', '--to', to, '--profile', 'supabase', '--schema-sidecar', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout);
    assert.deepEqual(m.tables.map((x: { schema: string; table: string }) => `${x.schema}.${x.table}`), ['auth.users', 'public.todos']);
    assert.equal(m.options.profile, 'supabase');
    assert.ok(m.options.excludeSchemas.includes('realtime') && m.options.excludeSchemas.includes('graphql_public'));
    assert.match(r.stderr, /profile supabase: --exclude-schema graphql --exclude-schema graphql_public/);
    assert.doesNotMatch(r.stderr, /matches no schema/, 'the profile\'s schemas this database lacks are no warning');
    const sidecar = (await readdir(new URL(to), { recursive: true })).find((f) => f.endsWith('.schema.sql'))!;
    const schema = await readFile(new URL(`${to}/${sidecar}`), 'utf8');
    assert.match(schema, /CREATE TABLE auth\.users/);
    assert.doesNotMatch(schema, /graphql_public|realtime/);
    const explicit = await cli(['dump', '--to', to, '--profile', 'supabase', '--schema', 'realtime', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(explicit.code, 0, explicit.stderr);
    assert.deepEqual(JSON.parse(explicit.stdout).tables, [{ schema: 'realtime', table: 'messages', rows: 1 }]);
    const bad = await cli(['dump', '--to', to, '--profile', 'heroku'], { DATABASE_URL: dbUrl(db) });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(lastLine(bad.stderr), /unknown profile "heroku": use one of supabase, neon, rds, cloudsql, azure/);
  });
});
