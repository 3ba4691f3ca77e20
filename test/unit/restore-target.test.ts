// Unit checks of the pure parts of src/postgres/target.ts: the TOC parser, the lock estimate and
// the attribution of pg_restore/psql failures. The behaviours themselves are tested against a real
// PostgreSQL in test/integration/restore-safety.test.ts; these pin the parsing of real output.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyRestoreFailure, describeContents, estimateLocks, parseToc } from '../../src/postgres/target.ts';

// `pg_restore --list` of a PostgreSQL 15 custom archive (trimmed).
const TOC = `;
; Archive created at 2026-12-02 09:23:02 UTC
;     dbname: src
;
7; 2615 16385 SCHEMA - audit postgres
2; 3079 16405 EXTENSION - pgcrypto 
3403; 0 0 COMMENT - EXTENSION pgcrypto 
885; 1247 16401 TYPE public mood postgres
220; 1255 16399 FUNCTION public f(integer, integer) postgres
219; 1259 16442 TABLE audit e postgres
217; 1259 16387 TABLE public orders app_owner
216; 1259 16386 SEQUENCE public orders_id_seq postgres
3404; 0 0 SEQUENCE OWNED BY public orders_id_seq postgres
218; 1259 16395 VIEW public v postgres
3247; 2604 16390 DEFAULT public orders id postgres
3395; 0 16387 TABLE DATA public orders postgres
3249; 2606 16394 CONSTRAINT public orders orders_pkey postgres
3250; 2606 16445 FK CONSTRAINT audit e e_x_fkey postgres
`;

describe('restore target helpers', () => {
  it('parses pg_restore --list: multi-word types, names with spaces, empty owners', () => {
    const toc = parseToc(TOC);
    assert.equal(toc.length, 14);
    assert.deepEqual(toc[0], { dumpId: 7, desc: 'SCHEMA', schema: undefined, name: 'audit', owner: 'postgres' });
    assert.deepEqual(toc[1], { dumpId: 2, desc: 'EXTENSION', schema: undefined, name: 'pgcrypto', owner: '' });
    assert.deepEqual(toc[4], { dumpId: 220, desc: 'FUNCTION', schema: 'public', name: 'f(integer, integer)', owner: 'postgres' });
    assert.deepEqual(toc[6], { dumpId: 217, desc: 'TABLE', schema: 'public', name: 'orders', owner: 'app_owner' });
    assert.deepEqual(toc[8]!.desc, 'SEQUENCE OWNED BY');
    assert.deepEqual(toc[10], { dumpId: 3247, desc: 'DEFAULT', schema: 'public', name: 'orders id', owner: 'postgres' });
    assert.deepEqual(toc[11]!.desc, 'TABLE DATA');
    assert.deepEqual(toc[13], { dumpId: 3250, desc: 'FK CONSTRAINT', schema: 'audit', name: 'e e_x_fkey', owner: 'postgres' });
  });

  it('reads schema names with spaces from the archive\'s SCHEMA entries', () => {
    const toc = parseToc('5; 2615 16385 SCHEMA - sch ë postgres\n210; 1259 16387 TABLE sch ë we\'ird "tåble" `ls` postgres\n');
    assert.deepEqual(toc[0], { dumpId: 5, desc: 'SCHEMA', schema: undefined, name: 'sch ë', owner: 'postgres' });
    assert.deepEqual(toc[1], { dumpId: 210, desc: 'TABLE', schema: 'sch ë', name: 'we\'ird "tåble" `ls`', owner: 'postgres' });
  });

  it('estimates the locks of one transaction: 3 per table, 1 per other object, twice that again for what --clean drops', () => {
    const toc = parseToc(TOC);
    // 2 tables × 3 + schema, extension, type, function, sequence, view, constraint = 13.
    assert.equal(estimateLocks(toc, 0), 13);
    assert.equal(estimateLocks(toc, 1), 39);
    assert.equal(estimateLocks(toc, 0.5), 26);
  });

  it('describes what a target holds in one line', () => {
    assert.equal(
      describeContents({ table: 2, view: 1, 'materialized view': 2, schema: 1, sequence: 1 }, [{ kind: 'table', name: 'public.a' }, { kind: 'table', name: 'public.b' }, { kind: 'view', name: 'public.v' }, { kind: 'schema', name: 's' }]),
      '2 tables, 1 view, 2 materialized views, 1 schema and 1 sequence (public.a, public.b, public.v, …)',
    );
  });

  const cases: [string, string, 'target' | 'archive', RegExp][] = [
    [
      'a dependent view',
      'pg_restore: error: could not execute query: ERROR:  cannot drop table public.orders because other objects depend on it\nDETAIL:  view public.w depends on table public.orders\nHINT:  Use DROP ... CASCADE to drop the dependent objects too.\nCommand was: DROP TABLE IF EXISTS public.orders;\n',
      'target',
      /cannot drop table public\.orders because other objects depend on it \(view public\.w depends on table public\.orders\): drop the dependent objects first/,
    ],
    [
      'ALTER OWNER without membership',
      'pg_restore: error: could not execute query: ERROR:  must be member of role "postgres"\nCommand was: ALTER TABLE public.orders OWNER TO postgres;\n',
      'target',
      /the restoring role lacks a right in the target: must be member of role "postgres", at: ALTER TABLE public\.orders OWNER TO postgres;.*or with --no-owner/,
    ],
    [
      'a statement refused by the target (a multi-line command)',
      'pg_restore: error: could not execute query: ERROR:  no CREATE TABLE today\nCONTEXT:  PL/pgSQL function f() line 1 at RAISE\nCommand was: CREATE TABLE public.orders (\n    id integer NOT NULL,\n    note text NOT NULL\n);\n',
      'target',
      /^the target refused a statement: no CREATE TABLE today, at: CREATE TABLE public\.orders \( id integer NOT NULL, note text NOT NULL \);$/,
    ],
    ['a missing role', 'pg_restore: error: could not execute query: ERROR:  role "app_rw" does not exist\nCommand was: GRANT SELECT ON TABLE public.orders TO app_rw;\n', 'target', /role "app_rw" does not exist: create that role .*--no-owner --no-acl/],
    ['an existing object', 'psql:<stdin>:25: ERROR:  relation "orders" already exists\n', 'target', /already exists: the target already holds that object/],
    [
      'the lock table',
      'pg_restore: error: could not execute query: ERROR:  out of shared memory\nHINT:  You might need to increase max_locks_per_transaction.\nCommand was: CREATE TABLE public.t900 (x integer);\n',
      'target',
      /ran out of lock table space .*raise max_locks_per_transaction/,
    ],
    ['a truncated archive', 'pg_restore: error: could not read from input file: end of file\n', 'archive', /pg_restore cannot read the archive: could not read from input file: end of file/],
    ['not an archive', 'pg_restore: error: did not find magic string in file header\n', 'archive', /did not find magic string/],
    [
      'garbled COPY data',
      'pg_restore: error: COPY failed for table "orders": ERROR:  invalid input syntax for type integer: "1x2"\nCONTEXT:  COPY orders, line 12, column id: "1x2"\n',
      'archive',
      /the archive's data is malformed: invalid input syntax for type integer/,
    ],
    ['a lost connection', 'pg_restore: error: connection to server at "10.0.0.5", port 5432 failed: Connection refused\n', 'target', /the connection to the target broke/],
  ];
  for (const [name, stderr, party, reason] of cases) {
    it(`attributes ${name} to the ${party}`, () => {
      const f = classifyRestoreFailure(/^psql/.test(stderr) ? 'psql' : 'pg_restore', stderr, 'exited with code 1');
      assert.equal(f.party, party);
      assert.match(f.reason, reason);
      assert.doesNotMatch(f.reason, /\n/);
    });
  }
});
