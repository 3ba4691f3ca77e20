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
 * The objects with an owner, one row each: `key`, `owner` (a role oid), `acl` and `kind` (the
 * letter `acldefault()` takes). Each part is one scan of its catalog with an index probe of
 * pg_depend per object. Types are filtered on their schema before the probe of pg_class for a
 * composite's relation kind (a relation's row type is in the relation's schema: naming `n` there
 * makes it a condition of the join, checked after the schema's), so the catalog's own types cost
 * no probe.
 */
const OBJECTS = `
SELECT (CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table' END)
         || ' ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS key,
       c.relowner AS owner, c.relacl AS acl, (CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char" AS kind
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${USER_SCHEMA} AND ${notInExtension('pg_class', 'c.oid')}
UNION ALL
SELECT 'schema ' || pg_catalog.quote_ident(n.nspname), n.nspowner, n.nspacl, 'n'
  FROM pg_catalog.pg_namespace n WHERE ${USER_SCHEMA} AND ${notInExtension('pg_namespace', 'n.oid')}
UNION ALL
SELECT (CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END) || ' ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
         || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
       p.proowner, p.proacl, 'f'
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE ${USER_SCHEMA} AND ${notInExtension('pg_proc', 'p.oid')}
UNION ALL
SELECT (CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END) || ' ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname),
       t.typowner, t.typacl, 'T'
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE ${USER_SCHEMA} AND t.typtype IN ('b', 'c', 'd', 'e', 'r') AND t.typcategory <> 'A'
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relnamespace = n.oid) = 'c')
   AND ${notInExtension('pg_type', 't.oid')}`;
// Multirange types (typtype 'm', PostgreSQL 14+) are left out: each is made with its range type,
// whose owner and grants it follows; reading pg_range.rngmultitypid would fail before 14.

/**
 * The rest of a capture as rows of the same shape as {@link OBJECTS} after a `section`: column
 * privileges (`c`: `GRANT SELECT (col) ON …`, only columns with an ACL) and `ALTER DEFAULT
 * PRIVILEGES` (`d`), both with `kind` NULL (every ACL item is kept: there is no built-in default
 * to leave out), and the database itself (`db`).
 */
const OTHER_ACLS = `
SELECT 'c', 'column ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || '.' || pg_catalog.quote_ident(a.attname), NULL::oid, a.attacl, NULL::"char"
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attacl IS NOT NULL AND NOT a.attisdropped AND a.attnum > 0 AND ${USER_SCHEMA}
UNION ALL
SELECT 'd', 'for role ' || pg_catalog.pg_get_userbyid(d.defaclrole) || COALESCE(' in schema ' || pg_catalog.quote_ident(n.nspname), '') || ' on '
         || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END,
       NULL, d.defaclacl, NULL
  FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
UNION ALL
SELECT 'db', '', d.datdba, d.datacl, 'd' FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()`;

/**
 * The whole capture in one statement (one round trip, planned once): one row per object, column,
 * default privilege and the database (`section` `o`, `c`, `d`, `db`) with its owner's name and
 * its ACL expanded (`expand` once for all of them: only what differs from the built-in default
 * when `kind` is set, else every item; NULL for a NULL ACL), then the tables with row-level
 * security (`rls`) and the settings (`set`: `key` '' for the database's, else the role's name;
 * the `name=value` list in `grants`).
 */
const CAPTURE_SQL = `
WITH acls AS (
  SELECT 'o'::text AS section, * FROM (${OBJECTS}) o (key, owner, acl, kind)
  UNION ALL
  SELECT * FROM (${OTHER_ACLS}) x (section, key, owner, acl, kind)
)
SELECT a.section, a.key, pg_catalog.pg_get_userbyid(a.owner) AS owner,
       CASE WHEN a.kind IS NULL THEN ${expand('a.acl')} ELSE ${expand('a.acl', 'a.kind', 'a.owner')} END AS grants,
       NULL::boolean AS enabled, NULL::boolean AS forced, NULL::text[] AS policies
  FROM acls a
UNION ALL
SELECT 'rls', 'table ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), NULL, NULL, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT array_agg(p.polname || ' (' || CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END
                || ', ' || CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END || ', to '
                || (SELECT string_agg(u.name, ', ' ORDER BY u.name) FROM (SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END AS name FROM unnest(p.polroles) r) u) || ')')
          FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE (c.relrowsecurity OR c.relforcerowsecurity OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)) AND ${USER_SCHEMA}
UNION ALL
SELECT 'set', CASE WHEN s.setrole = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(s.setrole) END, NULL, s.setconfig, NULL, NULL, NULL
  FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
 WHERE d.datname = pg_catalog.current_database()`;

/**
 * Reads the {@link Privileges} of the database `client` is connected to, with one statement on
 * that connection (in its transaction and snapshot when one is open: the dump calls it inside
 * the transaction whose snapshot pg_dump imports). Needs only read access to the catalogs, which
 * every role has. It gives what the former six queries, one per part, gave
 * (test/infra/privileges-reference.ts; PostgreSQL 12–18). Measured: 8.4 ms of server CPU in a
 * fresh backend of a small database, mostly planning with cold catalog caches (was 10.3 ms with
 * six queries); 0.47 s on 10 000 tables with 2 grants each, as before (docs/performance.md,
 * "restore --server, third pass"; docs/drills.md).
 */
export async function capturePrivileges(client: pg.Client): Promise<Privileges> {
  type Row = { section: 'o' | 'c' | 'd' | 'db' | 'rls' | 'set'; key: string; owner: string | null; grants: string[] | null; enabled: boolean | null; forced: boolean | null; policies: string[] | null };
  const { rows } = await client.query<Row>(CAPTURE_SQL);
  const of = (section: Row['section']) => rows.filter((r) => r.section === section);
  const sorted = <T>(entries: [string, T][]): Record<string, T> => Object.fromEntries(entries.sort(([a], [b]) => byCodePoint(a, b)));
  const lines = (list: string[] | null) => [...(list ?? [])].sort(byCodePoint);
  const db = of('db')[0]!;
  const settings = of('set');
  const objects = of('o');
  return {
    database: { owner: db.owner!, grants: lines(db.grants), settings: lines(settings.find((r) => r.key === '')?.grants ?? null) },
    roleSettings: sorted(settings.filter((r) => r.key !== '').map((r) => [r.key, lines(r.grants)])),
    owners: sorted(objects.map((r) => [r.key, r.owner!])),
    grants: sorted([...objects, ...of('c')].filter((r) => r.grants).map((r) => [r.key, lines(r.grants)])),
    defaultPrivileges: sorted(of('d').filter((r) => r.grants).map((r) => [r.key, lines(r.grants)])),
    rowSecurity: sorted(of('rls').map((r) => [r.key, { enabled: r.enabled!, forced: r.forced!, policies: lines(r.policies) }])),
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
