// Whole-server restores on real servers (issue #25): a source cluster of the test's own with fixed
// roles (app_owner, app_reader, app_group), memberships, passwords, grants on schemas, tables,
// sequences and functions, default privileges, RLS, ALTER DATABASE … SET, ALTER ROLE … IN
// DATABASE … SET and a tablespace; a run with globals (test/infra/globals-fixture.ts); then
// drills (globals first, owners and grants kept, privileges checked; a missing role named; a
// lost grant found) and restore --server into an empty second cluster (refusal over an existing
// database, then the real restore, logging in with a restored password).
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { execa } from 'execa';
import { after, before, describe, it } from 'node:test';
import { openStorage } from '../../src/storage/index.ts';
import { parseManifest } from '../../src/backup/manifest.ts';
import { cli, runActionBundle } from '../helpers.ts';
import { dumpRun, type FixtureRun } from '../infra/globals-fixture.ts';
import { queryEach, startTcpCluster, type TcpCluster } from '../infra/tcp-cluster.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';
import { chmod } from 'node:fs/promises';
import path from 'node:path';

const q = queryEach;

const SERVICE = 'shop';
const ENV = 'prod';

describe('whole-server runs: globals, owners, grants, settings', { timeout: 600_000 }, () => {
  let source: TcpCluster;
  let target: TcpCluster;
  let to: string;
  let run: FixtureRun;
  let spaceDir: string;

  before(async () => {
    [source, target] = await Promise.all([startTcpCluster(), startTcpCluster()]);
    to = await tempLocation();
    // The tablespace's directory lies outside both clusters, as on a host whose server is rebuilt.
    const spaces = await tempDir('pgb-spaces-');
    await chmod(spaces, 0o755);
    spaceDir = path.join(spaces, 'fast');
    await mkdir(spaceDir, { mode: 0o700 });
    await execa('chown', ['postgres:postgres', spaceDir]);
    await q(source.adminUrl, `
      CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw-1';
      CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw-1';
      CREATE ROLE app_group NOLOGIN;
      CREATE ROLE app_admin SUPERUSER NOLOGIN;
      GRANT app_group TO app_reader;
      ALTER ROLE app_reader SET search_path = app, public;
      CREATE TABLESPACE fastspace OWNER app_owner LOCATION '${spaceDir}';
      CREATE DATABASE appdb OWNER app_owner;
      CREATE DATABASE otherdb;
      ALTER DATABASE appdb SET work_mem = '12MB';
      ALTER ROLE app_reader IN DATABASE appdb SET statement_timeout = '5s';
      REVOKE CONNECT ON DATABASE appdb FROM PUBLIC;
      GRANT CONNECT ON DATABASE appdb TO app_reader, app_owner;`);
    await q(source.urlOf('appdb'), `
      CREATE SCHEMA app AUTHORIZATION app_owner;
      SET ROLE app_owner;
      CREATE TABLE app.orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric NOT NULL);
      INSERT INTO app.orders (customer, amount) SELECT 'c' || g, g FROM generate_series(1, 150) g;
      CREATE TABLE app.fast (id int) TABLESPACE fastspace;
      INSERT INTO app.fast SELECT generate_series(1, 10);
      CREATE FUNCTION app.total() RETURNS numeric LANGUAGE sql AS 'SELECT sum(amount) FROM app.orders';
      REVOKE EXECUTE ON FUNCTION app.total() FROM PUBLIC;
      GRANT EXECUTE ON FUNCTION app.total() TO app_reader;
      GRANT USAGE ON SCHEMA app TO app_group;
      GRANT SELECT ON app.orders TO app_group;
      GRANT SELECT (id) ON app.fast TO app_reader;
      GRANT USAGE, SELECT ON SEQUENCE app.orders_id_seq TO app_reader;
      ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO app_reader;
      ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
      CREATE POLICY small_orders ON app.orders FOR SELECT TO app_group USING (amount < 100);`);
    await q(source.urlOf('otherdb'), `CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 7) g;`);
    run = await dumpRun({ adminUrl: source.adminUrl, urlOf: source.urlOf, databases: ['appdb', 'otherdb'], to, service: SERVICE, environment: ENV });
  });
  after(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
  });

  it('the dump records owners, grants, default privileges, RLS and settings in its snapshot', async () => {
    const storage = openStorage(to);
    const key = run.databases.find((d) => d.database === 'appdb')!.manifestKey;
    const m = parseManifest(await storage.getText(key), key);
    const p = m.privileges!;
    assert.ok(p, 'privileges recorded');
    assert.equal(p.database.owner, 'app_owner');
    assert.deepEqual(p.database.settings, ['work_mem=12MB']);
    assert.deepEqual(p.roleSettings, { app_reader: ['statement_timeout=5s'] });
    assert.equal(p.owners['table app.orders'], 'app_owner');
    assert.equal(p.owners['function app.total()'], 'app_owner');
    assert.ok(p.grants['table app.orders']!.includes('app_group SELECT (by app_owner)'));
    assert.ok(p.grants['sequence app.orders_id_seq']!.includes('app_reader USAGE (by app_owner)'));
    assert.ok(p.grants['column app.fast.id']!.includes('app_reader SELECT (by app_owner)'));
    assert.deepEqual(p.grants['function app.total()'], ['app_reader EXECUTE (by app_owner)', 'revoked: PUBLIC EXECUTE (by app_owner)'], 'only what differs from the built-in default');
    assert.deepEqual(p.database.grants, ['app_reader CONNECT (by app_owner)', 'revoked: PUBLIC CONNECT (by app_owner)']);
    assert.deepEqual(p.defaultPrivileges['for role app_owner in schema app on tables'], ['app_reader SELECT (by app_owner)']);
    assert.deepEqual(p.rowSecurity['table app.orders'], { enabled: true, forced: false, policies: ['small_orders (SELECT, permissive, to app_group)'] });
  });

  it('drill: the run\'s globals first, owners and grants kept, privileges match (CLI)', async () => {
    const key = run.databases.find((d) => d.database === 'appdb')!.manifestKey;
    const r = await cli(['drill', '--from', to, '--backup', key, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true);
    assert.deepEqual([...report.globals.created].sort(), ['app_admin', 'app_group', 'app_owner', 'app_reader']);
    assert.ok(report.globals.kept.includes('postgres'), 'the bootstrap superuser is kept as it is');
    assert.deepEqual(report.globals.tablespaces, ['fastspace']);
    assert.deepEqual(report.privileges.differences, []);
    assert.match(r.stderr, /privileges: owners, grants, default privileges, row-level security policies and database and role settings match/);
    assert.ok(report.tables.every((t: { ok: boolean }) => t.ok));
  });

  it('drill action bundle: the run\'s globals first, owners and grants kept; no-owner/no-acl inputs skip the privileges check', async () => {
    const key = run.databases.find((d) => d.database === 'appdb')!.manifestKey;
    const r = await runActionBundle('drill', { from: to, backup: key, 'issue-on-failure': 'false' });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.outputs.result, 'ok');
    assert.match(r.stdout, /globals \S+@globals-\d{8}T\d{6}Z-[0-9a-f]{6}\.sql\.zst: 4 roles created \(/);
    assert.match(r.stdout, /privileges: owners, grants, default privileges, row-level security policies and database and role settings match/);
    const loose = await runActionBundle('drill', { from: to, backup: key, 'issue-on-failure': 'false', 'no-owner': 'true', 'no-acl': 'true' });
    assert.equal(loose.code, 0, loose.stdout + loose.stderr);
    assert.match(loose.stdout, /privileges not checked: restored with --no-owner\/--no-acl/);
  });

  it('drill: a grant lost by the restore is a difference, exit 1 naming it', async () => {
    // The record says app_reader may DELETE from app.orders; the restored database does not grant it.
    const storage = openStorage(to);
    const key = run.databases.find((d) => d.database === 'appdb')!.manifestKey;
    const text = await storage.getText(key);
    const m = JSON.parse(text);
    m.privileges.grants['table app.orders'].push('app_reader DELETE (by app_owner)');
    m.privileges.grants['table app.orders'].sort();
    await storage.put(key, JSON.stringify(m, null, 2), { contentType: 'application/json' });
    try {
      const r = await cli(['drill', '--from', to, '--backup', key]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /drill failed: privileges: grant app_reader DELETE \(by app_owner\) on table app\.orders is missing after the restore/);
    } finally {
      await storage.put(key, text, { contentType: 'application/json' });
    }
  });

  it('drill: a run without globals fails on the missing roles, naming them', async () => {
    const loc = await tempLocation();
    const bare = await dumpRun({ adminUrl: source.adminUrl, urlOf: source.urlOf, databases: ['appdb'], to: loc, service: SERVICE, environment: ENV, globals: false });
    const r = await cli(['drill', '--from', loc, '--backup', bare.databases[0]!.manifestKey]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /drill failed: database appdb cannot be restored with its owners and grants: roles "app_group", "app_owner", "app_reader" do not exist on the target and the backup's run has no globals: dump with globals/);
    // --no-owner --no-acl is the way out, as before.
    const loose = await cli(['drill', '--from', loc, '--backup', bare.databases[0]!.manifestKey, '--no-owner', '--no-acl']);
    assert.equal(loose.code, 0, loose.stderr);
    assert.match(loose.stderr, /privileges not checked: restored with --no-owner\/--no-acl/);
  });

  it('drill --server: the whole run into one throwaway cluster, each database checked, one record', async () => {
    const r = await cli(['drill', '--server', '--from', to, '--service', SERVICE, '--environment', ENV, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true);
    assert.equal(report.runId, run.runId);
    assert.deepEqual(report.databases.map((d: { database: string; ok: boolean }) => [d.database, d.ok]), [['appdb', true], ['otherdb', true]]);
    assert.deepEqual(report.databases[0].privilegeDifferences, []);
    assert.match(report.drillReportUri, /\/drills\/shop\/prod\/(?:%40|%2540)server\/\d{4}-Q\d\/run-\d{8}T\d{6}Z-[0-9a-f]{6}-drill-[^/]+\.json$/);
    const storage = openStorage(to);
    const stored = JSON.parse(await storage.getText(storage.keyOf(report.drillReportUri)!));
    assert.equal(stored.ok, true);
    assert.match(await storage.getText(storage.keyOf(report.drillLogUri)!), /server restore drill OK\n$/);
  });

  it('restore --server refuses a target that holds one of the run\'s databases, changing nothing', async () => {
    await q(target.adminUrl, 'CREATE DATABASE otherdb');
    try {
      const r = await cli(['restore', '--server', '--from', to, '--service', SERVICE, '--environment', ENV, '--target-url', target.adminUrl]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /restore --server refused, nothing was changed on .*: the run's database otherdb already exists there/);
      const roles = await q(target.adminUrl, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'app_%'");
      assert.deepEqual(roles, [], 'no role was created');
    } finally {
      await q(target.adminUrl, 'DROP DATABASE otherdb');
    }
  });

  it('restore --server as a role that may not create superusers: the refused role is named with what to do, no database restored', async () => {
    await q(target.adminUrl, "CREATE ROLE restorer LOGIN CREATEROLE CREATEDB PASSWORD 'restorer-pw'");
    try {
      const r = await cli(['restore', '--server', '--from', to, '--service', SERVICE, '--environment', ENV, '--target-url', target.tcpUrl('restorer', 'restorer-pw', 'postgres')]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /the target refused part of the run's globals, so no database was restored .*the target refused to give the attributes \(or password\) of role app_admin: must be superuser[^;]*; create app_admin yourself with what this server allows/);
      assert.doesNotMatch(r.stderr, /reader-pw|SCRAM-SHA-256\$/, 'no password hash in any message');
      assert.deepEqual(await q(target.adminUrl, "SELECT datname FROM pg_database WHERE datname IN ('appdb', 'otherdb')"), []);
    } finally {
      await q(target.adminUrl, `SELECT 1;
        DROP TABLESPACE IF EXISTS fastspace;
        DROP ROLE IF EXISTS app_admin;
        DROP ROLE IF EXISTS app_reader;
        DROP ROLE IF EXISTS app_group;
        DROP ROLE IF EXISTS app_owner;
        DROP ROLE restorer`);
    }
  });

  it('restore --server: the server is gone, an empty one is filled from the bucket; the roles log in with their passwords', async () => {
    // The source server is gone: its tablespace directory is empty again for the new server (same host here).
    await source.stop();
    await rm(spaceDir, { recursive: true, force: true });
    await mkdir(spaceDir, { mode: 0o700 });
    await execa('chown', ['postgres:postgres', spaceDir]);
    const r = await cli(['restore', '--server', '--from', to, '--service', SERVICE, '--environment', ENV, '--target-url', target.adminUrl, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.ok, true);
    assert.equal(result.runId, run.runId);
    assert.deepEqual(result.databases.map((d: { database: string; ok: boolean }) => [d.database, d.ok]), [['appdb', true], ['otherdb', true]]);
    assert.ok(result.globals.kept.includes('postgres'));
    assert.match(r.stderr, /roles that already existed, kept as they are \(not altered\): postgres/);
    // A restored role logs in over TCP with its password (SCRAM) and sees what its grants and policies allow.
    const reader = target.tcpUrl('app_reader', 'reader-pw-1', 'appdb');
    const [row] = await q<{ n: string; total: string; wm: string; st: string; sp: string }>(reader, "SELECT count(*)::text AS n, app.total()::text AS total, current_setting('work_mem') AS wm, current_setting('statement_timeout') AS st, current_setting('search_path') AS sp FROM app.orders");
    // app.total() runs as its caller: the policy shows it the 99 small orders (1 + … + 99).
    assert.deepEqual(row, { n: '99', total: '4950', wm: '12MB', st: '5s', sp: 'app, public' });
    await assert.rejects(q(target.tcpUrl('app_reader', 'wrong', 'appdb'), 'SELECT 1'), /password authentication failed/);
    const [owner] = await q<{ owner: string; space: string }>(target.adminUrl, "SELECT pg_get_userbyid(datdba) AS owner, (SELECT spcname FROM pg_tablespace t JOIN pg_class c ON c.reltablespace = t.oid WHERE c.relname = 'fast') AS space FROM pg_database WHERE datname = 'appdb'");
    assert.equal(owner!.owner, 'app_owner');
    const [fast] = await q<{ space: string | null }>(target.urlOf('appdb'), "SELECT (SELECT spcname FROM pg_tablespace t WHERE t.oid = c.reltablespace) AS space FROM pg_class c WHERE c.relname = 'fast'");
    assert.equal(fast!.space, 'fastspace');
    const [member] = await q<{ m: boolean }>(target.adminUrl, "SELECT pg_has_role('app_reader', 'app_group', 'MEMBER') AS m");
    assert.equal(member!.m, true);
    const notes = await q<{ n: string }>(target.urlOf('otherdb'), 'SELECT count(*)::text AS n FROM notes');
    assert.equal(notes[0]!.n, '7');
  });
});
