import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, fileLocation, sql } from '../helpers.ts';
import { createRole } from '../infra/roles.ts';
import { lastLine } from '../reliability.ts';
import { rm } from 'node:fs/promises';
import pg from 'pg';

/** The target's user objects, to compare before and after a refused restore. */
async function objects(url: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ o: string }>(
      `SELECT c.relkind::text || ' ' || n.nspname || '.' || c.relname AS o FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
       UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
       UNION ALL SELECT 'extension ' || extname FROM pg_extension ORDER BY 1`,
    );
    return rows.map((r) => r.o);
  } finally {
    await c.end();
  }
}

describe('restore into a managed target as a role that is not a superuser (CREATEDB only)', () => {
  it('names what the target refuses before writing, applies the profile\'s --no-owner, and restores the rest in one transaction with --skip-refused', { timeout: 240_000 }, async (t) => {
    const after = (fn: () => Promise<void>) => t.after(fn);
    const owner = await createRole('appowner', after, 'NOLOGIN');
    const restorer = await createRole('restorer', after, 'LOGIN CREATEDB');
    const source = await createDatabase('managed_src', false);
    owner.databases.push(source);
    t.after(() => sql('postgres', `DROP DATABASE IF EXISTS "${source}" WITH (FORCE)`).then(() => undefined));
    await sql(source, `CREATE EXTENSION pgcrypto; CREATE EXTENSION pg_stat_statements;
      CREATE TABLE public.orders (id int PRIMARY KEY, token text DEFAULT encode(gen_random_bytes(8), 'hex'));
      INSERT INTO public.orders (id) SELECT g FROM generate_series(1, 50) g;
      ALTER TABLE public.orders OWNER TO ${owner.name};
      CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'ddl'; END $$;
      CREATE EVENT TRIGGER ddl_log ON ddl_command_end EXECUTE FUNCTION public.log_ddl();`);
    const to = await fileLocation();
    t.after(() => rm(new URL(to), { recursive: true, force: true }));
    const dumped = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(source) });
    assert.equal(dumped.code, 0, dumped.stderr);

    // The restoring role creates its own empty database, as on a managed server.
    const targetDb = `managed_tgt_${restorer.name.slice(-6)}`;
    const asRestorer = new pg.Client({ connectionString: restorer.url('postgres') });
    await asRestorer.connect();
    await asRestorer.query(`CREATE DATABASE ${targetDb}`);
    await asRestorer.end();
    const target = restorer.url(targetDb);
    const before = await objects(target);

    const refused = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', target]);
    assert.equal(refused.code, 1, refused.stderr);
    const line = lastLine(refused.stderr);
    assert.match(line, /restore refused, nothing was changed in .* \(cause: the target database\): the target refuses 3 entries of the backup: extension pg_stat_statements \(creating it needs a superuser: create it in the target first\), comment on extension pg_stat_statements \(its extension is refused\), event trigger ddl_log \(creating an event trigger needs a superuser\); pass --skip-refused/);
    assert.match(line, new RegExp(`role ${restorer.name} cannot make .*${owner.name} the owner`));
    assert.deepEqual(await objects(target), before);

    // The profile's default (--no-owner on RDS) settles the owners; the refused entries remain.
    const profiled = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', target, '--profile', 'rds']);
    assert.equal(profiled.code, 1, profiled.stderr);
    assert.match(profiled.stderr, /profile rds: --no-owner by default/);
    assert.doesNotMatch(lastLine(profiled.stderr), /the owner/);
    assert.match(lastLine(profiled.stderr), /the target refuses 3 entries/);
    // An explicit --owner wins over the profile.
    const owned = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', target, '--profile', 'rds', '--owner', '--skip-refused']);
    assert.equal(owned.code, 1, owned.stderr);
    assert.match(lastLine(owned.stderr), new RegExp(`cannot make .*${owner.name} the owner`));
    assert.deepEqual(await objects(target), before);

    const restored = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', target, '--profile', 'rds', '--skip-refused', '--json']);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(JSON.parse(restored.stdout).skipped, ['extension pg_stat_statements', 'comment on extension pg_stat_statements', 'event trigger ddl_log']);
    assert.match(restored.stderr, /leaving out 3 entries the target refuses \(--skip-refused\)/);
    const after2 = await objects(target);
    assert.ok(after2.includes('r public.orders') && after2.includes('extension pgcrypto'), after2.join(', '));
    assert.ok(!after2.some((o) => o.startsWith('event trigger') || o === 'extension pg_stat_statements'), after2.join(', '));
    const c = new pg.Client({ connectionString: target });
    await c.connect();
    const { rows } = await c.query<{ n: string; owner: string }>(`SELECT count(*)::text AS n, (SELECT tableowner FROM pg_tables WHERE tablename = 'orders') AS owner FROM public.orders`);
    await c.end();
    assert.deepEqual(rows[0], { n: '50', owner: restorer.name });

    // A drill into a --target-url of that role names the same entries before restoring anything.
    const drillDb = `managed_drill_${restorer.name.slice(-6)}`;
    const asRestorer2 = new pg.Client({ connectionString: restorer.url('postgres') });
    await asRestorer2.connect();
    await asRestorer2.query(`CREATE DATABASE ${drillDb}`);
    await asRestorer2.end();
    const drillBefore = await objects(restorer.url(drillDb));
    const drilled = await cli(['drill', '--from', to, '--target-url', restorer.url(drillDb)]);
    assert.equal(drilled.code, 1, drilled.stderr);
    assert.match(drilled.stderr, /the target refuses 3 entries of the backup: extension pg_stat_statements .*event trigger ddl_log \(creating an event trigger needs a superuser\); drill into a throwaway server \(without --target-url\), or with a superuser in --target-url/);
    assert.deepEqual(await objects(restorer.url(drillDb)), drillBefore);
  });
});
