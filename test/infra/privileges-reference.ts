// The capture of owners, grants, default privileges, RLS and settings as src/postgres/privileges.ts
// read it before it became one statement (6 queries, each part's ACLs expanded in its own
// query), kept verbatim as the reference the one-statement capture must equal on every major
// (test/integration/privileges-capture.test.ts).
import type pg from 'pg';
import type { Privileges } from '../../src/postgres/privileges.ts';

/** Schemas never captured: the catalogs, and the toast and temporary ones. */
const USER_SCHEMA = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'`;

/** SQL of one `aclexplode()` item `a` as a line: `GRANTEE PRIVILEGE[ WITH GRANT OPTION] (by GRANTOR)`. */
const item = (a: string) =>
  `CASE WHEN ${a}.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(${a}.grantee) END || ' ' || ${a}.privilege_type || CASE WHEN ${a}.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END || ' (by ' || pg_catalog.pg_get_userbyid(${a}.grantor) || ')'`;

/**
 * SQL expanding the ACL column `acl` into lines (NULL when the ACL is NULL: the built-in
 * default). With the object's `kind` (an SQL expression of `acldefault()`'s letter) and `owner` column, only what
 * differs from the built-in default is kept: the items the default lacks, and as `revoked: …`
 * the default's items the ACL lacks (e.g. `revoked: PUBLIC EXECUTE (by app_owner)`); the owner's
 * own full rights, in every ACL once anything is granted, are not repeated for every object.
 */
const expand = (acl: string, kind?: string, owner?: string) =>
  kind === undefined
    ? `(SELECT array_agg(${item('a')}) FROM pg_catalog.aclexplode(${acl}) a)`
    : `CASE WHEN ${acl} IS NOT NULL THEN (SELECT array_agg(x) FROM (
         (SELECT ${item('a')} AS x FROM pg_catalog.aclexplode(${acl}) a EXCEPT SELECT ${item('d')} FROM pg_catalog.aclexplode(pg_catalog.acldefault(${kind}, ${owner})) d)
         UNION ALL
         (SELECT 'revoked: ' || ${item('d')} FROM pg_catalog.aclexplode(pg_catalog.acldefault(${kind}, ${owner})) d EXCEPT SELECT 'revoked: ' || ${item('a')} FROM pg_catalog.aclexplode(${acl}) a)) s) END`;

/** Not a member of an extension. */
const notInExtension = (catalog: string, oid: string) =>
  `NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '${catalog}'::regclass AND d.objid = ${oid} AND d.objsubid = 0 AND d.deptype = 'e')`;

/** One query over the catalogs: one row per object (kind, key, owner, grants). */
const OBJECTS_SQL = `
SELECT (CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table' END)
         || ' ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS key,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner, ${expand('c.relacl', `(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char"`, 'c.relowner')} AS grants
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${USER_SCHEMA} AND ${notInExtension('pg_class', 'c.oid')}
UNION ALL
SELECT 'schema ' || pg_catalog.quote_ident(n.nspname), pg_catalog.pg_get_userbyid(n.nspowner), ${expand('n.nspacl', "'n'", 'n.nspowner')}
  FROM pg_catalog.pg_namespace n WHERE ${USER_SCHEMA} AND ${notInExtension('pg_namespace', 'n.oid')}
UNION ALL
SELECT (CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END) || ' ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
         || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
       pg_catalog.pg_get_userbyid(p.proowner), ${expand('p.proacl', "'f'", 'p.proowner')}
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE ${USER_SCHEMA} AND ${notInExtension('pg_proc', 'p.oid')}
UNION ALL
SELECT (CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END) || ' ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname),
       pg_catalog.pg_get_userbyid(t.typowner), ${expand('t.typacl', "'T'", 't.typowner')}
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE ${USER_SCHEMA} AND t.typtype IN ('b', 'c', 'd', 'e', 'r') AND t.typcategory <> 'A'
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
   AND ${notInExtension('pg_type', 't.oid')}`;
// Multirange types (typtype 'm', PostgreSQL 14+) are left out: each is made with its range type,
// whose owner and grants it follows; reading pg_range.rngmultitypid would fail before 14.

/** Column privileges (`GRANT SELECT (col) ON …`): only columns with an ACL. */
const COLUMNS_SQL = `
SELECT 'column ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || '.' || pg_catalog.quote_ident(a.attname) AS key, ${expand('a.attacl')} AS grants
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attacl IS NOT NULL AND NOT a.attisdropped AND a.attnum > 0 AND ${USER_SCHEMA}`;

const DEFAULT_ACL_SQL = `
SELECT 'for role ' || pg_catalog.pg_get_userbyid(d.defaclrole) || COALESCE(' in schema ' || pg_catalog.quote_ident(n.nspname), '') || ' on '
         || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END AS key,
       ${expand('d.defaclacl')} AS grants
  FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace`;

const RLS_SQL = `
SELECT 'table ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS key, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
       (SELECT array_agg(p.polname || ' (' || CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END
                || ', ' || CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END || ', to '
                || (SELECT string_agg(u.name, ', ' ORDER BY u.name) FROM (SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END AS name FROM unnest(p.polroles) r) u) || ')')
          FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid) AS policies
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE (c.relrowsecurity OR c.relforcerowsecurity OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)) AND ${USER_SCHEMA}`;

const DATABASE_SQL = `
SELECT pg_catalog.pg_get_userbyid(d.datdba) AS owner, ${expand('d.datacl', "'d'", 'd.datdba')} AS grants,
       (SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings
  FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()`;

const ROLE_SETTINGS_SQL = `
SELECT pg_catalog.pg_get_userbyid(s.setrole) AS role, s.setconfig AS settings
  FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
 WHERE d.datname = pg_catalog.current_database() AND s.setrole <> 0`;

/** The former capture: the {@link Privileges} of `client`'s database read with 6 queries, one per part. */
export async function capturePrivilegesReference(client: pg.Client): Promise<Privileges> {
  const objects = await client.query<{ key: string; owner: string; grants: string[] | null }>(OBJECTS_SQL);
  const columns = await client.query<{ key: string; grants: string[] | null }>(COLUMNS_SQL);
  const defaults = await client.query<{ key: string; grants: string[] | null }>(DEFAULT_ACL_SQL);
  const rls = await client.query<{ key: string; enabled: boolean; forced: boolean; policies: string[] | null }>(RLS_SQL);
  const db = (await client.query<{ owner: string; grants: string[] | null; settings: string[] | null }>(DATABASE_SQL)).rows[0]!;
  const roleSettings = await client.query<{ role: string; settings: string[] | null }>(ROLE_SETTINGS_SQL);
  const sorted = <T>(entries: [string, T][]): Record<string, T> => Object.fromEntries(entries.sort(([a], [b]) => byCodePoint(a, b)));
  const lines = (list: string[] | null) => [...(list ?? [])].sort(byCodePoint);
  return {
    database: { owner: db.owner, grants: lines(db.grants), settings: lines(db.settings) },
    roleSettings: sorted(roleSettings.rows.map((r) => [r.role, lines(r.settings)])),
    owners: sorted(objects.rows.map((r) => [r.key, r.owner])),
    grants: sorted([...objects.rows, ...columns.rows].filter((r) => r.grants).map((r) => [r.key, lines(r.grants)])),
    defaultPrivileges: sorted(defaults.rows.filter((r) => r.grants).map((r) => [r.key, lines(r.grants)])),
    rowSecurity: sorted(rls.rows.map((r) => [r.key, { enabled: r.enabled, forced: r.forced, policies: lines(r.policies) }])),
  };
}

/** Orders strings by UTF-16 code units. */
function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
