import type { Manifest } from '../backup/manifest.ts';
import { CheckFailedError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { countRowsInParallel, sequencesBehind, withClient } from './drill-checks.ts';

// The checks after every restore (plain restore, --table/--schema, --swap, and restore --server
// per database): the restored tables' row counts against the manifest, and the sequences of
// those tables against their columns. The drill runs the same counts (drill-checks.ts), which
// this module reuses.
//
// When they run. pg_restore --single-transaction opens and commits its own transaction on its
// own connection, and pg-backup has no statement in it. So the row counts are taken twice: in the
// archive before the commit (restore.ts, src/postgres/archive-rows.ts: a custom archive's rows as
// it streams to pg_restore, checked when the held-back tail would be released, a directory
// archive's files before pg_restore starts), where a mismatch stops pg_restore and the server
// rolls back — nothing changed; and in the restored database after the commit (this module),
// which also covers plain SQL (counted after the commit only: a mismatch there is reported, exit
// 1, with the way back) and sequences. restore --swap drops its new database when either fails.

/** One restored table's row count against the manifest's. */
export interface TableCheck {
  schema: string;
  table: string;
  /** Rows the manifest recorded (counted in the dump's snapshot). */
  expected: number;
  /** Rows in the restored table; undefined when the table is missing after the restore. */
  actual?: number;
  ok: boolean;
}

/** What {@link runRestoreChecks} found. */
export interface RestoreChecks {
  /** True when every table matched and no sequence is behind. */
  ok: boolean;
  /** Per restored table with data, in the manifest's order. */
  tables: TableCheck[];
  /** Tables restored without their rows (`--exclude-table-data` at dump time): not counted, `schema.table`. */
  notCounted: string[];
  /** Sequences of the restored tables whose next value would collide with existing rows (one line each). */
  sequencesBehind: string[];
  /**
   * The manifest's `privileges` record, when there is one, checked by the hook
   * ({@link RestoreCheckOptions.privileges}); undefined without a record or a hook.
   */
  privileges?: { ok: boolean; problems: string[] };
  /** Every failure, one line each (empty when `ok`). */
  problems: string[];
  /**
   * The row counts taken in the archive as it streamed to pg_restore, before the commit (custom
   * and directory formats; src/postgres/archive-rows.ts): `counted` false with the reason when
   * they could not be (plain SQL, an archive compressed inside).
   */
  beforeCommit?: { counted: boolean; note: string };
}

/** Options of {@link runRestoreChecks}. */
export interface RestoreCheckOptions {
  /** The tables restored (`--table`/`--schema`); default every table of the manifest. */
  tables?: { schema: string; table: string }[];
  /** Connections the row counts run over at once (default 2). */
  connections?: number;
  /**
   * HOOK for the manifest's `privileges` record (owners and grants, added by restore --server's
   * work, src/postgres/privileges.ts): called only when the manifest has that field; returns
   * the problems found (empty when owners and grants match). Absent: the record is not checked
   * (and the result says nothing about it).
   */
  privileges?: (target: DatabaseConnection, record: unknown, signal?: AbortSignal) => Promise<string[]>;
  logger: Logger;
  signal?: AbortSignal;
}

/**
 * The checks after a restore into `target`: `count(*)` of each restored table that the manifest
 * counted, against the manifest's count (the dump's snapshot: they must be equal), over up to
 * `connections` connections; the sequences owned by those tables' integer columns not behind
 * the column's max (what a bad `setval` leaves: the next insert would fail); and, when the
 * manifest carries a `privileges` record and a hook is given, that hook. The manifest records no
 * sequence values, so sequences are checked against the restored rows, not against the manifest.
 * Logs one line per check (and one per failure).
 * @returns the result; never throws for a failed check (see {@link requireChecks}).
 * @throws connection or query errors; `signal.reason` when aborted.
 */
export async function runRestoreChecks(target: DatabaseConnection, manifest: Manifest, options: RestoreCheckOptions): Promise<RestoreChecks> {
  const { logger: log, signal } = options;
  const key = (t: { schema: string; table: string }) => `${t.schema}\u0000${t.table}`;
  const wanted = options.tables ? new Set(options.tables.map(key)) : undefined;
  const withoutData = new Set((manifest.tablesWithoutData ?? []).map(key));
  const expected = manifest.tables.filter((t) => (!wanted || wanted.has(key(t))) && !withoutData.has(key(t)));
  const notCounted = (options.tables ?? manifest.tablesWithoutData ?? []).filter((t) => withoutData.has(key(t))).map((t) => `${t.schema}.${t.table}`);
  const problems: string[] = [];

  const present = await withClient(target, signal, async (client) => {
    const { rows } = await client.query<{ schema: string; table: string }>(
      `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [expected.map((t) => t.schema), expected.map((t) => t.table)],
    );
    return new Set(rows.map(key));
  });
  const counted = new Map((await countRowsInParallel(target, expected.filter((t) => present.has(key(t))), options.connections ?? 2, signal)).map((c) => [key(c), c.rows]));
  const tables: TableCheck[] = expected.map((t) => {
    const actual = counted.get(key(t));
    return { schema: t.schema, table: t.table, expected: t.rows, actual, ok: actual === t.rows };
  });
  for (const t of tables.filter((x) => !x.ok)) {
    problems.push(t.actual === undefined ? `table ${t.schema}.${t.table} is missing after the restore` : `row count of ${t.schema}.${t.table} is ${t.actual}, the manifest says ${t.expected}`);
  }
  const bad = tables.filter((t) => !t.ok).length;
  log.info(`row counts: ${tables.length - bad}/${tables.length} table${tables.length === 1 ? '' : 's'} match the manifest${notCounted.length ? ` (${notCounted.length} restored without data, not counted)` : ''}`);
  for (const p of problems) log.warn(p);

  const behind = await withClient(target, signal, (client) => sequencesBehind(client, options.tables ?? manifest.tables));
  for (const s of behind) problems.push(`sequence ${s}`);
  log.info(`sequences: ${behind.length ? `${behind.length} behind their columns` : 'none behind their columns'}`);

  let privileges: RestoreChecks['privileges'];
  const record = (manifest as Manifest & { privileges?: unknown }).privileges;
  if (record !== undefined && options.privileges) {
    const found = await options.privileges(target, record, signal);
    privileges = { ok: found.length === 0, problems: found };
    problems.push(...found);
    log.info(`owners and grants: ${found.length ? `${found.length} differ from the manifest` : 'as recorded'}`);
  }
  return { ok: problems.length === 0, tables, notCounted, sequencesBehind: behind, privileges, problems };
}

/** A restore whose checks failed: `result` is what the restore would have printed (for `--json`). Exit code 1. */
export class RestoreChecksFailedError extends CheckFailedError {
  readonly result: unknown;
  constructor(message: string, result: unknown) {
    super(message);
    this.result = result;
  }
}

/**
 * Throws {@link RestoreChecksFailedError} when `checks` failed: `<what>: <first problems>; <after>`.
 * @param after - what the user should know about the state the failure leaves (committed, dropped…).
 */
export function requireChecks(checks: RestoreChecks, what: string, after: string, result: unknown): void {
  if (checks.ok) return;
  const shown = checks.problems.slice(0, 5).join('; ');
  const more = checks.problems.length > 5 ? ` (and ${checks.problems.length - 5} more)` : '';
  throw new RestoreChecksFailedError(`${what}: the checks after the restore failed: ${shown}${more}; ${after}`, result);
}
