import type pg from 'pg';
import { UsageError } from '../errors.ts';
import { selectTables, type DumpSelection } from './dump-options.ts';

/**
 * Why the dump's role cannot read one object pg_dump (or our row count) would read:
 * - `schema`: no USAGE on the schema that holds tables or sequences the dump reads
 *   (`LOCK TABLE`, `COPY`, `SELECT … FROM seq` all resolve the name through it: "permission
 *   denied for schema");
 * - `select`: no SELECT on a table whose rows are dumped (COPY), no right to lock a table whose
 *   definition alone is dumped (pg_dump takes `LOCK TABLE … IN ACCESS SHARE MODE` on every table
 *   it dumps: SELECT up to PostgreSQL 15; from 16 also INSERT, UPDATE, DELETE or TRUNCATE, commit
 *   c44f6334 "Simplify permissions for LOCK TABLE"), or no SELECT on a sequence whose value is
 *   dumped (`SELECT last_value, is_called FROM seq`);
 * - `rls`: row-level security applies to the role on a table whose rows are dumped: pg_dump
 *   runs with `row_security = off` and then fails ("query would be affected by row-level
 *   security policy") unless the role owns the table (without FORCE ROW LEVEL SECURITY), is a
 *   superuser or has BYPASSRLS;
 * - `large-objects`: large objects without SELECT for the role (dumped when no `--schema` or
 *   `--table` is given, or with `--blobs`; never with `--no-blobs` or `--schema-only`), unless
 *   `lo_compat_privileges` is on.
 * Sources: PostgreSQL docs, "LOCK" (required privileges), "Row Security Policies" and the
 * `row_security` setting, pg_dump's `--enable-row-security`, "Large Objects: access privileges";
 * pg_dump.c (`getTables` locks, `dumpSequenceData`, `processExtensionTables`).
 */
export type UnreadableReason = 'schema' | 'select' | 'rls' | 'large-objects';

/** One object the dump would read and the role cannot. */
export interface UnreadableObject {
  reason: UnreadableReason;
  schema: string;
  /** The table or sequence; absent for a schema and for large objects. */
  name?: string;
  /** `table`, `sequence`, `schema` or `large objects`. */
  kind: 'table' | 'sequence' | 'schema' | 'large objects';
  /** Large objects: how many. */
  count?: number;
}

/** A relation the dump may read, with what the role may do on it (one catalog row). */
interface Candidate {
  schema: string;
  table: string;
  kind: string;
  usage: boolean;
  select: boolean;
  /** `LOCK TABLE … IN ACCESS SHARE MODE` is allowed: SELECT, or from PostgreSQL 16 any of INSERT, UPDATE, DELETE, TRUNCATE too. */
  lockable: boolean;
  rls: boolean;
}

/**
 * Finds every object the dump of `selection` would read and the connected role cannot, from the
 * catalog alone (`has_schema_privilege`, `has_table_privilege`, `pg_class.relrowsecurity`,
 * `pg_largeobject_metadata`), before pg_dump starts: the tables, partitioned tables and sequences
 * outside the system schemas that are not extension members, plus the configuration tables of
 * extensions (`pg_extension.extconfig`) whose rows pg_dump dumps, filtered by the selection's
 * `--schema` / `--exclude-schema` / `--table` / `--exclude-table` / `--exclude-table-data`
 * patterns exactly as the dump applies them ({@link selectTables}). A role with
 * `pg_read_all_data` (PostgreSQL 14+) passes the privilege checks; row-level security still
 * applies to it.
 *
 * Run it in the dump's transaction (or anywhere: it only reads the catalog).
 * @returns the unreadable objects, sorted by schema and name; empty when the dump can read all.
 * @throws UsageError from {@link selectTables} for an include pattern that matches nothing.
 */
export async function findUnreadable(client: pg.Client, selection: DumpSelection): Promise<UnreadableObject[]> {
  const { rows } = await client.query<Candidate>(
    `WITH me AS (SELECT rolsuper OR rolbypassrls AS bypass FROM pg_roles WHERE rolname = current_user),
          config AS (SELECT unnest(e.extconfig) AS oid FROM pg_extension e WHERE e.oid >= 16384)
     SELECT n.nspname AS schema, c.relname AS table, c.relkind::text AS kind,
            has_schema_privilege(n.oid, 'USAGE') AS usage,
            has_table_privilege(c.oid, 'SELECT') AS select,
            CASE WHEN current_setting('server_version_num')::int >= 160000
                 THEN has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
                 ELSE has_table_privilege(c.oid, 'SELECT') END AS lockable,
            c.relkind IN ('r', 'p') AND c.relrowsecurity AND NOT (SELECT bypass FROM me)
              AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) AS rls
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'S')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
        AND (NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
             OR c.oid IN (SELECT oid FROM config))
      ORDER BY 1, 2`,
  );
  const extra = selection.extraArgs ?? [];
  const has = (...flags: string[]) => extra.some((a) => flags.includes(a));
  const schemaOnly = has('-s', '--schema-only');
  const rowSecurity = has('--enable-row-security');
  const byKey = new Map(rows.map((r) => [`${r.schema}\u0000${r.table}`, r]));
  const selected = (await selectTables(client, rows, selection)).map((t) => (schemaOnly ? { ...t, withData: false } : t));
  const out: UnreadableObject[] = [];
  const schemasWithout = new Set<string>();
  for (const t of selected) {
    const r = byKey.get(`${t.schema}\u0000${t.table}`)!;
    const kind = r.kind === 'S' ? 'sequence' : 'table';
    // A sequence's definition comes from pg_sequence; only its value (its "data") is read from it.
    if (kind === 'sequence' && !t.withData) continue;
    if (!r.usage) {
      schemasWithout.add(r.schema);
      continue;
    }
    // Rows dumped: COPY needs SELECT. Definition only: pg_dump still locks the table (tables, not sequences).
    if (t.withData ? !r.select : kind === 'table' && !r.lockable) out.push({ reason: 'select', kind, schema: r.schema, name: r.table });
    else if (r.rls && t.withData && !rowSecurity) out.push({ reason: 'rls', kind, schema: r.schema, name: r.table });
  }
  for (const schema of schemasWithout) out.push({ reason: 'schema', kind: 'schema', schema });
  const largeObjects = !schemaOnly && !has('-B', '--no-blobs', '--no-large-objects') && (has('-b', '--blobs', '--large-objects') || !(selection.schemas?.length || selection.tables?.length));
  if (largeObjects) {
    const lo = await client.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM pg_largeobject_metadata m
        WHERE current_setting('lo_compat_privileges') <> 'on'
          AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
          AND NOT pg_has_role(m.lomowner, 'USAGE')
          AND NOT EXISTS (SELECT 1 FROM aclexplode(m.lomacl) a
                           WHERE a.privilege_type = 'SELECT' AND (a.grantee = 0 OR pg_has_role(a.grantee, 'USAGE')))`,
    );
    const n = Number(lo.rows[0]!.n);
    if (n > 0) out.push({ reason: 'large-objects', kind: 'large objects', schema: '', count: n });
  }
  return out.sort((a, b) => (a.reason === 'large-objects' ? 1 : 0) - (b.reason === 'large-objects' ? 1 : 0) || a.schema.localeCompare(b.schema) || (a.name ?? '').localeCompare(b.name ?? ''));
}

/**
 * Quotes a name as a psql pattern that matches exactly it (PostgreSQL docs, psql "Patterns"):
 * bare when it is lower case letters, digits and `_` (not starting with a digit), else in
 * double quotes with `"` doubled, so upper case, `.`, `*`, `?` and `$` are literal.
 */
export function patternFor(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

/** Quotes a word for a POSIX shell when it needs it (so a printed flag can be pasted). */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The one line that reports what the role cannot read and how to go on: at most `shown` objects
 * named (then "and N more"), the flags that skip each of them ready to paste (`--exclude-schema`
 * per schema without USAGE, `--exclude-table` per table or sequence without SELECT,
 * `--exclude-table-data` per table under row-level security, `--pg-dump-arg=--no-blobs` for
 * large objects), and the grant that reads everything instead. Names are data: quoted as JSON.
 */
export function unreadableMessage(role: string, database: string, objects: UnreadableObject[], shown = 5): string {
  const what = (o: UnreadableObject) => {
    if (o.reason === 'large-objects') return `${o.count} large object${o.count === 1 ? '' : 's'} (no SELECT)`;
    if (o.reason === 'schema') return `schema ${JSON.stringify(o.schema)} (no USAGE)`;
    const name = `${JSON.stringify(o.schema)}.${JSON.stringify(o.name)}`;
    return o.reason === 'rls' ? `table ${name} (row-level security applies to the role)` : `${o.kind} ${name} (no SELECT)`;
  };
  const flag = (o: UnreadableObject) => {
    if (o.reason === 'large-objects') return '--pg-dump-arg=--no-blobs';
    if (o.reason === 'schema') return `--exclude-schema ${shellWord(patternFor(o.schema))}`;
    const pattern = shellWord(`${patternFor(o.schema)}.${patternFor(o.name!)}`);
    return o.reason === 'rls' ? `--exclude-table-data ${pattern}` : `--exclude-table ${pattern}`;
  };
  const count = objects.length;
  const names = objects.slice(0, shown).map(what).join(', ') + (count > shown ? ` and ${count - shown} more` : '');
  const flags = objects.map(flag).join(' ');
  const grant = `GRANT pg_read_all_data TO ${JSON.stringify(role)} (PostgreSQL 14+; else USAGE and SELECT)${objects.some((o) => o.reason === 'rls') ? ', ALTER ROLE … BYPASSRLS for row-level security' : ''}`;
  return `${database}: role ${JSON.stringify(role)} cannot read ${count} object${count === 1 ? '' : 's'} the dump needs: ${names}; skip ${count === 1 ? 'it' : 'them'} with ${flags}, or ${grant}; nothing was written`;
}

/**
 * The dump's pre-flight: {@link findUnreadable}, and when anything is unreadable a UsageError
 * with {@link unreadableMessage}, before pg_dump starts and before any object is written.
 * @throws UsageError (exit 2) naming the unreadable objects and the flags that skip them.
 */
export async function checkReadable(client: pg.Client, selection: DumpSelection, database: string): Promise<void> {
  const objects = await findUnreadable(client, selection);
  if (objects.length === 0) return;
  const role = (await client.query<{ r: string }>('SELECT current_user AS r')).rows[0]!.r;
  throw new UsageError(unreadableMessage(role, database, objects));
}
