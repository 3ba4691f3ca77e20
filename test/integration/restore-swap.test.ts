// restore --swap on a real server: the backup goes into a new database beside the live one,
// is checked, and only then the live one is renamed <live>_before_<stamp> and the new one takes
// its name; nothing is dropped. Sessions on the live database refuse the swap (named) unless
// --terminate-sessions; failed checks drop the new database and leave the live one untouched;
// the printed swap-back SQL works.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { cli, dbUrl, dumpWithCli, sql } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';
import { dropAfter, falsifyRowCount, randomRole, sourceDatabase } from '../restore-selection-fixture.ts';

/** Databases whose name starts with `live` (the live one, and any _restore_/_before_ copies). */
const family = async (live: string) => (await sql<{ d: string }>('postgres', `SELECT datname AS d FROM pg_database WHERE datname LIKE '${live}%' ORDER BY 1`)).map((r) => r.d);
const counts = async (db: string) => (await sql(db, 'SELECT (SELECT count(*)::int FROM orders) AS orders, (SELECT count(*)::int FROM audit) AS audit'))[0];

/** A live database dumped, then changed (rows deleted), with a database-level setting and comment. */
async function liveAfterBackup(t: Parameters<typeof dropAfter>[0], label: string) {
  const dbs = dropAfter(t);
  let live = '';
  // The role's grants live on in the renamed copies too: revoked there before it is dropped.
  const role = await randomRole(t, async () => [...dbs.all(), ...(live ? await family(live) : [])]);
  live = dbs.add(await sourceDatabase(label, role));
  await sql('postgres', `ALTER DATABASE "${live}" SET work_mem = '7MB'; COMMENT ON DATABASE "${live}" IS 'the shop'; GRANT CONNECT ON DATABASE "${live}" TO ${role}`);
  const to = await tempLocation();
  const dumped = await dumpWithCli(live, to);
  await sql(live, 'DELETE FROM audit WHERE id > 5');
  return { dbs, role, live, to, dumped };
}

/** Drops, after the test, every database named after `live` that the swap left (the old one, a copy). */
function dropFamilyAfter(t: Parameters<typeof dropAfter>[0], live: string) {
  t.after(async () => {
    for (const d of await family(live)) await sql('postgres', `DROP DATABASE IF EXISTS "${d}" WITH (FORCE)`).catch(() => undefined);
  });
}

describe('restore --swap', () => {
  it('restores beside the live database, checks, renames; the old one is kept and the swap-back SQL works', { timeout: 240_000 }, async (t) => {
    const { live, to, role } = await liveAfterBackup(t, 'h26swap');
    dropFamilyAfter(t, live);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--swap', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.match(out.previous, new RegExp(`^${live}_before_\\d{8}T\\d{6}Z$`));
    assert.deepEqual(await family(live), [live, out.previous]);
    assert.deepEqual(await counts(live), { orders: 300, audit: 25 }, 'the live name holds the backup');
    assert.deepEqual(await counts(out.previous), { orders: 300, audit: 5 }, 'the old database is kept as it was');
    assert.equal(out.restore.checks.ok, true);
    // The database's own settings, comment and grants came along.
    const [props] = await sql(
      'postgres',
      `SELECT shobj_description(d.oid, 'pg_database') AS comment, has_database_privilege('${role}', d.oid, 'CONNECT') AS connect,
              (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0) AS settings
         FROM pg_database d WHERE datname = '${live}'`,
    );
    assert.deepEqual(props, { comment: 'the shop', connect: true, settings: ['work_mem=7MB'] });
    assert.match(r.stderr, /to swap back, run this SQL:/);
    // The swap back, as printed.
    await sql('postgres', out.swapBackSql);
    assert.deepEqual(await counts(live), { orders: 300, audit: 5 }, 'swapped back: the old data under the live name');
    assert.deepEqual(await family(live), [live, out.restoredAs]);
  });

  it('a session on the live database refuses the swap, naming its pid; nothing changes', { timeout: 240_000 }, async (t) => {
    const { live, to } = await liveAfterBackup(t, 'h26sess');
    dropFamilyAfter(t, live);
    const holder = new pg.Client({ connectionString: dbUrl(live), application_name: 'h26-holder' });
    holder.on('error', () => undefined);
    await holder.connect();
    t.after(() => holder.end().catch(() => undefined));
    const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--swap']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`restore refused, nothing was changed .*1 other session is connected to ${live}: pid ${pid} \\("h26-holder", user postgres, from 127\\.0\\.0\\.1\\).*--terminate-sessions`));
    assert.deepEqual(await family(live), [live]);
    assert.deepEqual(await counts(live), { orders: 300, audit: 5 });
    assert.equal((await holder.query('SELECT 1 AS one')).rows[0].one, 1, 'the session is left alone');
  });

  it('--terminate-sessions ends the sessions on the live database and switches; the old one accepts connections again', { timeout: 240_000 }, async (t) => {
    const { live, to } = await liveAfterBackup(t, 'h26term');
    dropFamilyAfter(t, live);
    const holder = new pg.Client({ connectionString: dbUrl(live), application_name: 'h26-holder' });
    holder.on('error', () => undefined); // the terminated session reports its end here
    await holder.connect();
    t.after(() => holder.end().catch(() => undefined));
    const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--swap', '--terminate-sessions', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.terminated.map((s: { pid: number }) => s.pid), [pid]);
    await assert.rejects(holder.query('SELECT 1'), 'the held session was ended');
    assert.deepEqual(await counts(live), { orders: 300, audit: 25 });
    const [allow] = await sql('postgres', `SELECT datallowconn FROM pg_database WHERE datname = '${out.previous}'`);
    assert.equal(allow!.datallowconn, true);
  });

  it('checks that fail drop the new database and leave the live one untouched (exit 1)', { timeout: 240_000 }, async (t) => {
    const { live, to, dumped } = await liveAfterBackup(t, 'h26bad');
    dropFamilyAfter(t, live);
    await falsifyRowCount(to, dumped.manifestKey, 'public', 'audit', 24);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(live), '--swap']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /row count of public\.audit in the archive is 25, the manifest says 24; pg_restore was stopped before its commit/);
    assert.match(r.stderr, new RegExp(`dropped ${live}_restore_\\d{8}T\\d{6}Z \\(its checks failed\\); ${live} is untouched`));
    assert.deepEqual(await family(live), [live]);
    assert.deepEqual(await counts(live), { orders: 300, audit: 5 });
  });

  it('a role without CREATEDB is refused in one line before anything is created', { timeout: 240_000 }, async (t) => {
    const { live, to } = await liveAfterBackup(t, 'h26nocdb');
    dropFamilyAfter(t, live);
    const user = `h26rstu_${Math.random().toString(16).slice(2, 10)}`;
    await sql('postgres', `CREATE ROLE ${user} LOGIN PASSWORD 'pw-${user}'; GRANT CONNECT ON DATABASE "${live}" TO ${user}`);
    t.after(async () => {
      await sql(live, `DROP OWNED BY ${user}`).catch(() => undefined);
      await sql('postgres', `DROP OWNED BY ${user}; DROP ROLE IF EXISTS ${user}`).catch(() => undefined);
    });
    const u = new URL(dbUrl(live));
    u.username = user;
    u.password = `pw-${user}`;
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', u.href, '--swap']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`role ${user} may not create databases \\(CREATE DATABASE needs CREATEDB\\)`));
    assert.doesNotMatch(r.stderr, /pw-/);
    assert.deepEqual(await family(live), [live]);
  });

  it('bad combinations and a live name too long for the stamped names: exit 2, one line, nothing created', { timeout: 60_000 }, async () => {
    const to = 'file:///nonexistent-h26';
    const url = dbUrl('app');
    for (const [args, message] of [
      [['--swap', '--table', 'public.orders'], /--swap restores the whole backup into a new database and switches: it does not take --clean, --table or --schema/],
      [['--swap', '--clean'], /it does not take --clean/],
      [['--terminate-sessions'], /--terminate-sessions goes with --swap/],
    ] as const) {
      const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', url, ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, message);
    }
    const long = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl('a'.repeat(45)), '--swap']);
    assert.equal(long.code, 2, long.stderr);
    assert.match(long.stderr, /--swap names the old database a{45}_before_\d{8}T\d{6}Z, longer than PostgreSQL's 63 bytes: the live database's name may have at most 39 bytes/);
  });
});
