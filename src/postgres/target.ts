import { restrictedModeReason } from './plain-sql.ts';
import type pg from 'pg';
import { redact } from '../errors.ts';

/**
 * The database a restore writes into: what is already in it, whether the restoring role may do
 * what the archive asks, what a `--clean` restore would break, and whose fault a failed restore
 * was. Used by `restore` (before anything is changed) and by `drill --target-url`.
 */

/** One user object found in a target database. */
export interface UserObject {
  /** `table`, `view`, `materialized view`, `foreign table`, `sequence`, `function`, `procedure`, `aggregate`, `type`, `extension`, `schema`, `event trigger`, `large object`. */
  kind: string;
  /** Schema-qualified and quoted as in SQL (`public.orders`, `"My Schema"`). */
  name: string;
}

/**
 * The user objects of the database `client` is connected to. This is THE definition of "not
 * empty" for a restore target (`restore` without `--clean`, `drill --target-url`): a database is
 * empty when this returns nothing. User objects are
 *
 * - tables (ordinary, partitioned, foreign), views, materialized views and sequences,
 * - functions, procedures and aggregates,
 * - types (base, composite, domain, enum, range; not the array, row and multirange types
 *   PostgreSQL makes for them, which have an internal dependency, `pg_depend.deptype = 'i'`),
 * - extensions other than `plpgsql` (which `CREATE DATABASE` copies from template1),
 * - schemas other than `public`, event triggers and large objects,
 *
 * outside `pg_catalog`, `information_schema`, `pg_toast*` and `pg_temp_*`, and not members of an
 * extension (`pg_depend.deptype = 'e'`: `pgcrypto`'s functions count as the one extension).
 * What a fresh `CREATE DATABASE` from template1 holds (the `public` schema and `plpgsql`) is not
 * a user object. Catalogs: PostgreSQL docs, chapter 53 "System Catalogs".
 * @param limit at most this many objects are returned (all kinds counted by {@link countUserObjects}).
 */
export async function userObjects(client: pg.Client, limit = 1000): Promise<UserObject[]> {
  const { rows } = await client.query<UserObject>(`${USER_OBJECTS_SQL} ORDER BY ord, name LIMIT $1`, [limit]);
  return rows;
}

/** The number of user objects per kind (see {@link userObjects} for what counts), e.g. `{ table: 3, view: 1 }`. */
export async function countUserObjects(client: pg.Client): Promise<Record<string, number>> {
  const { rows } = await client.query<{ kind: string; n: string }>(`SELECT kind, count(*)::text AS n, min(ord) AS ord FROM (${USER_OBJECTS_SQL}) o GROUP BY kind ORDER BY 3`);
  return Object.fromEntries(rows.map((r) => [r.kind, Number(r.n)]));
}

const USER_OBJECTS_SQL = `
WITH sys AS (SELECT oid FROM pg_namespace
              WHERE nspname IN ('pg_catalog', 'information_schema') OR nspname LIKE 'pg\\_toast%' OR nspname LIKE 'pg\\_temp\\_%'),
     member AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
SELECT kind, name, ord FROM (
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence' ELSE 'table' END AS kind,
         format('%I.%I', n.nspname, c.relname) AS name, CASE c.relkind WHEN 'v' THEN 2 WHEN 'm' THEN 2 WHEN 'S' THEN 3 ELSE 1 END AS ord,
         'pg_class'::regclass::oid AS classid, c.oid
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND c.relnamespace NOT IN (SELECT oid FROM sys)
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         format('%I.%I', n.nspname, p.proname), 4, 'pg_proc'::regclass::oid, p.oid
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE p.pronamespace NOT IN (SELECT oid FROM sys)
  UNION ALL
  SELECT 'type', format('%I.%I', n.nspname, t.typname), 5, 'pg_type'::regclass::oid, t.oid
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typnamespace NOT IN (SELECT oid FROM sys)
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'i')
  UNION ALL
  SELECT 'extension', format('%I', e.extname), 6, 'pg_extension'::regclass::oid, e.oid FROM pg_extension e WHERE e.extname <> 'plpgsql'
  UNION ALL
  SELECT 'schema', format('%I', n.nspname), 7, 'pg_namespace'::regclass::oid, n.oid FROM pg_namespace n
   WHERE n.nspname <> 'public' AND n.oid NOT IN (SELECT oid FROM sys)
  UNION ALL
  SELECT 'event trigger', format('%I', t.evtname), 8, 'pg_event_trigger'::regclass::oid, t.oid FROM pg_event_trigger t
  UNION ALL
  SELECT 'large object', l.oid::text, 9, 'pg_largeobject'::regclass::oid, l.oid FROM pg_largeobject_metadata l
) o
WHERE NOT EXISTS (SELECT 1 FROM member m WHERE m.classid = o.classid AND m.objid = o.oid)`;

/**
 * One line for what a target holds, e.g. `3 tables, 1 view and 2 functions (public.orders,
 * public.customers, public.order_items, …)`.
 */
export function describeContents(counts: Record<string, number>, examples: UserObject[]): string {
  const kinds = Object.entries(counts).map(([kind, n]) => `${n} ${n === 1 ? kind : pluralKind(kind)}`);
  const list = kinds.length > 1 ? `${kinds.slice(0, -1).join(', ')} and ${kinds.at(-1)}` : (kinds[0] ?? 'nothing');
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const names = examples.slice(0, 3).map((o) => o.name);
  return `${list} (${names.join(', ')}${total > names.length ? ', …' : ''})`;
}

function pluralKind(kind: string): string {
  if (kind === 'schema') return 'schemas';
  if (kind.endsWith('y')) return `${kind.slice(0, -1)}ies`;
  return `${kind}s`;
}

/**
 * What a target holds, or undefined when it is empty (see {@link userObjects}): the counts per
 * kind, a few names, and one line describing them.
 */
export async function targetContents(client: pg.Client): Promise<{ counts: Record<string, number>; examples: UserObject[]; description: string } | undefined> {
  const examples = await userObjects(client, 5);
  if (!examples.length) return undefined;
  const counts = await countUserObjects(client);
  return { counts, examples, description: describeContents(counts, examples) };
}

// ---------------------------------------------------------------------------------------------
// The archive's table of contents

/** One line of `pg_restore --list`: `<dumpId>; <tableoid> <oid> <desc> <schema> <name> <owner>`. */
export interface TocEntry {
  dumpId: number;
  /** pg_dump's object type: `TABLE`, `TABLE DATA`, `VIEW`, `FUNCTION`, `SCHEMA`, `FK CONSTRAINT`… */
  desc: string;
  /** The object's schema; undefined for objects outside a schema (pg_restore prints `-`). */
  schema: string | undefined;
  /** The object's name; functions carry their argument types (`add(integer, integer)`). */
  name: string;
  /** The owning role; empty for objects without one. */
  owner: string;
}

/** pg_dump's multi-word object types (pg_dump.c, `ArchiveEntry(… .description = …)`), longest first. */
const MULTIWORD_DESCS = [
  'PUBLICATION TABLES IN SCHEMA', 'TEXT SEARCH CONFIGURATION', 'TEXT SEARCH DICTIONARY', 'MATERIALIZED VIEW DATA', 'FOREIGN DATA WRAPPER',
  'TEXT SEARCH TEMPLATE', 'PROCEDURAL LANGUAGE', 'DATABASE PROPERTIES', 'TEXT SEARCH PARSER', 'PUBLICATION TABLE', 'SEQUENCE OWNED BY',
  'MATERIALIZED VIEW', 'CHECK CONSTRAINT', 'OPERATOR FAMILY', 'SECURITY LABEL', 'OPERATOR CLASS', 'FOREIGN SERVER', 'ACCESS METHOD',
  'BLOB METADATA', 'EVENT TRIGGER', 'FK CONSTRAINT', 'FOREIGN TABLE', 'LARGE OBJECT', 'SEQUENCE SET', 'TABLE ATTACH', 'INDEX ATTACH',
  'USER MAPPING', 'ROW SECURITY', 'DEFAULT ACL', 'SHELL TYPE', 'TABLE DATA',
];

/**
 * Parses the output of `pg_restore --list` (its `PrintTOCSummary`): comment lines (`;`) are
 * skipped. The schema is the first word after the type, the owner the last, the name what lies
 * between (it may hold spaces: `DEFAULT public orders id`, `FUNCTION public f(integer, integer)`).
 */
export function parseToc(text: string): TocEntry[] {
  const lines: { dumpId: number; desc: string; rest: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+); \d+ \d+ (.*)$/.exec(line);
    if (!m) continue;
    const desc = MULTIWORD_DESCS.find((d) => m[2]!.startsWith(`${d} `)) ?? m[2]!.split(' ')[0]!;
    lines.push({ dumpId: Number(m[1]), desc, rest: m[2]!.slice(desc.length + 1) });
  }
  // A schema name may hold spaces ("sch ë"): the archive's own SCHEMA entries say which.
  const schemas = lines
    .filter((l) => l.desc === 'SCHEMA')
    .map((l) => l.rest.split(' ').slice(1, -1).join(' '))
    .filter((n) => n.includes(' '))
    .sort((a, b) => b.length - a.length);
  return lines.map(({ dumpId, desc, rest }) => {
    const spaced = schemas.find((sch) => rest.startsWith(`${sch} `));
    const schema = spaced ?? rest.split(' ')[0] ?? '-';
    const words = rest.slice(schema.length + 1).split(' ');
    const owner = words.length > 1 ? words.pop()! : '';
    return { dumpId, desc, schema: schema === '-' ? undefined : schema, name: words.join(' '), owner };
  });
}

/** TOC types that create an object a `--clean` restore drops first (`DROP … IF EXISTS`). */
const RELATION_DESCS: Record<string, string[]> = {
  TABLE: ['r', 'p'],
  VIEW: ['v'],
  'MATERIALIZED VIEW': ['m'],
  'FOREIGN TABLE': ['f'],
  SEQUENCE: ['S'],
};
const ROUTINE_DESCS = ['FUNCTION', 'PROCEDURE', 'AGGREGATE'];
const TYPE_DESCS = ['TYPE', 'DOMAIN'];

/**
 * How many lock table entries a single-transaction restore of these entries takes, roughly: one
 * per object it creates, three per table or materialized view (the relation, its TOAST table and
 * TOAST index), and, for `--clean`, twice that again for the share of tables that exist and are
 * dropped (a DROP also locks the row and array types, defaults and constraints). Measured on
 * PostgreSQL 15: 50 tables with a serial key and a text column took 254 lock objects to create,
 * 754 to drop and re-create. Compared with the server's lock table by {@link preflightRestore}.
 * @param droppedShare the share (0…1) of the archive's tables that exist in the target and are dropped.
 */
export function estimateLocks(toc: TocEntry[], droppedShare: number): number {
  let n = 0;
  for (const e of toc) {
    if (e.desc === 'TABLE' || e.desc === 'MATERIALIZED VIEW') n += 3;
    else if (['INDEX', 'CONSTRAINT', 'VIEW', 'SEQUENCE', 'FOREIGN TABLE', 'SCHEMA', 'EXTENSION', 'TYPE', 'DOMAIN', ...ROUTINE_DESCS].includes(e.desc)) n += 1;
  }
  return Math.ceil(n * (1 + 2 * droppedShare));
}

// ---------------------------------------------------------------------------------------------
// Preflight

/** What a restore will do to the target, for {@link preflightRestore}. */
export interface RestorePlan {
  /** The archive's TOC; undefined for a plain SQL dump (then `tables` stands in for it). */
  toc?: TocEntry[];
  /** The manifest's tables (with and without data): what a plain `--clean` dump drops. */
  tables: { schema: string; table: string }[];
  /** `--clean`: existing objects of the archive are dropped first. */
  clean: boolean;
  /** `--no-owner`: ownership is not restored (no `ALTER … OWNER TO`). */
  noOwner: boolean;
}

/**
 * Checks, before anything is written, that a restore of `plan` into the database `client` is
 * connected to can finish: the roles that own the archive's objects exist and the restoring role
 * may give objects to them (`ALTER … OWNER TO` needs membership in the new owner, PostgreSQL
 * docs "ALTER TABLE"); it may create in every schema the archive writes into (or create schemas
 * in the database); the extensions the archive creates are available and creatable; with
 * `--clean`, it owns every object that is dropped, no object of another kind sits under an
 * archive object's name, and no object outside the archive depends on one that is dropped (a
 * view, a foreign key, a column default, a function's argument type: `DROP` without `CASCADE`
 * fails on them, `pg_depend`); and the lock table holds what one transaction needs (refused
 * beyond twice its size, a warning beyond it: see {@link estimateLocks}).
 * @returns `problems`: one line each, naming the object and what to do (empty when the restore can go
 *   ahead); `warnings`: what may still fail (a lock table near its size).
 */
export async function preflightRestore(client: pg.Client, plan: RestorePlan): Promise<{ problems: string[]; warnings: string[] }> {
  const problems: string[] = [];
  const role = (await client.query<{ u: string; su: boolean }>('SELECT current_user AS u, rolsuper AS su FROM pg_roles WHERE rolname = current_user')).rows[0]!;
  const toc = plan.toc ?? [];

  // Owners.
  if (!plan.noOwner && !role.su) {
    const owners = [...new Set(toc.map((e) => e.owner).filter(Boolean))];
    if (owners.length) {
      const { rows } = await client.query<{ r: string; exists: boolean; member: boolean | null }>(
        `SELECT r, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) AS exists,
                CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN pg_has_role(r, 'MEMBER') END AS member
           FROM unnest($1::text[]) r`,
        [owners],
      );
      const missing = rows.filter((r) => !r.exists).map((r) => r.r);
      const foreign = rows.filter((r) => r.exists && !r.member).map((r) => r.r);
      if (missing.length) problems.push(`the target server has no role ${missing.join(', ')}, which owns objects in the backup: create ${missing.length > 1 ? 'them' : 'it'} first, or restore with --no-owner (the restoring role then owns everything)`);
      if (foreign.length) problems.push(`role ${role.u} cannot make ${foreign.join(', ')} the owner of the restored objects (ALTER … OWNER TO needs membership in that role): restore with --no-owner, or as ${foreign.length > 1 ? 'a member of those roles' : foreign[0]} or a superuser`);
    }
  }

  // Schemas the archive writes into, and schemas it creates.
  const created = new Set(toc.filter((e) => e.desc === 'SCHEMA').map((e) => e.name));
  const used = new Set<string>([...toc.filter((e) => e.schema && e.desc !== 'TABLE DATA' && e.desc !== 'SEQUENCE SET').map((e) => e.schema!), ...plan.tables.map((t) => t.schema)]);
  if (used.size || created.size) {
    const { rows } = await client.query<{ s: string; exists: boolean; can: boolean | null; candb: boolean }>(
      `SELECT s, EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s) AS exists,
              CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s) THEN has_schema_privilege(s, 'CREATE') END AS can,
              has_database_privilege(current_database(), 'CREATE') AS candb
         FROM unnest($1::text[]) s`,
      [[...new Set([...used, ...created])]],
    );
    const cannot = rows.filter((r) => r.exists && !r.can && used.has(r.s)).map((r) => r.s);
    if (cannot.length) problems.push(`role ${role.u} may not create objects in schema ${cannot.join(', ')} of the target: restore as the database owner or a superuser, or GRANT CREATE ON SCHEMA ${cannot[0]} TO ${role.u}`);
    const toCreate = rows.filter((r) => !r.exists && created.has(r.s));
    if (toCreate.length && !rows[0]!.candb) problems.push(`role ${role.u} may not create schemas in the target database (the backup creates ${toCreate.map((r) => r.s).join(', ')}): restore as the database owner or a superuser, or GRANT CREATE ON DATABASE to it`);
    // Without a TOC (plain SQL) the schemas the dump creates are unknown: only existing ones are checked.
    const absent = plan.toc ? rows.filter((r) => !r.exists && !created.has(r.s)).map((r) => r.s) : [];
    if (absent.length) problems.push(`the target has no schema ${absent.join(', ')}, which the backup writes into but does not create: CREATE SCHEMA ${absent[0]} first`);
  }

  // Extensions.
  const extensions = toc.filter((e) => e.desc === 'EXTENSION').map((e) => e.name);
  if (extensions.length) {
    const { rows } = await client.query<{ e: string; installed: boolean; available: boolean; superuser: boolean | null }>(
      `SELECT e, EXISTS (SELECT 1 FROM pg_extension WHERE extname = e) AS installed,
              EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = e) AS available,
              (SELECT v.superuser AND NOT v.trusted FROM pg_available_extension_versions v JOIN pg_available_extensions a ON a.name = v.name AND a.default_version = v.version WHERE v.name = e) AS superuser
         FROM unnest($1::text[]) e`,
      [extensions],
    );
    const unavailable = rows.filter((r) => !r.installed && !r.available).map((r) => r.e);
    if (unavailable.length) problems.push(`the target server lacks extension ${unavailable.join(', ')}, which the backup creates: install it on that server (e.g. the postgresql-<major>-${unavailable[0]} package)`);
    const needSuper = rows.filter((r) => (!r.installed || plan.clean) && r.available && r.superuser && !role.su).map((r) => r.e);
    if (needSuper.length) problems.push(`role ${role.u} may not create extension ${needSuper.join(', ')} (it needs a superuser): create ${needSuper.length > 1 ? 'them' : 'it'} in the target as a superuser first${plan.clean ? ' and restore without --clean into an empty database' : ''}, or restore as a superuser`);
  }

  let droppedShare = 0;
  if (plan.clean) {
    const dropped = await droppedObjects(client, plan);
    problems.push(...(await cleanProblems(client, plan, role.u, dropped)));
    const tables = toc.filter((e) => e.desc === 'TABLE').length;
    droppedShare = tables ? Math.min(1, dropped.filter((d) => d.desc === 'TABLE').length / tables) : 0;
  }
  const warnings: string[] = [];
  if (toc.length) {
    const locks = await lockProblems(client, toc, droppedShare);
    problems.push(...locks.problems);
    warnings.push(...locks.warnings);
  }
  return { problems, warnings };
}

/** The existing objects a `--clean` restore drops: those with an archive object's name. */
interface DroppedObject {
  desc: string;
  /** The archive object's name, as in the TOC. */
  identity: string;
  classid: string;
  objid: string;
  /** For relations: their row type, which functions and columns may use. */
  rowtype: string | null;
  relkind: string | null;
  owner: string;
  owned: boolean;
}

/**
 * SQL `LEFT JOIN`s that attach to each row of `row` (an object address: columns `classid`,
 * `objid`, as in pg_depend) the row of the system catalog it names, one join per catalog, under
 * the given alias; a row of another catalog gets NULLs there. Catalog names and aliases are
 * constants of this file, never input.
 */
function catalogJoins(row: string, catalogs: Record<string, string>): string {
  return Object.entries(catalogs)
    .map(([catalog, alias]) => `LEFT JOIN ${catalog} ${alias} ON ${row}.classid = '${catalog}'::regclass AND ${alias}.oid = ${row}.objid`)
    .join('\n         ');
}

async function droppedObjects(client: pg.Client, plan: RestorePlan): Promise<DroppedObject[]> {
  const entries: { desc: string; schema: string; name: string }[] = plan.toc
    ? plan.toc.filter((e) => e.desc in RELATION_DESCS || ROUTINE_DESCS.includes(e.desc) || TYPE_DESCS.includes(e.desc) || e.desc === 'SCHEMA' || e.desc === 'EXTENSION').map((e) => ({ desc: e.desc, schema: e.schema ?? '', name: e.name }))
    : plan.tables.map((t) => ({ desc: 'TABLE', schema: t.schema, name: t.table }));
  if (!entries.length) return [];
  // Routines: "f(integer, integer)" -> quote_ident('f') || '(integer, integer)'.
  const { rows } = await client.query<DroppedObject>(
    `WITH e AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS e(kind, schema, name)),
     found AS (
       SELECT e.kind, e.schema, e.name, 'pg_class'::regclass::oid AS classid, to_regclass(format('%I.%I', e.schema, e.name))::oid AS objid FROM e WHERE e.kind = ANY($4::text[])
       UNION ALL
       SELECT e.kind, e.schema, e.name, 'pg_proc'::regclass::oid, to_regprocedure(format('%I.%I', e.schema, split_part(e.name, '(', 1)) || substr(e.name, strpos(e.name, '(')))::oid FROM e WHERE e.kind = ANY($5::text[]) AND strpos(e.name, '(') > 0
       UNION ALL
       SELECT e.kind, e.schema, e.name, 'pg_type'::regclass::oid, to_regtype(format('%I.%I', e.schema, e.name))::oid FROM e WHERE e.kind = ANY($6::text[])
       UNION ALL
       SELECT e.kind, e.schema, e.name, 'pg_namespace'::regclass::oid, (SELECT oid FROM pg_namespace WHERE nspname = e.name) FROM e WHERE e.kind = 'SCHEMA'
       UNION ALL
       SELECT e.kind, e.schema, e.name, 'pg_extension'::regclass::oid, (SELECT oid FROM pg_extension WHERE extname = e.name) FROM e WHERE e.kind = 'EXTENSION'
     ),
     owned AS (
       SELECT f.*, COALESCE(c.relowner, p.proowner, t.typowner, n.nspowner, x.extowner) AS ownerid, c.reltype AS rowtype, c.relkind::text AS relkind
         FROM found f
         ${catalogJoins('f', { pg_class: 'c', pg_proc: 'p', pg_type: 't', pg_namespace: 'n', pg_extension: 'x' })}
        WHERE f.objid IS NOT NULL
     )
     SELECT kind AS desc, CASE WHEN schema = '' THEN name ELSE schema || '.' || name END AS identity, classid::text AS classid, objid::text AS objid,
            NULLIF(rowtype, 0)::text AS rowtype, relkind, pg_get_userbyid(ownerid)::text AS owner, pg_has_role(ownerid, 'MEMBER') AS owned
       FROM owned`,
    [entries.map((e) => e.desc), entries.map((e) => e.schema), entries.map((e) => e.name), Object.keys(RELATION_DESCS), ROUTINE_DESCS, TYPE_DESCS],
  );
  return rows;
}

async function cleanProblems(client: pg.Client, plan: RestorePlan, role: string, dropped: DroppedObject[]): Promise<string[]> {
  const problems: string[] = [];
  const wrongKind = dropped.filter((d) => d.relkind && RELATION_DESCS[d.desc] && !RELATION_DESCS[d.desc]!.includes(d.relkind));
  for (const d of wrongKind.slice(0, 3)) {
    problems.push(`the target has a ${RELKIND_NAMES[d.relkind!] ?? 'relation'} named ${d.identity} where the backup has a ${d.desc.toLowerCase()}: rename or drop it, or restore into an empty database`);
  }
  const notOwned = dropped.filter((d) => !d.owned);
  if (notOwned.length) {
    const what = notOwned.slice(0, 3).map((d) => `${d.desc.toLowerCase()} ${d.identity} (owner ${d.owner})`).join(', ');
    problems.push(`role ${role} cannot drop ${what}${notOwned.length > 3 ? ` and ${notOwned.length - 3} more` : ''}, which --clean replaces: restore as the owner or a superuser, or into an empty database`);
  }
  // Without a TOC (plain SQL) the backup's views, functions and types are unknown, so a
  // dependent object cannot be told from one the dump itself drops: the transaction finds those.
  if (!dropped.length || !plan.toc) return problems;
  const { rows } = await client.query<{ dependent: string; on: string }>(
    `WITH dropped AS (SELECT * FROM unnest($1::oid[], $2::oid[]) AS x(classid, objid)
                      UNION ALL SELECT 'pg_type'::regclass::oid, t FROM unnest($3::oid[]) AS t),
     deps AS (
       SELECT d.classid, d.objid, d.refclassid, d.refobjid FROM pg_depend d JOIN dropped x ON d.refclassid = x.classid AND d.refobjid = x.objid
        WHERE d.deptype = 'n'
     ),
     top AS (
       SELECT CASE WHEN d.classid IN ('pg_rewrite'::regclass, 'pg_attrdef'::regclass, 'pg_trigger'::regclass, 'pg_policy'::regclass) THEN 'pg_class'::regclass::oid
                   WHEN d.classid = 'pg_constraint'::regclass THEN CASE WHEN con.conrelid <> 0 THEN 'pg_class'::regclass::oid ELSE 'pg_type'::regclass::oid END
                   ELSE d.classid END AS classid,
              CASE WHEN d.classid = 'pg_rewrite'::regclass THEN r.ev_class
                   WHEN d.classid = 'pg_attrdef'::regclass THEN ad.adrelid
                   WHEN d.classid = 'pg_trigger'::regclass THEN tg.tgrelid
                   WHEN d.classid = 'pg_policy'::regclass THEN pol.polrelid
                   WHEN d.classid = 'pg_constraint'::regclass THEN CASE WHEN con.conrelid <> 0 THEN con.conrelid ELSE con.contypid END
                   ELSE d.objid END AS objid,
              d.refclassid, d.refobjid
         FROM deps d
         ${catalogJoins('d', { pg_rewrite: 'r', pg_attrdef: 'ad', pg_trigger: 'tg', pg_policy: 'pol', pg_constraint: 'con' })}
     )
     SELECT DISTINCT (SELECT type || ' ' || identity FROM pg_identify_object(t.classid, t.objid, 0)) AS dependent,
                     (SELECT type || ' ' || identity FROM pg_identify_object(t.refclassid, t.refobjid, 0)) AS on
       FROM top t
      WHERE NOT EXISTS (SELECT 1 FROM dropped x WHERE x.classid = t.classid AND x.objid = t.objid)
        AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = t.classid AND e.objid = t.objid AND e.deptype = 'e')
      ORDER BY 1, 2
      LIMIT 20`,
    [dropped.map((d) => d.classid), dropped.map((d) => d.objid), dropped.flatMap((d) => (d.rowtype ? [d.rowtype] : []))],
  );
  if (rows.length) {
    const first = rows.slice(0, 3).map((r) => `${r.dependent} depends on ${r.on}`).join('; ');
    problems.push(
      `${first}${rows.length > 3 ? ` (and ${rows.length - 3} more)` : ''}: --clean drops and re-creates the backup's objects, and the target has objects outside the backup that depend on them; drop those first (and re-create them after the restore), or restore into an empty database`,
    );
  }
  return problems;
}

const RELKIND_NAMES: Record<string, string> = { r: 'table', p: 'partitioned table', v: 'view', m: 'materialized view', f: 'foreign table', S: 'sequence', i: 'index', c: 'composite type' };

/**
 * The lock table's size: `max_locks_per_transaction × (MaxBackends + max_prepared_transactions)`,
 * where MaxBackends is `max_connections + autovacuum_max_workers + 1 + max_worker_processes +
 * max_wal_senders` (PostgreSQL docs 20.12 "Lock Management"; InitializeMaxBackends in postinit.c).
 */
async function lockProblems(client: pg.Client, toc: TocEntry[], droppedShare: number): Promise<{ problems: string[]; warnings: string[] }> {
  const { rows } = await client.query<{ name: string; setting: string }>(
    `SELECT name, setting FROM pg_settings WHERE name IN ('max_locks_per_transaction', 'max_connections', 'autovacuum_max_workers', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions')`,
  );
  const g = (name: string) => Number(rows.find((r) => r.name === name)?.setting ?? 0);
  const per = g('max_locks_per_transaction');
  const slots = g('max_connections') + g('autovacuum_max_workers') + 1 + g('max_worker_processes') + g('max_wal_senders') + g('max_prepared_transactions');
  const capacity = per * slots;
  const needed = estimateLocks(toc, droppedShare);
  if (needed <= capacity) return { problems: [], warnings: [] };
  const suggest = Math.ceil((needed * 1.5) / slots);
  const line = `the restore runs in one transaction and takes about ${needed} locks, more than the target server's lock table holds (max_locks_per_transaction ${per} × ${slots} server processes and prepared transactions = ${capacity}): set max_locks_per_transaction to ${suggest} or more on that server and restart it`;
  // The lock table can grow into spare shared memory (measured: 304 lock objects fit a table of
  // 270), so only an estimate far beyond it refuses; a failure nearer the edge is rolled back and named.
  return needed > 2 * capacity ? { problems: [line], warnings: [] } : { problems: [], warnings: [line.replace(/^the restore runs/, 'the restore may fail: it runs')] };
}

// ---------------------------------------------------------------------------------------------
// Whose fault

/** Who made a restore fail: the target database, the backup archive, or the storage it came from. */
export type FaultParty = 'target' | 'archive' | 'storage';

/** A restore that failed or was refused, with whose fault it was. Exit code 1. */
export interface RestoreFault {
  party: FaultParty;
  /** One line: what went wrong and what to do. */
  reason: string;
}

/**
 * Attributes a failed `pg_restore` / `psql` run to a party from its whole stderr (PostgreSQL's
 * own messages: `pg_restore: error: could not execute query: ERROR: …` is the server refusing a
 * statement, i.e. the target; `could not read input file`, `unexpected end of file`, `did not
 * find magic string`… are pg_restore reading the archive, i.e. the archive). Data errors in a
 * `COPY` (a malformed row) are the archive's. Returns one line with a remedy where one is known.
 * Secrets are redacted.
 */
export function classifyRestoreFailure(program: string, stderr: string, exit: string): RestoreFault {
  const text = redact(stderr);
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const serverError = /(?:ERROR|FATAL):\s+(.*)$/m.exec(text)?.[1]?.trim();
  const detail = /^DETAIL:\s+(.*)$/m.exec(text)?.[1]?.trim();
  const hint = /^HINT:\s+(.*)$/m.exec(text)?.[1]?.trim();
  // The statement may span lines (CREATE TABLE …): keep its start, whitespace folded.
  const command = /^Command was:\s+([\s\S]*)/m.exec(text)?.[1]?.replace(/\s+/g, ' ').trim();
  const inCopy = /COPY failed for table|COPY .* FROM stdin|^CONTEXT:\s+COPY /m.test(text);
  const said = (s: string) => s.replace(/\s+/g, ' ').slice(0, 300);
  const restricted = program === 'psql' ? restrictedModeReason(text) : undefined;
  if (restricted) return { party: 'archive', reason: restricted };
  if (serverError) {
    const full = `${serverError}${detail ? ` (${detail})` : ''}`;
    if (inCopy && /invalid input syntax|extra data after last expected column|missing data for column|invalid byte sequence|unterminated CSV|end-of-copy marker|row field count/i.test(serverError)) {
      return { party: 'archive', reason: `the archive's data is malformed: ${said(full)}` };
    }
    if (/out of shared memory/i.test(serverError) || /max_locks_per_transaction/i.test(hint ?? '')) {
      return { party: 'target', reason: `the target server ran out of lock table space in the single restore transaction (${said(full)}): raise max_locks_per_transaction and restart that server` };
    }
    if (/role "[^"]+" does not exist/i.test(serverError)) {
      return { party: 'target', reason: `${said(full)}: create that role on the target server, or restore with --no-owner --no-acl` };
    }
    if (/must be (?:owner|able to SET ROLE|member)|permission denied/i.test(serverError)) {
      return { party: 'target', reason: `the restoring role lacks a right in the target: ${said(full)}${command ? `, at: ${said(command).slice(0, 120)}` : ''}; restore as the database owner or a superuser${/OWNER|SET ROLE|member/i.test(`${serverError} ${command}`) ? ', or with --no-owner' : ''}${/GRANT|REVOKE/i.test(command ?? '') ? ', or with --no-acl' : ''}` };
    }
    if (/because other objects depend on it/i.test(serverError)) {
      return { party: 'target', reason: `${said(full)}: drop the dependent objects first (re-create them after the restore), or restore into an empty database` };
    }
    if (/already exists/i.test(serverError)) {
      return { party: 'target', reason: `${said(full)}: the target already holds that object; restore into an empty database, or with --clean` };
    }
    if (/could not extend file|No space left on device|disk full/i.test(serverError)) {
      return { party: 'target', reason: `the target server ran out of disk space: ${said(full)}` };
    }
    if (/extension|control file/i.test(serverError) && /not available|could not open extension control file/i.test(serverError)) {
      return { party: 'target', reason: `${said(full)}: install that extension on the target server` };
    }
    if (/syntax error at end of input|unterminated quoted/i.test(serverError) && program === 'psql') {
      return { party: 'archive', reason: `the SQL is cut short: ${said(full)}` };
    }
    return { party: 'target', reason: `the target refused a statement: ${said(full)}${command ? `, at: ${said(command).slice(0, 120)}` : ''}` };
  }
  if (/connection to server .* failed|server closed the connection|could not connect|terminating connection|connection .* lost|could not send data to server|no connection to the server/i.test(text)) {
    const line = lines.find((l) => /connection|connect/i.test(l)) ?? lines.at(-1) ?? '';
    return { party: 'target', reason: `the connection to the target broke: ${said(line.replace(/^(pg_restore|psql): (error: )?/, ''))}` };
  }
  const archiveLine = lines.find((l) => /could not read|unexpected end of file|did not find magic string|unsupported version|could not uncompress|corrupt|unrecognized data block|input file|could not find block|invalid|expected format|data block/i.test(l));
  const line = archiveLine ?? lines.filter((l) => !/^(pg_restore|psql): (detail|hint):/i.test(l)).at(-1);
  return { party: 'archive', reason: `${program} cannot read the archive${line ? `: ${said(line.replace(/^(pg_restore|psql): (error: )?/, ''))}` : ` (${exit})`}` };
}

// Lock waits

/** A session that holds a lock another one waits for (pg_stat_activity, pg_blocking_pids). */
export interface LockBlocker {
  pid: number;
  /** `application_name`; empty when the session set none. */
  application: string;
  /** `state` (active, idle in transaction, …); null when the role may not see it (pg_read_all_stats). */
  state: string | null;
  /** Since when it holds its locks at the latest: its transaction's start (`xact_start`, else `state_change`), ISO 8601 UTC. */
  since: string | null;
}

/** A database text shown on a terminal: control characters escaped, at most 60 characters. */
function shown(text: string): string {
  return JSON.stringify(text.slice(0, 60)).replace(/[\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** One line for blocking sessions: `pid 123 (application "psql", idle in transaction since 2026-…Z, 12 s ago)`. */
export function describeBlockers(blockers: LockBlocker[], now = Date.now()): string {
  if (blockers.length === 0) return 'a session that ended meanwhile';
  return blockers
    .map((b) => {
      const since = b.since ? ` since ${b.since} (${Math.max(0, Math.round((now - Date.parse(b.since)) / 1000))} s ago)` : '';
      return `pid ${b.pid} (application ${shown(b.application)}, ${b.state ?? 'state not visible to this role'}${since})`;
    })
    .join(', ');
}

/** A watch over the lock waits of one session ({@link watchLockWaits}). */
export interface LockWatch {
  /** Stops watching and closes its connection. */
  stop(): Promise<void>;
  /**
   * Once the wait ran out and the session's statement was cancelled: who blocked it, and how
   * long it waited (ms); else undefined. Waits for a poll in flight first: the cancelled session
   * may fail (and its caller ask) before the answer to `pg_cancel_backend` reaches the watch.
   */
  timedOut(): Promise<{ blockers: LockBlocker[]; waitedMs: number } | undefined>;
}

/**
 * Watches the session named `applicationName` on `client`'s server (the restore's pg_restore or
 * psql) every `pollMs` (default 1000): while it waits for a lock (`pg_stat_activity.wait_event_type
 * = 'Lock'`), the sessions blocking it come from `pg_blocking_pids()`. After `noticeAfterMs`
 * (default 5000) of one wait, `notice` gets one line naming them; after `timeoutMs`, the waiting
 * statement is cancelled (`pg_cancel_backend`, the restore then fails and its transaction rolls
 * back) and {@link LockWatch.timedOut} tells who blocked it. A watchdog and not `lock_timeout`:
 * pg_restore and pg_dump's plain SQL set `lock_timeout = 0` at their start, which would override
 * the session's setting. The wait is measured from the first poll that saw it (so up to `pollMs`
 * short). `client` is the watch's own connection, closed by `stop()`.
 */
export function watchLockWaits(client: pg.Client, applicationName: string, options: { timeoutMs: number; notice: (line: string) => void; noticeAfterMs?: number; pollMs?: number }): LockWatch {
  const noticeAfter = options.noticeAfterMs ?? 5_000;
  const pollMs = options.pollMs ?? 1_000;
  let waitingSince: number | undefined;
  let noticed = false;
  let result: { blockers: LockBlocker[]; waitedMs: number } | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> = Promise.resolve();
  const poll = async () => {
    const r = await client.query<{ pid: number; waiting: boolean; blockers: LockBlocker[] | null }>(
      `SELECT a.pid, a.wait_event_type = 'Lock' AS waiting,
              (SELECT json_agg(json_build_object('pid', b.pid, 'application', coalesce(b.application_name, ''), 'state', b.state,
                        'since', to_char(coalesce(b.xact_start, b.state_change) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) ORDER BY b.pid)
                 FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid))) AS blockers
         FROM pg_stat_activity a WHERE a.application_name = $1 AND a.pid <> pg_backend_pid()`,
      [applicationName],
    );
    const row = r.rows.find((x) => x.waiting);
    if (!row) {
      waitingSince = undefined;
      noticed = false;
      return;
    }
    const now = Date.now();
    waitingSince ??= now;
    const waited = now - waitingSince;
    const blockers = row.blockers ?? [];
    if (waited >= options.timeoutMs) {
      const cancelled = await client.query<{ ok: boolean }>(`SELECT pg_cancel_backend(pid) AS ok FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, [row.pid]);
      if (cancelled.rows[0]?.ok) {
        result = { blockers, waitedMs: waited };
        stopped = true;
      }
      return;
    }
    if (waited >= noticeAfter && !noticed) {
      noticed = true;
      options.notice(`the restore has waited ${Math.round(waited / 1000)} s for a lock held by ${describeBlockers(blockers, now)}; it gives up after ${Math.round(options.timeoutMs / 1000)} s (--lock-wait-timeout)`);
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      polling = poll().catch(() => undefined).then(schedule);
    }, pollMs);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await polling;
      await client.end().catch(() => undefined);
    },
    async timedOut() {
      await polling;
      return result;
    },
  };
}
