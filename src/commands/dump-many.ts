import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { resolveConnection, withDatabase, type DatabaseConnection } from '../postgres/connection.ts';
import { findAll } from '../postgres/binaries.ts';
import { connect } from '../postgres/server.ts';
import { connectDiagnosed, withPlatformTls, type NetworkProbes } from '../postgres/diagnose.ts';
import type pg from 'pg';
import { runDump, type DumpOptions, type DumpResult } from './dump.ts';
import { forDatabase, planDump } from './dump-plan.ts';
import { checkWritable } from './dump-preflight.ts';

/** Options of {@link dumpMany}: those of {@link dump}, for several databases. */
export interface DumpManyOptions extends Omit<DumpOptions, 'databaseUrl'> {
  /** One or more libpq URLs; default `DATABASE_URL`, then the `PG*` variables. */
  databaseUrls?: string[];
  /** Database names on the server of the (first) URL, e.g. `metadata,website,demo` (seed 001). */
  databases?: string[];
  /** The resolver and route check of the connection diagnosis (src/postgres/diagnose.ts); tests inject stubs. */
  networkProbes?: NetworkProbes;
}

/** One database's outcome in a multi-database run. */
export interface DumpOutcome {
  database: string;
  ok: boolean;
  result?: DumpResult;
  /** Why it failed. */
  error?: string;
}

/**
 * Dumps several databases, one after the other, each into its own backup and manifest, with a
 * log line each (`<db>: OK in 1.2 s, 18.4 MB` / `<db>: FAILED: …`). Every target is checked
 * first (connects, database exists), so a typo fails the run before anything is written. One
 * database failing does not stop the others.
 * @throws UsageError when a target is unknown or unreachable (nothing dumped), or for any other user mistake.
 * @throws the dump's own error when there is only one database.
 * @throws CheckFailedError after the run when any database failed, naming them; `outcomes` on the error lists all.
 */
export async function dumpMany(options: DumpManyOptions): Promise<DumpOutcome[]> {
  const { logger } = options;
  // The options are read once, into one frozen plan shared by every database of the run.
  const shared = await planDump(options);
  const runtime = { logger, signal: options.signal, now: options.now ?? (() => new Date()) };
  // A managed platform's host gets sslmode=require unless the URL says otherwise (diagnose.ts).
  const targets = resolveTargets(options).map((t) => withPlatformTls(t));
  findAll('pg_dump').catch(() => undefined); // the search for pg_dump (a --version per copy) runs while we connect
  if (new Set(targets.map((t) => t.url)).size !== targets.length) throw new UsageError('the same database is listed twice: list each once');
  // Every target is reached first. The first one's connection is the one its dump uses (set up
  // once); the others are closed and opened again when their turn comes, so none sits idle
  // through a long dump of another database.
  let first: pg.Client | undefined;
  const probed = new Set<string>();
  try {
    for (const [i, target] of targets.entries()) {
      // IPv6-only hosts without a route, transaction poolers: one line with the fix, before any byte is written.
      const client = await connectDiagnosed(target, (c) => connect(c, 'pg-backup dump'), { probes: options.networkProbes, probed });
      if (i === 0) first = client;
      else await client.end().catch(() => undefined);
    }
  } catch (err) {
    await first?.end().catch(() => undefined);
    throw err;
  }
  // The bucket and the credentials are checked once, before the first "dumping …" line.
  try {
    await checkWritable(shared.storage, shared, options.signal);
  } catch (err) {
    await first?.end().catch(() => undefined);
    throw err;
  }
  const outcomes: DumpOutcome[] = [];
  for (const [i, target] of targets.entries()) {
    try {
      const client = i === 0 ? first : undefined;
      const result = await logger.group(`dump ${target.database}`, () => runDump(forDatabase(shared, target), runtime, client));
      const problem = result.verification && !result.verification.ok ? `verify failed: ${result.verification.reason}` : result.mirror && !result.mirror.ok ? `mirror copy failed: ${result.mirror.error}` : undefined;
      outcomes.push({ database: target.database, ok: problem === undefined, result, error: problem });
    } catch (err) {
      // A user mistake (bucket, credentials, a filter matching nothing) is the run's, not one database's.
      if (options.signal?.aborted || err instanceof UsageError || targets.length === 1) throw err;
      const error = messageOf(err);
      logger.warn(`${target.database}: FAILED: ${error}`);
      outcomes.push({ database: target.database, ok: false, error });
    }
  }
  const failed = outcomes.filter((o) => !o.ok);
  if (targets.length > 1) logger.info(`${outcomes.length - failed.length} of ${outcomes.length} databases backed up${failed.length ? `; FAILED: ${failed.map((f) => f.database).join(', ')}` : ''}`);
  if (failed.length) {
    const error = new CheckFailedError(
      targets.length > 1 ? `${failed.length} of ${outcomes.length} databases failed: ${failed.map((f) => `${f.database} (${f.error})`).join('; ')}` : failed[0]!.error!,
    );
    throw Object.assign(error, { outcomes });
  }
  return outcomes;
}

/** The connections a run covers: each URL, or each named database on the first URL's server. */
function resolveTargets(options: DumpManyOptions): DatabaseConnection[] {
  const urls = options.databaseUrls?.filter((u) => u.trim()) ?? [];
  const base = urls.length ? urls.map((u) => resolveConnection(u)) : [resolveConnection(undefined)];
  const names = (options.databases ?? []).map((d) => d.trim()).filter(Boolean);
  if (names.length === 0) return base;
  if (base.length > 1) throw new UsageError('give either several --database-url or one with --databases, not both');
  return names.map((name) => withDatabase(base[0]!, name));
}
