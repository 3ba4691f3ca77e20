import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { resolveConnection, withDatabase, type DatabaseConnection } from '../postgres/connection.ts';
import { prefetchPrograms } from '../postgres/binaries.ts';
import { connect, listUserTables } from '../postgres/server.ts';
import { connectDiagnosed, withPlatformTls, type NetworkProbes } from '../postgres/diagnose.ts';
import { selectTables } from '../postgres/dump-options.ts';
import type pg from 'pg';
import { GLOBALS_DATABASE, newRunId } from '../backup/keys.ts';
import { dumpGlobals, type GlobalsResult } from '../backup/globals.ts';
import { mapLimit } from '../map-limit.ts';
import { runDump, type DumpOptions, type DumpResult } from './dump.ts';
import { forDatabase, planDump } from './dump-plan.ts';
import { checkWritable } from './dump-preflight.ts';
import { MAX_PARALLEL_DATABASES } from '../limits.ts';
import { loadIdentities } from '../backup/encryption.ts';

/** Databases `--all-databases` never dumps: the templates (template0 refuses connections anyway). */
export const SKIPPED_TEMPLATES = ['template0', 'template1'] as const;

/** Most databases dumped at once (`--parallel-databases`). */

/** Options of {@link dumpMany}: those of {@link dump}, for several databases. */
export interface DumpManyOptions extends Omit<DumpOptions, 'databaseUrl'> {
  /** One or more libpq URLs; default `DATABASE_URL`, then the `PG*` variables. */
  databaseUrls?: string[];
  /**
   * Database names on the server of the (first) URL, e.g. `metadata,website,demo` (seed 001).
   * The single value `all` means {@link allDatabases} (the action input `databases: all`, the
   * settings file's `databases: all`).
   */
  databases?: string[];
  /** The resolver and route check of the connection diagnosis (src/postgres/diagnose.ts); tests inject stubs. */
  networkProbes?: NetworkProbes;
  /**
   * Every database the URL's role can connect to, discovered on the server at run time
   * (`datallowconn` and the CONNECT privilege; template0 and template1 skipped), so a database
   * created since the last run is dumped without a config change. The URL's database is where
   * the discovery (and the globals dump) connects.
   */
  allDatabases?: boolean;
  /** With {@link allDatabases}: leave out databases matching these patterns (pg_dump's: `*`, `?`; see {@link databasePatternRegExp}). */
  excludeDatabases?: string[];
  /** Do not dump the server's globals (`--no-globals`). Default: they are dumped once a database of the run is stored. */
  noGlobals?: boolean;
  /** Databases dumped at once (each its own pg_dump and upload). Default 1: one after the other. */
  parallelDatabases?: number;
}

/** One database's outcome in a multi-database run. */
export interface DumpOutcome {
  database: string;
  ok: boolean;
  result?: DumpResult;
  /** Why it failed. */
  error?: string;
}

/** The globals' outcome in a run (absent with `noGlobals`). */
export interface GlobalsOutcome {
  ok: boolean;
  result?: GlobalsResult;
  /** Why it failed. */
  error?: string;
}

/** A database `--all-databases` found but did not dump, and why. */
export interface SkippedDatabase {
  database: string;
  reason: string;
}

/** What a dump run did: its id, what it set out to dump, and each outcome. */
export interface DumpRun {
  /** `run-<YYYYMMDDTHHMMSSZ>-<6 hex>`: in every manifest of the run. */
  runId: string;
  /** The databases the run set out to dump, in order. */
  databases: string[];
  allDatabases: boolean;
  /** Databases found on the server and left out (templates, no CONNECT, excluded). */
  skipped: SkippedDatabase[];
  /** The globals, dumped once a database of the run is stored (beside the others when several run at once, else after the last); absent with `noGlobals` (or when no database was stored). */
  globals?: GlobalsOutcome;
  /** One per database, in the order of {@link databases}. */
  outcomes: DumpOutcome[];
}

/**
 * Dumps several databases (a list, or with `allDatabases` every database the role can connect
 * to), each into its own backup and manifest, with a log line each (`<db>: OK in 1.2 s, 18.4 MB`
 * / `<db>: FAILED: …`), `parallelDatabases` at a time; the server's globals
 * (`pg_dumpall --globals-only`, src/backup/globals.ts) are dumped once a database is stored (beside
 * the remaining databases when several run at once, else after the last), unless `noGlobals`. Every
 * manifest of the run records the same `run.id`; the globals' manifest also the planned
 * databases. Every listed target is checked first (connects, database exists), so a typo fails
 * the run before anything is written. One database failing does not stop the others.
 * @throws UsageError when a target is unknown or unreachable (nothing dumped), or for any other user mistake.
 * @throws the dump's own error when there is only one database and no globals.
 * @throws CheckFailedError after the run when any database (or the globals) failed, naming them; `outcomes` and `run` on the error tell all.
 */
export async function dumpMany(options: DumpManyOptions): Promise<DumpRun> {
  const { logger } = options;
  const parallel = parallelOf(options.parallelDatabases);
  // The options are read once, into one frozen plan shared by every database of the run.
  const shared = await planDump(options);
  const now = options.now ?? (() => new Date());
  const runId = newRunId(now());
  const runtime = { logger, signal: options.signal, now, run: { id: runId } };
  // The search for pg_dump (and pg_dumpall, for the globals): a --version per copy, while we connect.
  prefetchPrograms('pg_dump', ...(options.noGlobals ? [] : (['pg_dumpall'] as const)));
  const all = options.allDatabases || (options.databases?.length === 1 && options.databases[0]!.trim() === 'all');
  // The bucket and the credentials are checked once, before the first "dumping …" line, while
  // the databases are found and reached (the check leaves nothing in the bucket; a database
  // error found meanwhile is still the one reported).
  const writable = checkWritable(shared.storage, shared, options.signal);
  writable.catch(() => undefined);
  const discovered = await (all ? discoverTargets(options, logger) : Promise.resolve().then(() => ({ ...listedTargets(options), skipped: [], sizes: undefined }))).catch(async (err: unknown) => {
    await writable.catch(() => undefined);
    throw err;
  });
  const { skipped, sizes } = discovered;
  // A managed platform's host gets sslmode=require unless the URL says otherwise (diagnose.ts).
  const targets = discovered.targets.map((t) => withPlatformTls(t));
  const base = discovered.base;
  if (new Set(targets.map((t) => t.url)).size !== targets.length) {
    await writable.catch(() => undefined);
    throw new UsageError('the same database is listed twice: list each once');
  }
  // Every listed target is reached first. The first one's connection is the one its dump uses
  // (set up once); the others are closed and opened again when their turn comes, so none sits
  // idle through a long dump of another database. Discovered targets were just read from the
  // server: one that refuses the connection fails alone, in the run.
  let first: pg.Client | undefined;
  const probed = new Set<string>();
  try {
    // An include pattern (--schema, --table) that matches nothing is refused here too, before
    // the globals are written: bad input leaves nothing in the bucket.
    const filtered = Boolean(shared.selection.schemas?.length || shared.selection.tables?.length);
    for (const [i, target] of (all ? [] : targets).entries()) {
      // IPv6-only hosts without a route, transaction poolers: one line with the fix, before any byte is written.
      const client = await connectDiagnosed(target, (c) => connect(c, 'pg-backup dump'), { probes: options.networkProbes, probed });
      if (i === 0) first = client;
      try {
        if (filtered && !options.noGlobals) await selectTables(client, await listUserTables(client), shared.selection, () => undefined);
      } finally {
        if (i !== 0) await client.end().catch(() => undefined);
      }
    }
    await writable;
  } catch (err) {
    await first?.end().catch(() => undefined);
    await writable.catch(() => undefined);
    throw err;
  }
  const databases = targets.map((t) => t.database);
  logger.info(`run ${runId}: ${databases.length} database${databases.length === 1 ? '' : 's'}${all ? ' (all the role can connect to)' : ''}${options.noGlobals ? '' : ' and the globals'} → ${shared.storage.url}${parallel > 1 ? `, ${parallel} at a time` : ''}`);
  // pg_dump writes a database's own properties (ALTER DATABASE … SET, its ACL, ALTER ROLE … IN
  // DATABASE … SET) only where it writes CREATE DATABASE: in a custom archive (pg_restore
  // --create) or plain SQL dumped with --create, which the plain restore here does not replay.
  if (all && shared.format === 'plain') logger.warn(`--all-databases with --format plain: each database's own settings, ACL and per-role settings are not in plain SQL dumped without --create; use --format custom (the default) for a whole-server backup, whose archives carry them for pg_restore --create`);
  // The globals are one server's: with URLs on several servers, those of the first one's.
  const serverOf = (c: DatabaseConnection) => c.display.replace(/\/[^/]*$/, '');
  if (!options.noGlobals && new Set(targets.map(serverOf)).size > 1) logger.warn(`the databases are on ${new Set(targets.map(serverOf)).size} servers: the globals (roles, tablespaces) are dumped from ${serverOf(base ?? targets[0]!)} only; dump each server in a run of its own (its own --environment or --service) to keep each server's roles`);
  const run: DumpRun = { runId, databases, allDatabases: all, skipped, outcomes: [] };
  // The globals wait until a database of the run is stored: a run that stored no database
  // (a failed single dump, a cancelled run) leaves nothing in the bucket, as before globals
  // existed. They are not in any database's snapshot either way (pg_dumpall is its own session).
  const dumpRunGlobals = async (): Promise<void> => {
    try {
      const go = () => dumpGlobals(forDatabase(shared, base ?? targets[0]!), runtime, { id: runId, databases, allDatabases: all });
      // A log group only when nothing runs beside it (groups do not nest or interleave).
      const result = parallel === 1 ? await logger.group(`dump ${GLOBALS_DATABASE}`, go) : await go();
      run.globals = { ok: true, result };
      if (shared.verify !== 'none') {
        // The globals are read back like the dumps (to pg_dumpall's trailer; never replayed here).
        const identities = shared.encryptTo ? loadIdentities() : undefined;
        const level = shared.encryptTo && !identities ? 'checksum' : shared.verify === 'schema' ? 'archive' : shared.verify;
        // The verify's code (and the throwaway cluster's) loads only for a run that verifies.
        const { verify } = await import('./verify.ts');
        const v = await verify({ from: shared.to, backup: result.objectKey, level, ageIdentities: identities, s3: shared.verifyS3 ?? shared.s3, logger, signal: options.signal });
        if (!v.ok) throw new Error(`verify failed: ${v.reason}`);
      }
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const error = messageOf(err);
      logger.warn(`${GLOBALS_DATABASE}: FAILED: ${error}`);
      run.globals = { ok: false, error };
    }
  };
  const several = targets.length > 1 || all;
  // Several at a time: the globals start as soon as the first database is stored, beside the
  // others (one at a time, they follow the last one, so that log groups do not interleave).
  let globalsRun: Promise<void> | undefined;
  const startGlobals = () => {
    if (options.noGlobals || globalsRun || parallel === 1 || options.signal?.aborted) return;
    globalsRun = dumpRunGlobals();
    globalsRun.catch(() => undefined);
  };
  const dumpOne = async (target: DatabaseConnection, i: number): Promise<DumpOutcome> => {
    try {
      options.signal?.throwIfAborted(); // cancelled: no database starts after the signal
      const client = i === 0 ? first : undefined;
      const go = () => runDump(forDatabase(shared, target), runtime, client);
      // Log groups do not nest or interleave: only when the databases go one after the other.
      const result = parallel === 1 ? await logger.group(`dump ${target.database}`, go) : await go();
      startGlobals();
      const problem = result.verification && !result.verification.ok ? `verify failed: ${result.verification.reason}` : result.mirror && !result.mirror.ok ? `mirror copy failed: ${result.mirror.error}` : undefined;
      return { database: target.database, ok: problem === undefined, result, error: problem };
    } catch (err) {
      // A user mistake (bucket, credentials, a filter matching nothing) is the run's, not one
      // database's; with --all-databases, a database that refuses us fails alone.
      if (options.signal?.aborted || (err instanceof UsageError && !all) || !several) throw err;
      const error = messageOf(err);
      logger.warn(`${target.database}: FAILED: ${error}`);
      return { database: target.database, ok: false, error };
    }
  };
  try {
    // Discovered databases start largest first (pg_database_size; the longest job first keeps the
    // parallel slots busy to the end); the outcomes keep the run's order.
    const order = targets.map((t, i) => [t, i] as const);
    if (sizes && parallel > 1) order.sort(([a, i], [b, j]) => (sizes.get(b.database) ?? 0) - (sizes.get(a.database) ?? 0) || i - j);
    const done = await mapLimit(order, parallel, async ([t, i]) => [i, await dumpOne(t, i)] as const);
    run.outcomes = done.sort(([i], [j]) => i - j).map(([, o]) => o);
  } finally {
    await first?.end().catch(() => undefined);
    // A failed or cancelled run still waits for the globals it started (their upload aborted on a signal).
    await globalsRun?.catch(() => undefined);
  }
  if (globalsRun) await globalsRun;
  else if (!options.noGlobals && run.outcomes.some((o) => o.result)) await dumpRunGlobals();
  const failed = run.outcomes.filter((o) => !o.ok);
  const globalsFailed = run.globals && !run.globals.ok ? [{ database: GLOBALS_DATABASE, error: run.globals.error }] : [];
  if (several) logger.info(`run ${runId}: ${run.outcomes.length - failed.length} of ${run.outcomes.length} databases backed up${failed.length ? `; FAILED: ${failed.map((f) => f.database).join(', ')}` : ''}${run.globals ? `; globals ${run.globals.ok ? 'OK' : 'FAILED'}` : ''}`);
  else logger.info(`run ${runId}${run.globals ? `: globals ${run.globals.ok ? 'OK' : 'FAILED'}` : ''}`);
  const problems = [...globalsFailed, ...failed];
  if (problems.length) {
    const error = new CheckFailedError(
      several || globalsFailed.length
        ? `${failed.length ? `${failed.length} of ${run.outcomes.length} databases failed` : 'the databases were backed up'}${globalsFailed.length ? `${failed.length ? ' and' : ', but'} the globals failed` : ''}: ${problems.map((f) => `${f.database} (${f.error})`).join('; ')}`
        : failed[0]!.error!,
    );
    throw Object.assign(error, { outcomes: run.outcomes, run });
  }
  return run;
}

/** `parallelDatabases`, checked: a whole number from 1 to {@link MAX_PARALLEL_DATABASES}. */
function parallelOf(value: number | undefined): number {
  if (value === undefined || Number.isNaN(value)) return 1;
  if (!Number.isInteger(value) || value < 1 || value > MAX_PARALLEL_DATABASES) {
    throw new UsageError(`--parallel-databases ${String(value)} is not a count from 1 to ${MAX_PARALLEL_DATABASES}: give how many databases to dump at once, e.g. 4`);
  }
  return value;
}

/** The connections a run covers: each URL, or each named database on the first URL's server. */
function listedTargets(options: DumpManyOptions): { targets: DatabaseConnection[]; base?: DatabaseConnection } {
  if (options.excludeDatabases?.some((p) => p.trim())) throw new UsageError('--exclude-database works with --all-databases (action input databases: all): drop it, or dump all databases');
  const urls = options.databaseUrls?.filter((u) => u.trim()) ?? [];
  const base = urls.length ? urls.map((u) => resolveConnection(u)) : [resolveConnection(undefined)];
  const names = (options.databases ?? []).map((d) => d.trim()).filter(Boolean);
  if (names.length === 0) return { targets: base };
  if (base.length > 1) throw new UsageError('give either several --database-url or one with --databases, not both');
  return { targets: names.map((name) => withDatabase(base[0]!, name)), base: base[0] };
}

/**
 * `--all-databases`: connects to the URL's database and lists every database with
 * `datallowconn` (PostgreSQL docs, pg_database), template0 and template1 left out, then those
 * the role lacks CONNECT on (`has_database_privilege`: each named in one warning line), then
 * those matching an exclude pattern. Sorted by name.
 * @throws UsageError for several URLs, a database list beside it, a bad pattern, or an unreachable server.
 */
async function discoverTargets(options: DumpManyOptions, logger: DumpManyOptions['logger']): Promise<{ targets: DatabaseConnection[]; skipped: SkippedDatabase[]; base: DatabaseConnection; sizes: Map<string, number> }> {
  const urls = options.databaseUrls?.filter((u) => u.trim()) ?? [];
  if (urls.length > 1) throw new UsageError('--all-databases takes one --database-url (any database on the server, e.g. postgres): give one');
  const names = (options.databases ?? []).map((d) => d.trim()).filter(Boolean);
  if (names.length && !(names.length === 1 && names[0] === 'all')) throw new UsageError('give either --all-databases or --databases, not both');
  const patterns = (options.excludeDatabases ?? []).map((p) => p.trim()).filter(Boolean).map((p) => ({ pattern: p, re: databasePatternRegExp(p) }));
  const base = withPlatformTls(resolveConnection(urls[0]));
  // IPv6-only hosts without a route, transaction poolers: one line with the fix, before any byte is written.
  const client = await connectDiagnosed(base, (c) => connect(c, 'pg-backup dump'), { probes: options.networkProbes });
  let rows: { datname: string; can: boolean; size: string | null }[];
  try {
    rows = (await client.query<{ datname: string; can: boolean; size: string | null }>(
      `SELECT datname, has_database_privilege(oid, 'CONNECT') AS can,
              CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid)::text END AS size
         FROM pg_database WHERE datallowconn ORDER BY datname COLLATE "C"`,
    )).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
  const skipped: SkippedDatabase[] = [];
  const targets: DatabaseConnection[] = [];
  const sizes = new Map<string, number>();
  for (const { datname, can, size } of rows) {
    if (size !== null) sizes.set(datname, Number(size));
    const excluded = patterns.find((p) => p.re.test(datname));
    if ((SKIPPED_TEMPLATES as readonly string[]).includes(datname)) skipped.push({ database: datname, reason: 'template' });
    else if (excluded) skipped.push({ database: datname, reason: `--exclude-database ${excluded.pattern}` });
    else if (!can) skipped.push({ database: datname, reason: 'no CONNECT privilege' });
    else targets.push(withDatabase(base, datname));
  }
  const noConnect = skipped.filter((s) => s.reason === 'no CONNECT privilege').map((s) => s.database);
  if (noConnect.length) logger.warn(`--all-databases: not dumped, the role may not connect to ${noConnect.length === 1 ? 'it' : 'them'} (no CONNECT privilege): ${noConnect.join(', ')}; GRANT CONNECT ON DATABASE … TO the backup role, or exclude ${noConnect.length === 1 ? 'it' : 'them'} with --exclude-database`);
  const excluded = skipped.filter((s) => s.reason.startsWith('--exclude-database')).map((s) => s.database);
  if (excluded.length) logger.info(`--all-databases: excluded ${excluded.join(', ')}`);
  if (targets.length === 0) throw new UsageError(`--all-databases found no database to dump on ${base.display.replace(/\/[^/]*$/, '')} (${rows.length} with connections allowed; ${skipped.map((s) => `${s.database}: ${s.reason}`).join(', ') || 'none'}): check the role's CONNECT privileges and --exclude-database`);
  return { targets, skipped, base, sizes };
}

/**
 * A database-name pattern as pg_dump and pg_dumpall read `--exclude-database` (psql's pattern
 * rules, PostgreSQL docs, psql "Patterns"): `*` matches any run of characters, `?` any one
 * character; letters outside double quotes match in lower case, inside double quotes as written
 * (`""` is a literal quote, and `*`, `?` are literal there). The whole name must match.
 * @throws UsageError for an empty pattern, an unbalanced quote, or a dotted (qualified) name.
 */
export function databasePatternRegExp(pattern: string): RegExp {
  let re = '';
  let quoted = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '"') {
      if (quoted && pattern[i + 1] === '"') {
        re += '"';
        i++;
      } else quoted = !quoted;
    } else if (quoted) re += ch.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
    else if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else if (ch === '.') throw new UsageError(`--exclude-database ${JSON.stringify(pattern)}: a database name has no dotted parts; double-quote a name that holds a dot ("my.db")`);
    else re += ch.toLowerCase().replace(/[\\^$+()[\]{}|/-]/g, '\\$&');
  }
  if (quoted) throw new UsageError(`--exclude-database ${JSON.stringify(pattern)}: unbalanced double quote`);
  if (!pattern.trim()) throw new UsageError('--exclude-database: empty pattern');
  return new RegExp(`^(?:${re})$`, 's');
}
