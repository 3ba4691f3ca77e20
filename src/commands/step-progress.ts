import type { Manifest } from '../backup/manifest.ts';
import { drillRate, startStepProgress, NO_PROGRESS, type DrillRate, type StepProgress } from '../backup/progress-eta.ts';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { readArchiveToc } from '../postgres/archive-offsets.ts';
import type { StderrLineFilter } from '../postgres/processes.ts';
import { RestoreTableProgress, namesAllowVerbose, pgRestoreStderrFilter } from '../postgres/restore-progress.ts';
import type { Storage } from '../storage/index.ts';
import { drillHistory } from './drill-report.ts';

// The glue between the long commands (drill, restore, verify; diff may call it too) and the
// progress reporter (src/backup/progress-eta.ts): the ETA's drill history, and pg_restore's
// --verbose lines as tables done. The commands' own hooks stay one or two lines each.

/** How many past drills the ETA reads (their JSON reports; the newest first). */
const HISTORY_DRILLS = 20;

/**
 * This database's restore speed from its drill history in `storage`
 * (`drills/<service>/<environment>/<database>/`, src/commands/drill-report.ts): the median RTO per
 * archive byte of its successful drills ({@link drillRate}). Undefined without such drills, or
 * when the history cannot be read (a debug line says why: progress is no reason to fail).
 */
export async function historyRate(storage: Storage, manifest: Manifest, logger: Logger): Promise<DrillRate | undefined> {
  try {
    const history = await drillHistory(storage, manifest, HISTORY_DRILLS);
    return drillRate(history, manifest);
  } catch (err) {
    logger.debug?.(`no ETA from the drill history: ${messageOf(err)}`);
    return undefined;
  }
}

/**
 * Starts the progress report of a drill, restore or verify of `manifest`'s backup. The ETA of a
 * drill or restore comes from the database's drill history when it has one ({@link historyRate},
 * read meanwhile: the step does not wait for it; until it is known, and without history, the
 * ETA is the rate so far). A quiet logger gets {@link NO_PROGRESS} (and the history is not read).
 */
export function startRestoreProgress(what: 'drill' | 'restore' | 'verify', storage: Storage, manifest: Manifest, logger: Logger): StepProgress {
  if (logger.quiet) return NO_PROGRESS;
  const progress = startStepProgress({ label: `${what} ${manifest.database}`, logger, archiveSizeBytes: manifest.archiveSizeBytes });
  if (what !== 'verify') void historyRate(storage, manifest, logger).then((rate) => progress.setRate(rate));
  return progress;
}

/**
 * Enters the `restore` phase of `progress` and returns the stderr filter that turns pg_restore's
 * --verbose lines into tables done (restore-progress.ts), or undefined — pg_restore then runs
 * without --verbose — when progress is off, the backup is not a pg_restore archive, or a name
 * could hold a line break ({@link namesAllowVerbose}: the manifest's tables, and with
 * `customArchive` the raw tags of that local custom archive's TOC; a parallel run, whose filter
 * cannot drop forged lines, needs that TOC). `serial`: one pg_restore job.
 */
export async function restorePhase(progress: StepProgress, manifest: Manifest, options: { customArchive?: string; serial: boolean; tables?: { schema: string; table: string }[] }): Promise<StderrLineFilter | undefined> {
  // A partial restore (--table/--schema) counts only the selected tables.
  const selected = options.tables && new Set(options.tables.map((t) => `${t.schema}\u0000${t.table}`));
  const tables = selected ? manifest.tables.filter((t) => selected.has(`${t.schema}\u0000${t.table}`)) : manifest.tables;
  // Plain SQL (psql) has no per-table lines; a parallel run needs the raw TOC (no serial filter to fall back on).
  if (manifest.format === 'plain' || (!options.serial && !options.customArchive)) {
    progress.phase('restore');
    return undefined;
  }
  progress.phase('restore', { tablesTotal: tables.length, tablesDone: 0, tablesFraction: 0 });
  if (!progress.enabled) return undefined;
  let tags: string[] = [];
  if (options.customArchive) {
    try {
      tags = (await readArchiveToc(options.customArchive)).entries.map((e) => e.tag);
    } catch {
      return undefined; // a TOC this reader does not know: no --verbose, the restore itself is unchanged
    }
  }
  if (!namesAllowVerbose([...tables, ...(manifest.tablesWithoutData ?? [])], tags)) return undefined;
  const tracker = new RestoreTableProgress(tables);
  return pgRestoreStderrFilter(tracker, {
    serial: options.serial,
    onLine: () => progress.update({ tablesDone: tracker.tablesDone, tablesFraction: tracker.fraction, detail: tracker.detail }),
  });
}
