import type pg from 'pg';
import { z } from 'zod';

/**
 * Who owns what and who may do what in one database, as its catalogs say: the record a dump
 * writes into its manifest (`privileges`, read in the dump's own snapshot) and a drill or
 * `restore --server` compares with the restored database ({@link comparePrivileges}).
 *
 * Every name is a key made of the object's kind and its schema-qualified, quoted name
 * (`table public.orders`, `function public.total(integer)`, `column public.orders.price`,
 * `schema app`, `type public.mood`), so two captures compare key by key. Grants are the ACL
 * items (`pg_class.relacl`, `pg_namespace.nspacl`, `pg_proc.proacl`, `pg_type.typacl`,
 * `pg_attribute.attacl`, `pg_database.datacl`, `pg_default_acl.defaclacl`) expanded with
 * `aclexplode()` into one line each, `GRANTEE PRIVILEGE[ WITH GRANT OPTION] (by GRANTOR)`,
 * sorted, keeping only what differs from the built-in default (`acldefault()`): extra items as
 * they are, missing default items as `revoked: …`; an object whose ACL is NULL (the built-in
 * default) has no entry. Objects
 * that belong to an extension (`pg_depend.deptype = 'e'`) are left out: `CREATE EXTENSION`
 * makes them, owned by whoever restores. Sources: PostgreSQL docs 5.7 "Privileges" (ACL
 * abbreviations), 9.26 `aclexplode`, 53.x system catalogs.
 */
export const PrivilegesSchema = z.object({
  /** The database's owner, expanded ACL, and `ALTER DATABASE … SET` settings (`pg_db_role_setting`, role 0) as `name=value`. */
  database: z.object({ owner: z.string(), grants: z.array(z.string()), settings: z.array(z.string()) }),
  /** `ALTER ROLE … IN DATABASE … SET` of this database: role → its settings (`name=value`), sorted. */
  roleSettings: z.record(z.string(), z.array(z.string())),
  /** Object key → owner, for schemas, tables, views, materialized views, sequences, foreign tables, functions, procedures, aggregates and types. */
  owners: z.record(z.string(), z.string()),
  /** Object key → its expanded non-default ACL items (columns too: `column schema.table.column`). */
  grants: z.record(z.string(), z.array(z.string())),
  /** `ALTER DEFAULT PRIVILEGES`: `for role R[ in schema S] on tables|sequences|functions|types|schemas` → expanded ACL items. */
  defaultPrivileges: z.record(z.string(), z.array(z.string())),
  /**
   * Row-level security: `table schema.name` → `relrowsecurity` (`enabled`), `relforcerowsecurity`
   * (`forced`), and its policies as `name (command, permissive|restrictive, to roles)`, sorted.
   * Tables without RLS and without policies have no entry.
   */
  rowSecurity: z.record(z.string(), z.object({ enabled: z.boolean(), forced: z.boolean(), policies: z.array(z.string()) })),
});

/** A captured {@link PrivilegesSchema}. */
export type Privileges = z.infer<typeof PrivilegesSchema>;

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

/**
 * One query over the catalogs: one row per object (kind, key, owner, grants). Every part is a
 * single scan of its catalog with an index probe of pg_depend per object; the names are built
 * in SQL. Measured on 10 000 tables, each with a sequence, 2 grants and an index (PostgreSQL 15,
 * 2 shared cores): see docs/drills.md.
 */
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

/**
 * Reads the {@link Privileges} of the database `client` is connected to, with 6 queries on that
 * connection (in its transaction and snapshot when one is open: the dump calls it inside the
 * transaction whose snapshot pg_dump imports). Needs only read access to the catalogs, which
 * every role has.
 */
export async function capturePrivileges(client: pg.Client): Promise<Privileges> {
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

/**
 * The differences between what the dump recorded and `restored` (a capture of the restored
 * database), each one line in plain words, e.g. `owner of table public.orders is postgres, the
 * dump recorded app_owner` or `grant app_reader SELECT (by app_owner) on table public.orders is
 * missing`. Owners of objects the dump did not record are not compared (a missing table is the
 * row counts' finding); grants, default privileges, policies and settings are compared both
 * ways (one present only after the restore is a difference too). Empty when they match.
 * `database: false` leaves out the database's own owner, ACL and settings and the per-role
 * settings (a restore into an existing database, without `--create`, does not bring them).
 */
export function comparePrivileges(recorded: Privileges, restored: Privileges, options: { database?: boolean } = {}): string[] {
  const out: string[] = [];
  const db = 'the database';
  if (options.database === false) {
    // Restored into an existing database (no --create): its owner, ACL and settings are the target's.
    restored = { ...restored, database: recorded.database, roleSettings: recorded.roleSettings };
  }
  if (recorded.database.owner !== restored.database.owner) out.push(`owner of ${db} is ${restored.database.owner}, the dump recorded ${recorded.database.owner}`);
  diffList(out, `${db}`, recorded.database.grants, restored.database.grants, 'grant');
  diffList(out, `${db}`, recorded.database.settings, restored.database.settings, 'setting');
  for (const role of union(recorded.roleSettings, restored.roleSettings)) {
    diffList(out, `role ${role} in ${db}`, recorded.roleSettings[role] ?? [], restored.roleSettings[role] ?? [], 'setting');
  }
  for (const [key, owner] of Object.entries(recorded.owners)) {
    const now = restored.owners[key];
    if (now === undefined) out.push(`${key} is missing after the restore (owner ${owner} recorded)`);
    else if (now !== owner) out.push(`owner of ${key} is ${now}, the dump recorded ${owner}`);
  }
  for (const key of union(recorded.grants, restored.grants)) {
    if (recorded.owners[key] !== undefined && restored.owners[key] === undefined) continue; // said above
    diffList(out, key, recorded.grants[key] ?? [], restored.grants[key] ?? [], 'grant');
  }
  for (const key of union(recorded.defaultPrivileges, restored.defaultPrivileges)) {
    diffList(out, `default privileges ${key}`, recorded.defaultPrivileges[key] ?? [], restored.defaultPrivileges[key] ?? [], 'grant');
  }
  for (const key of union(recorded.rowSecurity, restored.rowSecurity)) {
    const a = recorded.rowSecurity[key] ?? { enabled: false, forced: false, policies: [] };
    const b = restored.rowSecurity[key] ?? { enabled: false, forced: false, policies: [] };
    if (a.enabled !== b.enabled) out.push(`row-level security on ${key} is ${b.enabled ? 'enabled' : 'disabled'} after the restore, the dump recorded it ${a.enabled ? 'enabled' : 'disabled'}`);
    if (a.forced !== b.forced) out.push(`FORCE ROW LEVEL SECURITY on ${key} is ${b.forced ? 'on' : 'off'} after the restore, the dump recorded it ${a.forced ? 'on' : 'off'}`);
    diffList(out, key, a.policies, b.policies, 'policy');
  }
  return out;
}

/** Orders strings by UTF-16 code units, the same on every machine (no locale). */
function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Keys of either record, sorted. */
function union(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort(byCodePoint);
}

/** Appends `<what> X on <where> is missing` / `… is present after the restore but was not recorded`. */
function diffList(out: string[], where: string, recorded: string[], restored: string[], what: string): void {
  const have = new Set(restored);
  const had = new Set(recorded);
  for (const r of recorded) if (!have.has(r)) out.push(`${what} ${r} on ${where} is missing after the restore`);
  for (const r of restored) if (!had.has(r)) out.push(`${what} ${r} on ${where} is present after the restore, the dump did not record it`);
}

/** A one-line summary of a capture: how many owners, grants, default privileges, policies and settings it holds. */
export function describePrivileges(p: Privileges): string {
  const grants = Object.values(p.grants).reduce((n, g) => n + g.length, 0) + p.database.grants.length;
  const policies = Object.values(p.rowSecurity).reduce((n, r) => n + r.policies.length, 0);
  const settings = p.database.settings.length + Object.values(p.roleSettings).reduce((n, s) => n + s.length, 0);
  return `${Object.keys(p.owners).length} owners, ${grants} grants, ${Object.keys(p.defaultPrivileges).length} default privileges, ${Object.keys(p.rowSecurity).length} tables with row-level security (${policies} policies), ${settings} database/role settings`;
}

/**
 * The roles a record names (owners, grantees and grantors, default-privilege roles, policy
 * roles, roles with settings), without `PUBLIC`, sorted: every one must exist before the
 * database can be restored with its owners and grants.
 */
export function referencedRoles(p: Privileges): string[] {
  const roles = new Set<string>([p.database.owner, ...Object.values(p.owners), ...Object.keys(p.roleSettings)]);
  const grant = /^(?:revoked: )?(.*) [A-Z]+(?: WITH GRANT OPTION)? \(by (.*)\)$/;
  const lines = [...p.database.grants, ...Object.values(p.grants).flat(), ...Object.values(p.defaultPrivileges).flat()];
  for (const line of lines) {
    const m = grant.exec(line);
    if (m) roles.add(m[1]!).add(m[2]!);
  }
  for (const key of Object.keys(p.defaultPrivileges)) {
    const m = /^for role (.*?)(?: in schema .*)? on [a-z]+$/.exec(key);
    if (m) roles.add(m[1]!);
  }
  for (const r of Object.values(p.rowSecurity)) {
    for (const policy of r.policies) {
      const m = /, to (.*)\)$/.exec(policy);
      if (m) for (const role of m[1]!.split(', ')) roles.add(role);
    }
  }
  roles.delete('PUBLIC');
  return [...roles].filter(Boolean).sort(byCodePoint);
}
