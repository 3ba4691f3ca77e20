import type pg from 'pg';
import { UsageError } from '../errors.ts';

/** pg_dump archive formats the tool writes. Source: PostgreSQL docs, pg_dump `--format`. */
export const FORMATS = ['custom', 'plain', 'directory'] as const;
export type DumpFormat = (typeof FORMATS)[number];

/** What to dump and how: the pg_dump options a user needs, without a pass-through hack. */
export interface DumpSelection {
  /** Default `custom`. */
  format?: DumpFormat;
  /** Parallel dump jobs; `directory` format only (`pg_dump --jobs`). */
  jobs?: number;
  /** `plain` only: emit `DROP … IF EXISTS` before each `CREATE` (`--clean --if-exists`), so a restore is idempotent. */
  clean?: boolean;
  /** Do not dump ownership (`--no-owner`). */
  noOwner?: boolean;
  /** Do not dump privileges (`--no-acl`). */
  noAcl?: boolean;
  /** Only these schemas (`--schema`, psql patterns). */
  schemas?: string[];
  excludeSchemas?: string[];
  /** Only these tables (`--table`, psql patterns). */
  tables?: string[];
  excludeTables?: string[];
  /** Dump these tables' definitions but not their rows (`--exclude-table-data`). */
  excludeTableData?: string[];
  /**
   * How long pg_dump waits for its ACCESS SHARE locks before failing (`--lock-wait-timeout`),
   * so a dump queued behind DDL fails fast instead of stalling that DDL and everything queued
   * behind it. Default `60s`; `0` waits forever.
   */
  lockWaitTimeout?: string;
  /** Extra pg_dump arguments, for options this tool does not model. */
  extraArgs?: string[];
}

/** Arguments the tool controls itself; an extra argument may not set them. */
const RESERVED = /^(-[FfZjd]|--(format|file|compress|jobs|dbname|snapshot|host|port|username|password|no-password)(=|$))/;

/**
 * Validates a selection.
 * @throws UsageError: an unknown format, `jobs` without the directory format, `clean` without plain, a reserved extra argument.
 */
export function validateSelection(s: DumpSelection): Required<Pick<DumpSelection, 'format'>> & DumpSelection {
  const format = s.format ?? 'custom';
  if (!FORMATS.includes(format)) throw new UsageError(`unknown format ${JSON.stringify(format)}: use custom, plain or directory`);
  if (s.jobs !== undefined) {
    if (!Number.isInteger(s.jobs) || s.jobs < 1 || s.jobs > 64) throw new UsageError(`--jobs must be a whole number from 1 to 64 (got ${s.jobs})`);
    if (s.jobs > 1 && format !== 'directory') throw new UsageError(`--jobs ${s.jobs} needs --format directory: only the directory format dumps in parallel`);
  }
  if (s.clean && format !== 'plain') throw new UsageError('--clean needs --format plain (custom and directory archives choose --clean at restore time)');
  if (s.lockWaitTimeout !== undefined && !/^(0|\d+(ms|s|min|h)?)$/.test(s.lockWaitTimeout.trim())) {
    throw new UsageError(`--lock-wait-timeout ${JSON.stringify(s.lockWaitTimeout)} is not a timeout: use e.g. 60s, 500ms, 2min, or 0 for none`);
  }
  for (const arg of s.extraArgs ?? []) {
    if (RESERVED.test(arg)) throw new UsageError(`extra pg_dump argument ${JSON.stringify(arg)} is set by pg-backup itself: use its own option instead`);
  }
  return { ...s, format };
}

/** pg_dump's arguments for a selection (without format-specific output, snapshot or connection). */
export function pgDumpArgs(s: DumpSelection): string[] {
  const args: string[] = [];
  if (s.clean) args.push('--clean', '--if-exists');
  if (s.noOwner) args.push('--no-owner');
  if (s.noAcl) args.push('--no-acl');
  for (const p of s.schemas ?? []) args.push(`--schema=${p}`);
  for (const p of s.excludeSchemas ?? []) args.push(`--exclude-schema=${p}`);
  for (const p of s.tables ?? []) args.push(`--table=${p}`);
  for (const p of s.excludeTables ?? []) args.push(`--exclude-table=${p}`);
  for (const p of s.excludeTableData ?? []) args.push(`--exclude-table-data=${p}`);
  if ((s.schemas?.length ?? 0) + (s.tables?.length ?? 0) > 0) args.push('--strict-names');
  const timeout = (s.lockWaitTimeout ?? '60s').trim();
  if (timeout !== '0') args.push(`--lock-wait-timeout=${timeout}`);
  args.push(...(s.extraArgs ?? []));
  return args;
}

/**
 * Converts a psql name pattern (PostgreSQL docs, psql "Patterns") into anchored regular
 * expressions for the schema part and the name part, as pg_dump does: unquoted letters fold
 * to lower case, double quotes keep case and make `*`, `?` and `.` literal, `*` matches any
 * sequence, `?` any character, `.` separates schema from name; other regex syntax passes
 * through.
 */
export function patternToRegex(pattern: string): { schema: string | undefined; name: string } {
  const parts: string[] = [''];
  let inQuotes = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '"') {
      if (inQuotes && pattern[i + 1] === '"') {
        parts[parts.length - 1] += '"';
        i++;
      } else inQuotes = !inQuotes;
    } else if (inQuotes) {
      parts[parts.length - 1] += c.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
    } else if (c === '.') {
      parts.push('');
    } else if (c === '*') {
      parts[parts.length - 1] += '.*';
    } else if (c === '?') {
      parts[parts.length - 1] += '.';
    } else if (c === '$') {
      parts[parts.length - 1] += '\\$';
    } else {
      parts[parts.length - 1] += c.toLowerCase();
    }
  }
  const anchor = (p: string) => `^(${p})$`;
  if (parts.length === 1) return { schema: undefined, name: anchor(parts[0]!) };
  return { schema: anchor(parts.at(-2)!), name: anchor(parts.at(-1)!) };
}

/** A table pg_dump would dump, and whether its rows are dumped. */
export interface SelectedTable {
  schema: string;
  table: string;
  withData: boolean;
}

/**
 * Applies a selection's schema and table patterns to the database's user tables the way pg_dump
 * does, so the manifest counts exactly the rows that are dumped: table patterns match tables,
 * views, sequences and the like (only ordinary tables hold rows to count), an unqualified table
 * pattern only matches tables visible on the search path, and `--table` wins over
 * `--exclude-schema` (but not over `--exclude-table`). Source: pg_dump.c,
 * `expand_table_name_patterns` and `selectDumpableTable`.
 * @throws UsageError naming an include pattern (`--schema`, `--table`) that matches nothing (a typo would otherwise dump the wrong thing silently).
 */
export async function selectTables(
  client: pg.Client,
  all: { schema: string; table: string }[],
  s: DumpSelection,
  warn: (message: string) => void = () => undefined,
): Promise<SelectedTable[]> {
  const key = (schema: string, table: string) => `${schema}\u0000${table}`;
  const known = new Set(all.map((t) => key(t.schema, t.table)));
  const matches = async (patterns: string[] | undefined, kind: 'schema' | 'table', option: string, include: boolean) => {
    if (!patterns?.length) return undefined;
    const hits = new Set<string>();
    for (const p of patterns) {
      const rx = patternToRegex(p);
      // PostgreSQL's own regex engine (~), as pg_dump uses.
      const { rows } =
        kind === 'schema'
          ? await client.query<{ schema: string; table: string | null }>(
              `SELECT n.nspname AS schema, c.relname AS table FROM pg_namespace n
                 LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'S')
                WHERE n.nspname ~ $1`,
              [rx.name],
            )
          : await client.query<{ schema: string; table: string }>(
              `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relname ~ $2
                  AND ($1::text IS NULL AND pg_catalog.pg_table_is_visible(c.oid) OR n.nspname ~ $1)`,
              [rx.schema ?? null, rx.name],
            );
      if (rows.length === 0) {
        const message = `${option} ${JSON.stringify(p)} matches no ${kind} in this database`;
        if (include) throw new UsageError(`${message}: check the pattern (psql patterns: * and ?, "Quoted" for case; an unqualified table must be on the search path)`);
        warn(`${message}; nothing is excluded by it`);
      }
      for (const r of rows) if (r.table !== null && known.has(key(r.schema, r.table))) hits.add(key(r.schema, r.table));
    }
    return hits;
  };
  const includeSchemas = await matches(s.schemas, 'schema', '--schema', true);
  const excludeSchemas = await matches(s.excludeSchemas, 'schema', '--exclude-schema', false);
  const includeTables = await matches(s.tables, 'table', '--table', true);
  const excludeTables = await matches(s.excludeTables, 'table', '--exclude-table', false);
  const noData = await matches(s.excludeTableData, 'table', '--exclude-table-data', false);
  return all
    .map((t) => ({ ...t, key: key(t.schema, t.table) }))
    .filter((t) => (includeTables ? includeTables.has(t.key) : (!includeSchemas || includeSchemas.has(t.key)) && !excludeSchemas?.has(t.key)))
    .filter((t) => !excludeTables?.has(t.key))
    .map((t) => ({ schema: t.schema, table: t.table, withData: !noData?.has(t.key) }));
}
