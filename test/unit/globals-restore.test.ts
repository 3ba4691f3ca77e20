// Globals SQL (pg_dumpall --globals-only) as untrusted input: what is taken, what is refused,
// and what is left out for roles and tablespaces that already exist. The real restore is
// covered against real servers in test/integration/server-restore.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CheckFailedError } from '../../src/errors.ts';
import { GLOBALS_TRAILER, parseGlobalsSql, planGlobals } from '../../src/postgres/globals-restore.ts';
import { comparePrivileges, referencedRoles, type Privileges } from '../../src/postgres/privileges.ts';

const dump = (body: string) => `--\n-- PostgreSQL database cluster dump\n--\n\n\\restrict abc123\n\nSET default_transaction_read_only = off;\n\n${body}\n\\unrestrict abc123\n\n--\n${GLOBALS_TRAILER}\n--\n\n`;

const SAMPLE = dump(`CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x==$y=:z=';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "Odd;Name";
ALTER ROLE "Odd;Name" WITH NOLOGIN;
COMMENT ON ROLE app_owner IS 'owns; the
application';
ALTER ROLE app_owner SET search_path TO 'app', 'public';
GRANT app_owner TO postgres GRANTED BY postgres;
GRANT app_owner TO "Odd;Name" WITH INHERIT TRUE GRANTED BY postgres;
GRANT SET ON PARAMETER work_mem TO app_owner;
CREATE TABLESPACE fast OWNER app_owner LOCATION '/srv/it''s fast';
GRANT CREATE ON TABLESPACE fast TO "Odd;Name";`);

describe('globals SQL', () => {
  it('takes every statement pg_dumpall --globals-only writes, quoted names and multi-line strings included', () => {
    const st = parseGlobalsSql(SAMPLE);
    assert.deepEqual(st.map((s) => [s.kind, s.subject ?? '', s.creates ?? false]), [
      ['set', '', false],
      ['role', 'app_owner', true],
      ['role', 'app_owner', false],
      ['role', 'postgres', true],
      ['role', 'postgres', false],
      ['role', 'Odd;Name', true],
      ['role', 'Odd;Name', false],
      ['role', 'app_owner', false],
      ['role', 'app_owner', false],
      ['membership', 'postgres', false],
      ['membership', 'Odd;Name', false],
      ['parameter', '', false],
      ['tablespace', 'fast', true],
      ['tablespace', 'fast', false],
    ]);
    assert.equal(st.find((s) => s.creates && s.kind === 'tablespace')!.location, "/srv/it's fast");
    assert.equal(st[8]!.line, 17, 'lines are counted through the multi-line comment');
  });

  it('keeps existing roles as they are: no CREATE, ALTER or membership for them, and lists them', () => {
    const plan = planGlobals(parseGlobalsSql(SAMPLE), { roles: new Set(['postgres']), tablespaces: new Set(['pg_default']) }, (name) => `/drill/${name}`);
    assert.deepEqual(plan.keptRoles, ['postgres']);
    assert.deepEqual(plan.createRoles, ['app_owner', 'Odd;Name']);
    assert.deepEqual(plan.skippedMemberships, ['app_owner → postgres']);
    assert.ok(!plan.statements.some((s) => /ROLE postgres/.test(s.sql)), 'postgres is never altered');
    assert.deepEqual(plan.createTablespaces, [{ name: 'fast', location: '/drill/fast' }]);
    assert.ok(plan.statements.some((s) => s.sql === `CREATE TABLESPACE "fast" OWNER app_owner LOCATION '/drill/fast';`));
  });

  it('an existing tablespace is kept, with its grants left out', () => {
    const plan = planGlobals(parseGlobalsSql(SAMPLE), { roles: new Set(), tablespaces: new Set(['fast']) });
    assert.deepEqual(plan.keptTablespaces, ['fast']);
    assert.ok(!plan.statements.some((s) => s.kind === 'tablespace'));
  });

  for (const [what, body, message] of [
    ['a shell escape', 'CREATE ROLE a;\n\\! touch /tmp/pwned\n', /psql meta-command "\\\\! touch \/tmp\/pwned" at line/],
    ['a second connection', '\\connect other\n', /meta-command/],
    ['an \\unrestrict with backquotes', '\\unrestrict `id`\n', /meta-command/],
    ['SQL that is not globals', "CREATE ROLE a;\nCOPY (SELECT 1) TO PROGRAM 'id';\n", /statement pg_dumpall --globals-only does not write, at line \d+: "COPY/],
    ['a DO block', "DO $$BEGIN PERFORM 1; END$$;\n", /does not write/],
    ['a function call hidden in a role statement', "CREATE ROLE a; SELECT pg_sleep(1);\n", /does not write/],
    ['an unterminated string', "COMMENT ON ROLE a IS 'x;\n", /unterminated string/],
  ] as const) {
    it(`refuses ${what}, nothing of it runs`, () => {
      assert.throws(() => parseGlobalsSql(dump(body)), (err: unknown) => err instanceof CheckFailedError && message.test(err.message) && /nothing of it ran/.test(err.message));
    });
  }

  it('refuses SQL without pg_dumpall\'s completion line (a truncated object)', () => {
    assert.throws(() => parseGlobalsSql('CREATE ROLE a;\n'), /does not end with "-- PostgreSQL database cluster dump complete": the object is truncated/);
  });
});

const base = (): Privileges => ({
  database: { owner: 'app_owner', grants: ['app_reader CONNECT (by app_owner)'], settings: ['work_mem=12MB'] },
  roleSettings: { app_reader: ['statement_timeout=5s'] },
  owners: { 'table app.orders': 'app_owner', 'schema app': 'app_owner' },
  grants: { 'table app.orders': ['app_reader SELECT (by app_owner)'] },
  defaultPrivileges: { 'for role app_owner in schema app on tables': ['app_reader SELECT (by app_owner)'] },
  rowSecurity: { 'table app.orders': { enabled: true, forced: false, policies: ['small (SELECT, permissive, to app_group)'] } },
});

describe('privileges record', () => {
  it('the same record has no differences', () => {
    assert.deepEqual(comparePrivileges(base(), base()), []);
  });

  it('names each difference in plain words', () => {
    const after = base();
    after.owners['table app.orders'] = 'postgres';
    after.grants['table app.orders'] = [];
    after.grants['schema app'] = ['PUBLIC CREATE (by app_owner)'];
    after.defaultPrivileges = {};
    after.rowSecurity['table app.orders'] = { enabled: false, forced: false, policies: [] };
    after.database.settings = [];
    after.roleSettings = {};
    delete after.owners['schema app'];
    assert.deepEqual(comparePrivileges(base(), after), [
      'setting work_mem=12MB on the database is missing after the restore',
      'setting statement_timeout=5s on role app_reader in the database is missing after the restore',
      'owner of table app.orders is postgres, the dump recorded app_owner',
      'schema app is missing after the restore (owner app_owner recorded)',
      'grant app_reader SELECT (by app_owner) on table app.orders is missing after the restore',
      'grant app_reader SELECT (by app_owner) on default privileges for role app_owner in schema app on tables is missing after the restore',
      'row-level security on table app.orders is disabled after the restore, the dump recorded it enabled',
      'policy small (SELECT, permissive, to app_group) on table app.orders is missing after the restore',
    ]);
  });

  it('a restore into an existing database is not held to the database\'s own properties', () => {
    const after = base();
    after.database = { owner: 'postgres', grants: [], settings: [] };
    after.roleSettings = {};
    assert.deepEqual(comparePrivileges(base(), after, { database: false }), []);
    assert.equal(comparePrivileges(base(), after).length, 4);
  });

  it('lists the roles a record needs', () => {
    assert.deepEqual(referencedRoles(base()), ['app_group', 'app_owner', 'app_reader']);
  });
});
