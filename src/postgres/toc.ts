import type pg from 'pg';
import { UsageError } from '../errors.ts';
import { parseToc, type TocEntry } from './target.ts';

// Selecting tables (and what belongs to them) from an archive's TOC, for `restore --table` and
// `restore --schema`: the selection becomes a `pg_restore -L` list.
//
// The TOC is `pg_restore --list --verbose` (pg_backup_archiver.c `PrintTOCSummary`): one line per
// entry, `<dumpId>; <tableoid> <oid> <desc> <schema> <tag> <owner>`, and with --verbose, below an
// entry that has dependencies, `;\tdepends on: <dumpId> <dumpId> …` (the dump IDs of the entries
// it needs, pg_dump's `dumpableObject.dependencies`). Names are printed unquoted, so a tag may
// hold spaces (`CONSTRAINT public we ird we ird_pkey`: tag = table name + constraint name); the
// dependencies, not the names, say what belongs to a table.

/** A TOC entry with the dump IDs it depends on (`pg_restore --list --verbose`). */
export interface TocItem extends TocEntry {
  /** Dump IDs of the entries this one needs. */
  deps: number[];
  /** The line as pg_restore printed it (written back into the `-L` list). */
  line: string;
}

/**
 * Parses `pg_restore --list --verbose` output: the entries ({@link parseToc}) and, from the
 * `;\tdepends on:` line under each, its dependencies. Without `--verbose` every `deps` is empty.
 */
export function parseTocWithDependencies(text: string): TocItem[] {
  const entries = parseToc(text);
  const byId = new Map<number, TocItem>(entries.map((e) => [e.dumpId, { ...e, deps: [], line: '' }]));
  let current: TocItem | undefined;
  for (const line of text.split('\n')) {
    const head = /^(\d+); /.exec(line);
    if (head) {
      current = byId.get(Number(head[1]));
      if (current) current.line = line;
      continue;
    }
    const deps = /^;\s*depends on:\s*(.*)$/.exec(line);
    if (deps && current) current.deps.push(...deps[1]!.trim().split(/\s+/).filter(Boolean).map(Number));
  }
  return [...byId.values()];
}

/** A table named on the command line. */
export interface TableName {
  schema: string;
  table: string;
}

/**
 * Parses `SCHEMA.TABLE` as given to `--table`: each part either plain (taken as written, case
 * kept: `public.Orders` is the table `Orders`) or double-quoted (`"my schema"."odd.name"`, `""`
 * inside for a quote). A name without a schema is refused (a backup may hold the name in several).
 * @throws UsageError naming the value and the expected form.
 */
export function parseTableName(value: string): TableName {
  const parts: string[] = [];
  let i = 0;
  const bad = () => new UsageError(`--table ${JSON.stringify(value)} is not SCHEMA.TABLE: give the schema and the table (e.g. --table public.orders; quote names holding a dot: --table '"my schema"."a.b"')`);
  while (i <= value.length) {
    if (value[i] === '"') {
      let name = '';
      i++;
      for (;;) {
        if (i >= value.length) throw bad();
        if (value[i] === '"') {
          if (value[i + 1] === '"') {
            name += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        name += value[i++];
      }
      parts.push(name);
    } else {
      const end = parts.length === 0 ? value.indexOf('.', i) : value.length;
      const stop = end < 0 ? value.length : end;
      parts.push(value.slice(i, stop));
      i = stop;
    }
    if (i >= value.length) break;
    if (value[i] !== '.') throw bad();
    i++;
  }
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw bad();
  return { schema: parts[0], table: parts[1] };
}

/**
 * Entry types that belong to the table (or sequence) they depend on, and come along with it:
 * its data, column defaults, constraints, indexes, triggers, rules, RLS policies and the RLS
 * switch, extended statistics, comments, grants and security labels, owned sequences (pg_dump
 * makes a serial or identity sequence depend on its table) with their `setval`, partitions'
 * attachment. A foreign key comes only when every table it references is selected.
 */
const BELONGING = new Set([
  'TABLE DATA', 'DEFAULT', 'CONSTRAINT', 'CHECK CONSTRAINT', 'FK CONSTRAINT', 'INDEX', 'INDEX ATTACH', 'TRIGGER', 'RULE', 'POLICY', 'ROW SECURITY',
  'STATISTICS', 'COMMENT', 'ACL', 'SECURITY LABEL', 'SEQUENCE', 'SEQUENCE OWNED BY', 'SEQUENCE SET', 'TABLE ATTACH',
]);

/** Entries pg_restore needs for the session whatever is selected (encoding, standard_conforming_strings, search_path). */
const SESSION = new Set(['ENCODING', 'STDSTRINGS', 'SEARCHPATH']);

/**
 * Objects a selected entry may need that are not the selected tables' own: restored too when
 * the target lacks them (a trigger's function into an empty database), left alone when it has
 * them. Anything else a selected entry needs from outside the selection is the target's to have.
 */
const PREREQUISITE = new Set(['SCHEMA', 'FUNCTION', 'PROCEDURE', 'TYPE', 'DOMAIN', 'SEQUENCE', 'COLLATION', 'EXTENSION']);

/** A foreign key of a selected table that references a table outside the selection: not restored, reported. */
export interface OutsideForeignKey {
  /** The table the constraint is on, `schema.table`. */
  table: string;
  /** The constraint's name. */
  constraint: string;
  /** The referenced tables that are not selected, `schema.table`. */
  references: string[];
}

/** What {@link selectTables} picked from the TOC. */
export interface TocSelection {
  /** The entries to restore, in archive order (the `-L` list). */
  entries: TocItem[];
  /** The selected tables. */
  tables: TableName[];
  /** Foreign keys left out because they reference a table outside the selection. */
  outsideForeignKeys: OutsideForeignKey[];
  /** Objects outside the selection restored because the target lacked them (`function public.trg()`). */
  prerequisites: string[];
}

/** `schema.name` of an entry, for messages (unquoted, as pg_restore prints it). */
export function entryName(e: TocEntry): string {
  return e.schema ? `${e.schema}.${e.name}` : e.name;
}

/**
 * Picks from `toc` the tables named by `tables` (`TABLE` entries) and every table (`TABLE`
 * entry) in `schemas`, a partitioned table with its partitions (at every level, with their
 * `TABLE ATTACH` and `INDEX ATTACH`), with what belongs to them ({@link BELONGING}, following the
 * dependencies to a fixed point, so a sequence's `setval`, comment and grant come with it). For
 * `schemas`, the schema itself (its `SCHEMA` entry, comment and grants) when the target lacks
 * it. A foreign key referencing a table outside the selection is left out and listed in
 * `outsideForeignKeys`. Then the prerequisites ({@link PREREQUISITE}) a selected entry depends on
 * that `exists` says the target lacks are added (and theirs, up to 10 rounds).
 * @param exists - which of the given entries the target already has ({@link targetHas}).
 * @throws UsageError naming the tables and schemas that are not in the backup, with the tables it has.
 */
export async function selectTables(toc: TocItem[], want: { tables: TableName[]; schemas: string[] }, exists: (entries: TocItem[]) => Promise<Set<number>>): Promise<TocSelection> {
  const byId = new Map(toc.map((e) => [e.dumpId, e]));
  const tableEntries = toc.filter((e) => e.desc === 'TABLE');
  const missing: string[] = [];
  const chosen = new Set<number>();
  for (const t of want.tables) {
    const e = tableEntries.find((x) => x.schema === t.schema && x.name === t.table);
    if (e) chosen.add(e.dumpId);
    else missing.push(`table ${t.schema}.${t.table}`);
  }
  for (const s of want.schemas) {
    const inSchema = toc.filter((e) => e.schema === s && e.desc === 'TABLE');
    const schemaEntry = toc.find((e) => e.desc === 'SCHEMA' && e.name === s);
    if (!inSchema.length && !schemaEntry && s !== 'public') missing.push(`schema ${s}`);
    for (const e of inSchema) chosen.add(e.dumpId);
  }
  if (missing.length) {
    const has = tableEntries.map(entryName);
    throw new UsageError(
      `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not in the backup (it holds ${has.length ? `${has.length} table${has.length > 1 ? 's' : ''}: ${has.slice(0, 10).join(', ')}${has.length > 10 ? ', …' : ''}` : 'no table'}): check the name (SCHEMA.TABLE, case as in the database) or pick another backup with --backup`,
    );
  }
  // A partitioned table comes with its partitions (and theirs): pg_dump writes each partition as
  // a TABLE of its own, and a `TABLE ATTACH <partition>` entry that depends on the parent and
  // the partition; without them the parent's rows are not restored and its partitioned index
  // cannot attach.
  const partitions = toc.filter((e) => e.desc === 'TABLE ATTACH').map((e) => {
    const deps = e.deps.map((d) => byId.get(d)).filter((d): d is TocItem => d?.desc === 'TABLE');
    const child = deps.find((d) => d.schema === e.schema && d.name === e.name);
    return { child, parent: deps.find((d) => d !== child) };
  });
  for (let grew = true; grew; ) {
    grew = false;
    for (const { child, parent } of partitions) {
      if (child && parent && chosen.has(parent.dumpId) && !chosen.has(child.dumpId)) {
        chosen.add(child.dumpId);
        grew = true;
      }
    }
  }
  const tables = tableEntries.filter((e) => chosen.has(e.dumpId)).map((e) => ({ schema: e.schema!, table: e.name }));
  const selected = new Set(chosen);
  // The table an entry is on: among the tables it depends on, the one its tag names (`<table>
  // <name>` for constraints, triggers, policies, defaults, rules; `<table>` for its data), the
  // longest such name when several fit; else its only table. An FK depends on the table it
  // references too, and a default on another table's sequence: only their own table counts.
  const ownTable = (e: TocItem): TocItem | undefined => {
    const tables = e.deps.map((d) => byId.get(d)).filter((d): d is TocItem => d?.desc === 'TABLE');
    const named = tables.filter((t) => t.schema === e.schema && (e.name === t.name || e.name.startsWith(`${t.name} `))).sort((a, b) => b.name.length - a.name.length);
    return named[0] ?? (tables.length === 1 ? tables[0] : undefined);
  };
  // An attachment (TABLE ATTACH, INDEX ATTACH) needs both of its sides: a partition restored
  // without its parent stays a table of its own.
  const attachable = (e: TocItem) => e.deps.every((d) => selected.has(d) || !['TABLE', 'INDEX', 'CONSTRAINT'].includes(byId.get(d)?.desc ?? ''));
  // Everything that belongs to a selected entry, to a fixed point (a sequence's SEQUENCE SET, its ACL…).
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of toc) {
      if (selected.has(e.dumpId) || !BELONGING.has(e.desc)) continue;
      if ((e.desc === 'TABLE ATTACH' || e.desc === 'INDEX ATTACH') && !attachable(e)) continue;
      const own = ownTable(e);
      if (own ? chosen.has(own.dumpId) : e.deps.some((d) => selected.has(d))) {
        selected.add(e.dumpId);
        grew = true;
      }
    }
  }
  // Foreign keys to tables outside the selection: left out, named.
  const outsideForeignKeys: OutsideForeignKey[] = [];
  for (const e of toc) {
    if (e.desc !== 'FK CONSTRAINT' || !selected.has(e.dumpId)) continue;
    const table = ownTable(e);
    const outside = e.deps.map((d) => byId.get(d)).filter((d): d is TocItem => d !== undefined && d.desc === 'TABLE' && !chosen.has(d.dumpId));
    // A dependency on a constraint or index of an unselected table (the referenced key) says the same.
    const outsideKeys = e.deps.map((d) => byId.get(d)).filter((d): d is TocItem => d !== undefined && (d.desc === 'CONSTRAINT' || d.desc === 'INDEX') && !selected.has(d.dumpId));
    if (!outside.length && !outsideKeys.length) continue;
    selected.delete(e.dumpId);
    const tableName = table ? entryName(table) : `${e.schema}.?`;
    const references = outside.length
      ? outside.map(entryName)
      : outsideKeys.map((k) => {
          const owner = k.deps.map((d) => byId.get(d)).find((d) => d?.desc === 'TABLE');
          return owner ? entryName(owner) : entryName(k);
        });
    const constraint = table && e.name.startsWith(`${table.name} `) ? e.name.slice(table.name.length + 1) : e.name;
    outsideForeignKeys.push({ table: tableName, constraint, references: [...new Set(references)] });
    // What belonged to that constraint only (its comment) goes with it.
    for (const d of toc) if (selected.has(d.dumpId) && (d.desc === 'COMMENT' || d.desc === 'SECURITY LABEL') && d.deps.length === 1 && d.deps[0] === e.dumpId) selected.delete(d.dumpId);
  }
  // The schemas asked for, when the target lacks them.
  const schemaEntries = toc.filter((e) => e.desc === 'SCHEMA' && want.schemas.includes(e.name));
  const prerequisites: string[] = [];
  if (schemaEntries.length) {
    const have = await exists(schemaEntries);
    for (const s of schemaEntries) if (!have.has(s.dumpId)) addWithOwn(s);
  }
  // Prerequisites the target lacks: a trigger's function, a column's type, a schema.
  for (let round = 0; round < 10; round++) {
    const needed = new Map<number, TocItem>();
    for (const e of toc) {
      if (!selected.has(e.dumpId)) continue;
      for (const d of e.deps) {
        const dep = byId.get(d);
        if (dep && !selected.has(d) && PREREQUISITE.has(dep.desc)) needed.set(d, dep);
      }
    }
    if (!needed.size) break;
    const have = await exists([...needed.values()]);
    const lacking = [...needed.values()].filter((d) => !have.has(d.dumpId));
    if (!lacking.length) break;
    for (const d of lacking) {
      addWithOwn(d);
      prerequisites.push(`${d.desc.toLowerCase()} ${entryName(d)}`);
    }
  }
  for (const e of toc) if (SESSION.has(e.desc)) selected.add(e.dumpId);
  return { entries: toc.filter((e) => selected.has(e.dumpId)), tables, outsideForeignKeys, prerequisites };

  /** Adds `e` and its comment and grants. */
  function addWithOwn(e: TocItem): void {
    selected.add(e.dumpId);
    for (const d of toc) if ((d.desc === 'COMMENT' || d.desc === 'ACL') && d.deps.includes(e.dumpId)) selected.add(d.dumpId);
  }
}

/** The `pg_restore -L` list of `entries`: their lines as pg_restore printed them (only the leading dump ID counts). */
export function tocList(entries: TocItem[]): string {
  return `${entries.map((e) => e.line || `${e.dumpId};`).join('\n')}\n`;
}

/** Types {@link targetHas} looks up, and the relation kinds that count. */
const RELATIONS = new Set(['TABLE', 'SEQUENCE', 'VIEW', 'MATERIALIZED VIEW', 'FOREIGN TABLE', 'INDEX']);

/**
 * Which of `entries` the database `client` is connected to already has, by kind: schemas
 * (`pg_namespace`), relations (`to_regclass`), routines (`to_regprocedure` of the TOC's
 * `name(argument types)`), types and domains (`to_regtype`), collations (`pg_collation`),
 * extensions (`pg_extension`). Entries of other kinds are reported as present (nothing is
 * restored for them that the target does not ask for).
 * @returns the dump IDs of the entries the target has.
 */
export async function targetHas(client: pg.Client, entries: TocEntry[]): Promise<Set<number>> {
  const known = entries.filter((e) => e.desc === 'SCHEMA' || RELATIONS.has(e.desc) || e.desc === 'FUNCTION' || e.desc === 'PROCEDURE' || e.desc === 'TYPE' || e.desc === 'DOMAIN' || e.desc === 'COLLATION' || e.desc === 'EXTENSION');
  const out = new Set(entries.filter((e) => !known.includes(e)).map((e) => e.dumpId));
  if (!known.length) return out;
  const { rows } = await client.query<{ id: string; found: boolean }>(
    `SELECT e.id::text AS id,
            CASE
              WHEN e.kind = 'SCHEMA' THEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = e.name)
              WHEN e.kind = 'EXTENSION' THEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = e.name)
              WHEN e.kind = 'COLLATION' THEN EXISTS (SELECT 1 FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace WHERE n.nspname = e.schema AND c.collname = e.name)
              WHEN e.kind IN ('FUNCTION', 'PROCEDURE') THEN strpos(e.name, '(') > 0 AND to_regprocedure(format('%I.%I', e.schema, split_part(e.name, '(', 1)) || substr(e.name, strpos(e.name, '('))) IS NOT NULL
              WHEN e.kind IN ('TYPE', 'DOMAIN') THEN to_regtype(format('%I.%I', e.schema, e.name)) IS NOT NULL
              ELSE to_regclass(format('%I.%I', e.schema, e.name)) IS NOT NULL
            END AS found
       FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) AS e(id, kind, schema, name)`,
    [known.map((e) => e.dumpId), known.map((e) => e.desc), known.map((e) => e.schema ?? ''), known.map((e) => e.name)],
  );
  for (const r of rows) if (r.found) out.add(Number(r.id));
  return out;
}

/**
 * The selected relations (tables, their sequences and indexes) that already exist in the
 * target: a restore without `--clean` would fail on them. Indexes and constraints are named
 * `<table> <name>` in the TOC for constraints only; index entries carry the index name.
 * @returns `schema.name` of each, in archive order.
 */
export async function existingRelations(client: pg.Client, selection: TocSelection): Promise<string[]> {
  const relations = selection.entries.filter((e) => e.desc === 'TABLE' || e.desc === 'SEQUENCE' || e.desc === 'INDEX');
  const have = await targetHas(client, relations);
  return relations.filter((e) => have.has(e.dumpId)).map(entryName);
}
