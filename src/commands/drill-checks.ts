import type pg from 'pg';
import type { Manifest } from '../backup/manifest.ts';
import { runSmokeChecks, type SmokeCheck } from '../backup/smoke.ts';
import type { Logger } from '../log.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { findMigrationHead } from '../postgres/migrations.ts';
import { connect, countRows, serverFacts, type TableRowCount } from '../postgres/server.ts';
import type { DrillResult } from './drill-report.ts';

// The checks a drill runs against its restored database: row counts against the manifest,
// sequences, migration head, smoke SQL, the extensions the target lacks, and the server version.

/**
 * The post-restore checks: row counts per table against the manifest (counted in the dump's
 * snapshot), sequences not behind their columns, the migration head, and the smoke SQL.
 * Appends every failure to `result.problems`. The row counts run over up to `connections`
 * connections at once (see {@link countRowsInParallel}); the rest on one. With `client` (a
 * connection to `target` the caller owns and ends), the checks run on it and it is one of the
 * counting connections: no connection of their own is opened for them.
 */
export async function runChecks(target: DatabaseConnection, manifest: Manifest, smoke: SmokeCheck[], result: DrillResult, log: Logger, connections: number, signal?: AbortSignal, client?: pg.Client): Promise<void> {
  const checks = async (client: pg.Client) => {
    const { rows } = await client.query<{ schema: string; table: string; bytes: string }>(
      // Not the catalogs' own tables, which no manifest lists (listUserTables): their sizes cost a file lookup each.
      `SELECT n.nspname AS schema, c.relname AS table, pg_relation_size(c.oid)::text AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')`,
    );
    const key = (t: { schema: string; table: string }) => `${t.schema}\u0000${t.table}`;
    const bytes = new Map(rows.map((r) => [key(r), Number(r.bytes)]));
    // Largest first, so that the biggest table does not start last on a busy connection.
    const present = manifest.tables.filter((t) => bytes.has(key(t))).sort((a, b) => bytes.get(key(b))! - bytes.get(key(a))!);
    const counts = new Map((await countRowsInParallel(target, present, connections, signal, client)).map((c) => [key(c), c.rows]));
    result.tables = manifest.tables.map((t) => {
      const actual = counts.get(key(t));
      return { schema: t.schema, table: t.table, expected: t.rows, actual, ok: actual === t.rows };
    });
    const bad = result.tables.filter((t) => !t.ok);
    for (const t of bad) {
      result.problems.push(
        t.actual === undefined ? `table ${t.schema}.${t.table} is missing after the restore` : `row count of ${t.schema}.${t.table} is ${t.actual}, the manifest says ${t.expected}`,
      );
    }
    log.info(`row counts: ${result.tables.length - bad.length}/${result.tables.length} tables match the manifest (counted over ${Math.max(1, Math.min(connections, present.length))} connection${Math.min(connections, present.length) > 1 ? 's' : ''})`);

    result.sequencesBehind = await sequencesBehind(client);
    for (const s of result.sequencesBehind) result.problems.push(`sequence ${s}`);
    log.info(`sequences: ${result.sequencesBehind.length ? `${result.sequencesBehind.length} behind their columns` : 'none behind their columns'}`);

    const head = await findMigrationHead(client);
    const expected = manifest.migrationHead?.head;
    if (expected !== undefined || head) {
      result.migrationHead = { expected, actual: head?.head, ok: head?.head === expected };
      if (!result.migrationHead.ok) result.problems.push(`migration head is ${head?.head ?? 'missing'} after the restore, the manifest says ${expected ?? 'none'}`);
      log.info(`migration head (${head?.table ?? manifest.migrationHead?.table}): ${head?.head ?? 'missing'}${result.migrationHead.ok ? ', as recorded' : `, expected ${expected}`}`);
    }

    if (smoke.length) {
      result.smoke = await runSmokeChecks(client, smoke);
      for (const r of result.smoke) {
        log.info(`smoke line ${r.line} (${r.expectation}): ${r.ok ? 'OK' : 'FAILED'}, got ${r.actual}`);
        if (!r.ok) result.problems.push(`smoke check at line ${r.line} expected ${r.expectation}, got ${r.actual}`);
      }
    }
  };
  if (client) await checks(client);
  else await withClient(target, signal, checks);
}

/**
 * Counts the rows of `tables` (`count(*)`, the server's parallel scans allowed) over up to
 * `connections` connections to `target` at once, each taking the next table of the list in
 * turn, so a big table's count runs beside the others'. Measured on a 2-core machine after a
 * restore of 1.06 GB (5 M + 2 M rows and three small tables, hint bits not yet set): 0.66–0.98 s
 * over two connections against 1.12–1.24 s over one, for the same server CPU (0.58 against
 * 0.62 s). With `shared` (a connection to `target` the caller owns), it is the first of the
 * connections: one fewer is opened, none when one suffices.
 * @returns one count per table, in no particular order.
 * @throws the first connection's or query's error; `signal.reason` when `signal` aborts (every connection is closed).
 */
export async function countRowsInParallel(target: DatabaseConnection, tables: { schema: string; table: string }[], connections: number, signal?: AbortSignal, shared?: pg.Client): Promise<TableRowCount[]> {
  const queue = [...tables];
  const out: TableRowCount[] = [];
  const count = async (client: pg.Client) => {
    for (let t = queue.shift(); t; t = queue.shift()) out.push(...(await countRows(client, [t])));
  };
  const worker = (i: number) =>
    (shared && i === 0 ? count(shared) : withClient(target, signal, count)).catch((err: unknown) => {
      queue.length = 0; // the first failure ends the counting on every connection
      throw err;
    });
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(connections, tables.length)) }, (_, i) => worker(i)));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return out;
}

/**
 * Runs `fn` with a client of `target`, ended afterwards. When `signal` aborts, the connection is
 * closed at once (a running query fails) and `signal.reason` is thrown.
 */
export async function withClient<T>(target: DatabaseConnection, signal: AbortSignal | undefined, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  signal?.throwIfAborted();
  const client = await connect(target, 'pg-backup drill');
  const onAbort = () => void client.end().catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    signal?.throwIfAborted();
    const out = await fn(client);
    signal?.throwIfAborted();
    return out;
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await client.end().catch(() => undefined);
  }
}

/**
 * Sequences owned by an integer column (serial or identity) whose next value would collide
 * with existing rows: `last_value` (or, if never called, `last_value - increment`) below the
 * column's max. This is what a data-only restore or a bad `setval` leaves behind (seed 002).
 * With `tables`, only the sequences owned by a column of one of them. Two round trips for up to
 * 100 sequences: their list, then every one's state and column max in one statement.
 */
export async function sequencesBehind(client: pg.Client, tables?: { schema: string; table: string }[]): Promise<string[]> {
  const { rows } = await client.query<{ seq: string; col: string; tbl: string; increment: string }>(
    `SELECT format('%I.%I', sn.nspname, s.relname) AS seq, format('%I', a.attname) AS col, format('%I.%I', tn.nspname, t.relname) AS tbl,
            ps.seqincrement::text AS increment
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_sequence ps ON ps.seqrelid = s.oid
       JOIN pg_class t ON t.oid = d.refobjid
       JOIN pg_namespace tn ON tn.oid = t.relnamespace
       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
        AND ($1::text[] IS NULL OR (tn.nspname, t.relname) IN (SELECT * FROM unnest($1::text[], $2::text[])))`,
    [tables ? tables.map((t) => t.schema) : null, tables ? tables.map((t) => t.table) : null],
  );
  const behind: string[] = [];
  // Every sequence's state and its column's max in one statement per SEQUENCES_PER_STATEMENT (a
  // round trip and a plan each, not one per sequence).
  for (let from = 0; from < rows.length; from += SEQUENCES_PER_STATEMENT) {
    const chunk = rows.slice(from, from + SEQUENCES_PER_STATEMENT);
    const state = await client.query<{ i: number; last: string; called: boolean; max: string | null }>(
      chunk.map((r, i) => `SELECT ${i} AS i, last_value::text AS last, is_called AS called, (SELECT max(${r.col})::text FROM ${r.tbl}) AS max FROM ${r.seq}`).join('\nUNION ALL\n'),
    );
    for (const { i, last, called, max } of state.rows.sort((a, b) => a.i - b.i)) {
      const r = chunk[i]!;
      if (max === null) continue;
      const increment = BigInt(r.increment);
      const current = called ? BigInt(last) : BigInt(last) - increment;
      if (increment > 0n ? current < BigInt(max) : false) behind.push(`${r.seq} is behind ${r.tbl}.${r.col}: its value is ${current}, the column's max is ${max}`);
    }
  }
  return behind;
}

/** Sequences whose state {@link sequencesBehind} reads with one statement (a `UNION ALL` of one `SELECT` each). */
const SEQUENCES_PER_STATEMENT = 100;

/** Of `extensions`, those the target server cannot create (`pg_available_extensions`). */
export async function missingExtensions(target: DatabaseConnection, extensions: string[], signal?: AbortSignal): Promise<string[]> {
  if (extensions.length === 0) return [];
  return withClient(target, signal, async (client) => {
    const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_available_extensions WHERE name = ANY($1::text[])', [extensions]);
    const available = new Set(rows.map((r) => r.name));
    return extensions.filter((e) => !available.has(e));
  });
}


/**
 * `server_version` as `target` reports it, trimmed at the first space (`15.18 (Debian …)` →
 * `15.18`), or undefined when it cannot be read (the drill's checks report the connection problem).
 */
export async function reportedServerVersion(target: DatabaseConnection): Promise<string | undefined> {
  try {
    const client = await connect(target, 'pg-backup drill');
    try {
      return (await serverFacts(client)).version;
    } finally {
      await client.end().catch(() => undefined);
    }
  } catch {
    return undefined;
  }
}
