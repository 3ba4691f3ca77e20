import { resolveBackup, type ResolvedBackup } from '../backup/catalog.ts';
import { refuseGlobals } from '../backup/globals.ts';
import { parseMaxClockSkew } from '../backup/clock.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { recordingLogger } from '../log.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { drillClusterUser, serverBinaries, type ServerBinaries } from '../postgres/server-binaries.ts';
import { connect, serverFacts } from '../postgres/server.ts';
import { openStorage } from '../storage/index.ts';
import { archiveDrillLog, drill, drillHistory, reportedServerVersion, type DrillOptions, type DrillResult, type MajorDrillResult } from './drill.ts';
import { formatSeconds } from '../format.ts';

/**
 * The upgrade rehearsal (`pg-backup drill --postgres-version 16,17,18`): the same drill, once per
 * server major, each into a throwaway cluster of exactly that major. Each major is a complete
 * drill (download, extension preflight, restore, checks), so its RTO is the one a restore into
 * that major would take. This layer only loops, pins the backup, and merges the results into one
 * drill log and report.
 */


/**
 * Parses `--postgres-version` / the `postgres-versions` input: server majors separated by commas
 * (or spaces), e.g. `16,17,18`. Duplicates are dropped; the result is ascending.
 * @throws UsageError for anything but whole numbers from 10 to 99.
 */
export function parsePostgresVersions(text: string): number[] {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) throw new UsageError('--postgres-version needs one or more server majors, e.g. 16,17,18');
  const majors = parts.map((p) => {
    const major = /^\d+$/.test(p) ? Number(p) : NaN;
    if (!(major >= 10 && major <= 99)) {
      throw new UsageError(`--postgres-version: ${JSON.stringify(p)} is not a PostgreSQL major version: give majors such as 16,17,18`);
    }
    return major;
  });
  return [...new Set(majors)].sort((a, b) => a - b);
}

/**
 * Drills `options`' backup into a throwaway cluster of each of `options.postgresVersions` in
 * turn (ascending), with the same checks as {@link drill}. A major older than the backup's
 * server is refused first, then all server binaries are found or fetched, so a major that cannot
 * be had stops the drill before anything runs. The backup
 * is resolved once (`latest` means the same backup for every major). The drill log and JSON
 * report (one of each) carry one result per major in `majors`; the drill fails when any major
 * fails. The top-level detail fields (`tables`, `smoke`, `phases`…) are those of the first failed
 * major, else of the newest; `rtoMs` is the largest of the majors' RTOs.
 * @throws UsageError with `targetUrl` (its server has one major), for bad majors, a major older
 *   than the backup's server (before any download), or when a major's binaries are neither
 *   installed nor downloadable.
 */
export async function drillMajors(options: DrillOptions): Promise<DrillResult> {
  const majors = [...new Set(options.postgresVersions ?? [])].sort((a, b) => a - b);
  if (!majors.length) throw new UsageError('--postgres-version needs one or more server majors, e.g. 16,17,18');
  for (const m of majors) if (!Number.isInteger(m) || m < 10 || m > 99) throw new UsageError(`--postgres-version: ${m} is not a PostgreSQL major version: give majors such as 16,17,18`);
  if (options.targetUrl) {
    throw new UsageError('--postgres-version drills into throwaway clusters of those majors: drop --target-url (its server has one major), or drop --postgres-version');
  }
  const now = options.now ?? (() => new Date());
  const log = recordingLogger(options.logger);
  const storage = openStorage(options.from, options.s3);
  const startedAt = now();

  let backup: ResolvedBackup | undefined;
  try {
    backup = await resolveBackup(storage, options.backup, options.filter, undefined, { clock: { now: startedAt, maxSkewMs: parseMaxClockSkew(options.maxClockSkew) }, warn: (line) => log.warn(line) });
  } catch (err) {
    if (!(err instanceof CheckFailedError)) throw err;
    // The per-major drill reports it in its own words.
  }
  if (backup) refuseGlobals(backup.manifest, 'drill');
  // A dump restores only into its source's major or a newer one: refused before any download.
  const older = backup ? majors.filter((m) => m < backup!.manifest.server.major) : [];
  if (older.length) {
    // Only the major (a number the manifest schema checked) goes into the message: no bucket text.
    const major = backup!.manifest.server.major;
    throw new UsageError(`--postgres-version ${older.join(',')}: older than the backup's server (PostgreSQL ${major}); a dump restores only into its source's major or a newer one: give majors from ${major} up`);
  }

  // Every major's binaries before anything runs: a missing one is a usage error (exit 2), with nothing written.
  const user = await drillClusterUser();
  const bins = new Map<number, ServerBinaries>();
  for (const m of majors) bins.set(m, await serverBinaries(m, { logger: log, user }));
  log.info(`upgrade rehearsal: drilling ${backup ? storage.uri(backup.objectKey) : (options.backup ?? 'latest')} into PostgreSQL ${majors.join(', ')}`);

  const runs: { major: number; result: DrillResult }[] = [];
  for (const major of majors) {
    log.info(`== PostgreSQL ${major} (${describeBinaries(bins.get(major)!)})`);
    const result = await drill({
      ...options,
      postgresVersions: undefined,
      serverMajor: major,
      archiveLog: false,
      backup: backup ? storage.uri(backup.manifestKey) : options.backup,
      logger: log,
    });
    runs.push({ major, result });
    log.info(`PostgreSQL ${major}${result.serverVersion ? ` (server_version ${result.serverVersion})` : ''}: ${result.ok ? 'OK' : `FAILED: ${result.reason}`}, RTO ${formatSeconds(result.rtoMs)}`);
    if (!result.manifest || result.cancelled || options.signal?.aborted) break; // no backup to drill, or interrupted: the other majors would fail the same way
  }

  const perMajor: MajorDrillResult[] = runs.map(({ major, result: r }) => ({
    major,
    serverVersion: r.serverVersion,
    binaries: bins.get(major)?.source,
    packageSpec: bins.get(major)?.packageSpec,
    ok: r.ok,
    rtoMs: r.rtoMs,
    phases: r.phases,
    reason: r.reason,
    problems: r.problems,
    extensions: r.extensions,
    tables: r.tables,
    sequencesBehind: r.sequencesBehind,
    migrationHead: r.migrationHead,
    smoke: r.smoke,
  }));
  const skipped = majors.filter((m) => !runs.some((r) => r.major === m));
  const detail = (runs.find((r) => !r.result.ok) ?? runs.at(-1)!).result;
  const problems = runs.flatMap(({ major, result: r }) => r.problems.map((p) => `into PostgreSQL ${major}: ${p}`));
  if (skipped.length) problems.push(`not drilled into PostgreSQL ${skipped.join(', ')}: the drill stopped before them`);
  const result: DrillResult = {
    ...detail,
    ok: problems.length === 0,
    reason: problems[0],
    problems,
    target: `throwaway PostgreSQL ${majors.join(', ')}`,
    startedAt: startedAt.toISOString(),
    rtoMs: Math.max(...runs.map((r) => r.result.rtoMs)),
    majors: perMajor,
    history: [],
    drillLogUri: undefined,
    drillReportUri: undefined,
  };
  for (const m of perMajor) log.info(`result PostgreSQL ${m.major} (${m.serverVersion ?? 'not started'}): ${m.ok ? 'OK' : 'FAILED'}, RTO ${formatSeconds(m.rtoMs)}${m.ok ? '' : `, ${m.reason}`}`);
  if (result.ok) log.info('restore drill OK');
  else log.debug(`restore drill FAILED: ${result.reason}`); // as in drill(): the caller prints the reason once
  // As in drill(): the verdict is written even after a cancellation (own deadline per write).
  const recordStorage = options.s3?.signal ? openStorage(options.from, { ...options.s3, signal: undefined }) : storage;
  const labels = await archiveDrillLog(recordStorage, options, backup, result, log.lines, startedAt, log);
  if (labels && !result.cancelled) {
    result.history = await drillHistory(storage, labels, 10).catch((err: unknown) => {
      options.logger.warn(`cannot read the previous drills: ${messageOf(err)}`);
      return [];
    });
  }
  return result;
}

function describeBinaries(b: ServerBinaries): string {
  return b.source === 'installed' ? `server binaries in ${b.binDir}` : `server binaries from ${b.packageSpec}`;
}

/**
 * Runs the drill the options ask for: the upgrade rehearsal ({@link drillMajors}) when
 * `postgresVersions` names majors, else one {@link drill}. What the CLI and the action call.
 */
export async function runDrill(options: DrillOptions): Promise<DrillResult> {
  return options.postgresVersions?.length ? drillMajors(options) : drill(options);
}
