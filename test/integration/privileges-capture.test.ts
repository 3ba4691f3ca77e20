// The privileges capture (src/postgres/privileges.ts: one statement) on every supported server
// major (12–18: 15 installed, the others the embedded servers of the download cache, as
// majors.test.ts fetches them): a database with every kind of object the capture records —
// schemas (one with a quoted name), tables, a partitioned table, views, a materialized view,
// sequences, a foreign table, functions with arguments and overloads, a procedure, an aggregate,
// a domain, an enum, a composite and a range type, column grants, grants with grant option,
// rights the owner revoked from itself, default privileges (per schema and global), RLS enabled
// and forced with permissive and restrictive policies, database and per-role settings, a
// database ACL, an extension's members (left out) — must give exactly what the former
// six-query capture (test/infra/privileges-reference.ts) gives, hold the values written here,
// and read the caller's snapshot inside its transaction.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startThrowawayCluster, type ThrowawayCluster } from '../../src/postgres/cluster.ts';
import { withDatabase } from '../../src/postgres/connection.ts';
import { capturePrivileges, type Privileges } from '../../src/postgres/privileges.ts';
import { connect } from '../../src/postgres/server.ts';
import { capturePrivilegesReference } from '../infra/privileges-reference.ts';

const MAJORS = [12, 13, 14, 15, 16, 17, 18];

const GLOBAL_SQL = [
  'CREATE ROLE cap_owner',
  'CREATE ROLE cap_reader',
  'CREATE ROLE cap_group',
  'CREATE ROLE cap_other',
  'CREATE ROLE "cap role ""x"""',
  'CREATE DATABASE capdb OWNER cap_owner',
  "ALTER DATABASE capdb SET work_mem = '12MB'",
  "ALTER DATABASE capdb SET search_path = app, public",
  "ALTER ROLE cap_reader IN DATABASE capdb SET statement_timeout = '5s'",
  "ALTER ROLE cap_group IN DATABASE capdb SET lock_timeout = '1s'",
  'REVOKE CONNECT ON DATABASE capdb FROM PUBLIC',
  'GRANT CONNECT, TEMP ON DATABASE capdb TO cap_reader WITH GRANT OPTION',
];

const DATABASE_SQL = `
CREATE SCHEMA app AUTHORIZATION cap_owner;
CREATE SCHEMA "Odd ""Schema""" AUTHORIZATION cap_other;
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citext') THEN CREATE EXTENSION citext SCHEMA app; END IF; END $$;
CREATE FOREIGN DATA WRAPPER cap_fdw;
CREATE SERVER cap_server FOREIGN DATA WRAPPER cap_fdw;
CREATE FOREIGN TABLE app.remote (a int) SERVER cap_server;
ALTER FOREIGN TABLE app.remote OWNER TO cap_owner;
GRANT SELECT ON app.remote TO cap_reader;
SET ROLE cap_owner;
GRANT USAGE ON SCHEMA app TO cap_group WITH GRANT OPTION;
CREATE TABLE app.orders (id bigserial PRIMARY KEY, code int GENERATED ALWAYS AS IDENTITY, customer text NOT NULL, amount numeric NOT NULL);
CREATE TABLE app.events (at date NOT NULL, note text) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE UNLOGGED TABLE app.scratch (x int);
CREATE VIEW app.big_orders AS SELECT * FROM app.orders WHERE amount > 100;
CREATE MATERIALIZED VIEW app.totals AS SELECT customer, sum(amount) AS total FROM app.orders GROUP BY customer;
CREATE SEQUENCE app.invoice_no;
GRANT SELECT (id), UPDATE (customer) ON app.orders TO cap_reader;
GRANT SELECT ON app.orders TO cap_group WITH GRANT OPTION;
GRANT ALL ON app.big_orders TO "cap role ""x""";
REVOKE SELECT ON app.totals FROM cap_owner;
GRANT USAGE ON SEQUENCE app.invoice_no TO cap_reader;
GRANT SELECT, INSERT ON app.events TO cap_group;
CREATE FUNCTION app.total() RETURNS numeric LANGUAGE sql AS 'SELECT sum(amount) FROM app.orders';
CREATE FUNCTION app.add(a integer, b integer) RETURNS integer LANGUAGE sql AS 'SELECT a + b';
CREATE FUNCTION app.add(numeric, numeric) RETURNS numeric LANGUAGE sql AS 'SELECT $1 + $2';
CREATE FUNCTION app.pick(IN x int, OUT y text, VARIADIC z int[] DEFAULT '{}') LANGUAGE sql AS 'SELECT x::text';
CREATE PROCEDURE app.touch(n int) LANGUAGE sql AS 'SELECT 1';
CREATE AGGREGATE app.summed(int) (SFUNC = int4pl, STYPE = int);
REVOKE EXECUTE ON FUNCTION app.total() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.total() TO cap_reader;
GRANT EXECUTE ON PROCEDURE app.touch(int) TO cap_group;
CREATE DOMAIN app.posint AS int CHECK (VALUE > 0);
CREATE TYPE app.mood AS ENUM ('sad', 'ok');
CREATE TYPE app.pair AS (a int, b text);
CREATE TYPE app.span AS RANGE (subtype = float8);
REVOKE USAGE ON TYPE app.mood FROM PUBLIC;
GRANT USAGE ON DOMAIN app.posint TO cap_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO cap_reader;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO cap_group;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE USAGE ON TYPES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT USAGE ON SEQUENCES TO cap_group;
ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO cap_reader;
ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.events FORCE ROW LEVEL SECURITY;
CREATE POLICY small_orders ON app.orders FOR SELECT TO cap_group, cap_reader USING (amount < 100);
CREATE POLICY no_big ON app.orders AS RESTRICTIVE FOR ALL USING (amount < 1000000);
CREATE POLICY own_updates ON app.orders FOR UPDATE TO cap_reader USING (true);
CREATE POLICY recent ON app.events FOR INSERT TO PUBLIC WITH CHECK (at > '2024-01-01');
CREATE TABLE app.policy_only (x int);
CREATE POLICY lone ON app.policy_only FOR DELETE USING (x > 0);
RESET ROLE;
CREATE TABLE "Odd ""Schema"""."T ""1""" ("c ""1""" int);
GRANT SELECT ("c ""1""") ON "Odd ""Schema"""."T ""1""" TO cap_reader;
ALTER TABLE "Odd ""Schema"""."T ""1""" OWNER TO cap_other;`;

describe('privileges capture: one statement, the same record as the six queries, on every major', { timeout: 600_000 }, () => {
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'pgb-capture-'));
    await chmod(scratch, 0o755); // the clusters live here and run as the cluster user
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  for (const major of MAJORS) {
    it(`PostgreSQL ${major}: every kind of object, equal to the reference, in the caller's snapshot`, async () => {
      const cluster: ThrowawayCluster = await startThrowawayCluster({ minMajor: major, major, workDir: scratch });
      try {
        const admin = await connect(cluster.connection, 'capture test');
        try {
          for (const s of GLOBAL_SQL) await admin.query(s);
        } finally {
          await admin.end();
        }
        const client = await connect(withDatabase(cluster.connection, 'capdb'), 'capture test');
        try {
          await client.query(DATABASE_SQL);
          const got = await capturePrivileges(client);
          assert.deepEqual(got, await capturePrivilegesReference(client), 'the same record as the former six queries');
          expectFixture(got, major);

          // Inside a transaction, the capture reads its snapshot (the dump's): a grant committed
          // by another session meanwhile is not in it; after the transaction it is.
          await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
          const first = await capturePrivileges(client);
          const other = await connect(withDatabase(cluster.connection, 'capdb'), 'capture test');
          await other.query('GRANT SELECT ON app.scratch TO cap_group').finally(() => other.end());
          assert.deepEqual(await capturePrivileges(client), first, 'the same snapshot inside the transaction');
          await client.query('COMMIT');
          const later = await capturePrivileges(client);
          assert.deepEqual(later.grants['table app.scratch'], ['cap_group SELECT (by cap_owner)']);
          assert.deepEqual(later, await capturePrivilegesReference(client));
        } finally {
          await client.end();
        }
      } finally {
        await cluster.stop();
      }
    });
  }
});

/** The values the fixture must give, written out (so equality with the reference is not all this test checks). */
function expectFixture(p: Privileges, major: number): void {
  assert.equal(p.database.owner, 'cap_owner');
  assert.deepEqual(p.database.settings, ['search_path=app, public', 'work_mem=12MB']);
  assert.deepEqual(p.database.grants, [
    'cap_reader CONNECT WITH GRANT OPTION (by cap_owner)',
    'cap_reader TEMPORARY WITH GRANT OPTION (by cap_owner)',
    'revoked: PUBLIC CONNECT (by cap_owner)',
  ]);
  assert.deepEqual(p.roleSettings, { cap_group: ['lock_timeout=1s'], cap_reader: ['statement_timeout=5s'] });
  for (const [key, owner] of Object.entries({
    'schema app': 'cap_owner',
    'schema "Odd ""Schema"""': 'cap_other',
    'table app.orders': 'cap_owner',
    'table app.events': 'cap_owner',
    'table app.events_2024': 'cap_owner',
    'table app.scratch': 'cap_owner',
    'view app.big_orders': 'cap_owner',
    'materialized view app.totals': 'cap_owner',
    'sequence app.invoice_no': 'cap_owner',
    'sequence app.orders_id_seq': 'cap_owner',
    'sequence app.orders_code_seq': 'cap_owner',
    'foreign table app.remote': 'cap_owner',
    'function app.total()': 'cap_owner',
    'function app.add(a integer, b integer)': 'cap_owner',
    'function app.add(numeric, numeric)': 'cap_owner',
    'aggregate app.summed(integer)': 'cap_owner',
    'domain app.posint': 'cap_owner',
    'type app.mood': 'cap_owner',
    'type app.pair': 'cap_owner',
    'type app.span': 'cap_owner',
    'table "Odd ""Schema"""."T ""1"""': 'cap_other',
  })) {
    assert.equal(p.owners[key], owner, `owner of ${key}`);
  }
  // pg_get_function_identity_arguments' spelling of OUT and IN arguments changed over the majors (14).
  const key = (re: RegExp) => Object.keys(p.owners).filter((k) => re.test(k));
  assert.equal(key(/^function app\.pick\(x integer, (OUT y text, )?VARIADIC z integer\[\]\)$/).length, 1, 'function app.pick');
  const touch = key(/^procedure app\.touch\((IN )?n integer\)$/);
  assert.equal(touch.length, 1, 'procedure app.touch');
  assert.equal(p.owners[touch[0]!], 'cap_owner');
  assert.deepEqual(p.grants[touch[0]!], ['cap_group EXECUTE (by cap_owner)']);
  // Not captured: the catalogs' own objects, the row types of tables, array types, the extension's members.
  assert.equal(Object.keys(p.owners).filter((k) => /^(type|function) app\.(orders|_mood|citext)|pg_catalog|information_schema/.test(k)).length, 0, Object.keys(p.owners).join(', '));
  if (major >= 14) assert.equal(p.owners['type app.span_multirange'], undefined, 'a multirange follows its range');
  assert.deepEqual(p.grants['column app.orders.id'], ['cap_reader SELECT (by cap_owner)']);
  assert.deepEqual(p.grants['column app.orders.customer'], ['cap_reader UPDATE (by cap_owner)']);
  assert.deepEqual(p.grants['column "Odd ""Schema"""."T ""1"""."c ""1"""'], ['cap_reader SELECT (by cap_other)']);
  assert.deepEqual(p.grants['table app.orders'], ['cap_group SELECT WITH GRANT OPTION (by cap_owner)']);
  assert.deepEqual(p.grants['schema app'], ['cap_group USAGE WITH GRANT OPTION (by cap_owner)']);
  assert.deepEqual(p.grants['function app.total()'], ['cap_reader EXECUTE (by cap_owner)', 'revoked: PUBLIC EXECUTE (by cap_owner)']);
  assert.deepEqual(p.grants['type app.mood'], ['revoked: PUBLIC USAGE (by cap_owner)']);
  assert.deepEqual(p.grants['domain app.posint'], ['cap_reader USAGE (by cap_owner)']);
  assert.deepEqual(p.grants['sequence app.invoice_no'], ['cap_reader USAGE (by cap_owner)']);
  assert.deepEqual(p.grants['materialized view app.totals'], ['revoked: cap_owner SELECT (by cap_owner)']);
  assert.ok(p.grants['view app.big_orders']!.includes('cap role "x" SELECT (by cap_owner)'), p.grants['view app.big_orders']!.join('; '));
  assert.deepEqual(p.grants['foreign table app.remote'], ['cap_reader SELECT (by cap_owner)']);
  assert.equal(p.grants['table app.scratch'], undefined, 'a NULL ACL (the default) has no entry');
  assert.deepEqual(p.defaultPrivileges, {
    'for role cap_owner in schema app on sequences': ['cap_group USAGE (by cap_owner)'],
    'for role cap_owner in schema app on tables': ['cap_reader SELECT (by cap_owner)'],
    'for role cap_owner on functions': ['cap_group EXECUTE (by cap_owner)', 'cap_owner EXECUTE (by cap_owner)'],
    'for role cap_owner on schemas': ['cap_owner CREATE (by cap_owner)', 'cap_owner USAGE (by cap_owner)', 'cap_reader USAGE (by cap_owner)'],
    'for role cap_owner on types': ['cap_owner USAGE (by cap_owner)'],
  });
  assert.deepEqual(p.rowSecurity, {
    'table app.events': { enabled: true, forced: true, policies: ['recent (INSERT, permissive, to PUBLIC)'] },
    'table app.orders': { enabled: true, forced: false, policies: ['no_big (ALL, restrictive, to PUBLIC)', 'own_updates (UPDATE, permissive, to cap_reader)', 'small_orders (SELECT, permissive, to cap_group, cap_reader)'] },
    'table app.policy_only': { enabled: false, forced: false, policies: ['lone (DELETE, permissive, to PUBLIC)'] },
  });
}
