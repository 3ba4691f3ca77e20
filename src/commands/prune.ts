import { checkBackup, filterPrefix, type BackupFilter } from '../backup/catalog.ts';
import { parseDuration } from '../duration.ts';
import { parseMaxClockSkew } from '../backup/clock.ts';
import { findProofs } from '../backup/proof.ts';
import type { DrillTrust } from '../evidence/check.ts';
import { mapLimit } from '../map-limit.ts';
import {
  isGlobalsBackup,
  DEFAULT_INCOMPLETE_GRACE_MS, DEFAULT_KEEP_PROVEN, deletionOrder, isRestorable, isUntrustedTime, parseBackupObjectKey, planRetention, validatePolicy,
  type PlannedBackup, type RetentionPlan, type RetentionPolicy, type StoredBackup,
} from '../backup/retention.ts';
import { UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { checkLocation, openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { formatBytes } from '../format.ts';
import { renderTable, type Row } from '../cli/table.ts';
import { archiveBytes } from '../backup/parts.ts';
import { DEFAULT_KEEP_SAFETY_DUMPS, SAFETY_PREFIX, planSafetyDumps } from '../backup/safety.ts';

/** Options of {@link prune}. Counts and durations may be given as text, as typed by a user. */
export interface PruneOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  /** Prune only these groups; retention is always applied per service/environment/database. */
  filter?: BackupFilter;
  keepLast?: number | string;
  keepDaily?: number | string;
  keepWeekly?: number | string;
  keepMonthly?: number | string;
  /** e.g. `30d`: delete older backups; refuse a group whose newest backup is older. */
  maxAge?: string;
  /** The newest N proven (drilled or verified) backups per group are never deleted. Default 1. */
  keepProven?: number | string;
  /** Incomplete backups older than this are deleted. Default `1d`. */
  incompleteGrace?: string;
  /**
   * A backup, drill report or verify record stamped later than now + this (`10m`, the default)
   * is not believed: such a backup is never a keeper and never deleted (kept for inspection),
   * such a record proves nothing. See src/backup/clock.ts.
   */
  maxClockSkew?: string;
  /** Safety dumps of `restore --clean` older than this are deleted (src/backup/safety.ts). Default `14d`. */
  keepSafetyDumps?: string;
  /** Delete. Default false: plan only (dry run). */
  apply?: boolean;
  s3?: S3Settings;
  logger: Logger;
  signal?: AbortSignal;
  /** Clock, for tests. */
  now?: () => Date;
  /** The storage to use instead of opening `from` (tests wrap it to record deletes). */
  storage?: Storage;
  /** `--require-signed-drills`: only drill reports whose signed statement verifies are proof (src/evidence/check.ts). */
  drillTrust?: DrillTrust;
}

/** The outcome of {@link prune}. A refused group is a result (`ok: false`), not an exception. */
export interface PruneResult {
  /** False when a group was refused (stale dumps) or a delete failed. */
  ok: boolean;
  /** Whether deletes were made (`apply`), or this is a dry run. */
  applied: boolean;
  /** Why not ok: the first refusal or failure. */
  reason?: string;
  plan: RetentionPlan;
  /**
   * The safety dumps of `restore --clean` in scope, oldest first, each kept or deleted by their
   * own retention (`keepSafetyDumps`) alone: never part of a group of `plan`, never a reason to
   * refuse.
   */
  safetyDumps: PlannedBackup[];
  /** `service/environment/database: reason` of each refused group. */
  refused: string[];
  /** Deletes that failed, one line each. */
  failures: string[];
  /**
   * Complete backups kept / to delete (or deleted), incomplete ones to delete (or deleted), and
   * complete backups found not restorable (missing, damaged, verify-failed, future, misdated:
   * never keepers), and among them those whose time is not believed (future, misdated: kept for
   * inspection).
   */
  counts: { kept: number; deleted: number; incompleteDeleted: number; objectsDeleted: number; bytesDeleted: number; notRestorable: number; untrustedTime: number };
  durationMs: number;
}

/**
 * Parses a count option (`--keep-last 7`).
 * @throws UsageError unless it is a whole number ≥ 0.
 */
export function parseCount(value: number | string | undefined, flag: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const text = String(value).trim();
  if (!/^\d{1,6}$/.test(text)) throw new UsageError(`${flag} ${JSON.stringify(String(value))} is not a count: use a whole number such as 7`);
  return Number(text);
}

/**
 * The policy the options describe.
 * @throws UsageError for a malformed count or duration, or no rule at all.
 */
export function policyFrom(options: Pick<PruneOptions, 'keepLast' | 'keepDaily' | 'keepWeekly' | 'keepMonthly' | 'maxAge' | 'keepProven' | 'incompleteGrace' | 'maxClockSkew'>): RetentionPolicy {
  const policy: RetentionPolicy = {
    keepLast: parseCount(options.keepLast, '--keep-last'),
    keepDaily: parseCount(options.keepDaily, '--keep-daily'),
    keepWeekly: parseCount(options.keepWeekly, '--keep-weekly'),
    keepMonthly: parseCount(options.keepMonthly, '--keep-monthly'),
    maxAgeMs: options.maxAge ? parseDuration(options.maxAge, '--max-age') : undefined,
    keepProven: parseCount(options.keepProven, '--keep-proven') ?? DEFAULT_KEEP_PROVEN,
    incompleteGraceMs: options.incompleteGrace ? parseDuration(options.incompleteGrace, '--incomplete-grace') : DEFAULT_INCOMPLETE_GRACE_MS,
    maxClockSkewMs: parseMaxClockSkew(options.maxClockSkew),
  };
  validatePolicy(policy);
  return policy;
}

/**
 * Lists every backup under `storage` (complete and incomplete), grouping each backup's objects by
 * their stem `<svc>/<env>/<db>/YYYY/MM/DD/<id>`. Keys outside the backup layout (drill logs,
 * foreign files) are not returned. Needs List only.
 */
export async function scanBackups(storage: Storage, filter: BackupFilter = {}): Promise<StoredBackup[]> {
  return (await scanWithSizes(storage, filter)).map((s) => s.backup);
}

/** {@link scanBackups}, with each backup's objects as key → stored size in bytes. */
async function scanWithSizes(storage: Storage, filter: BackupFilter): Promise<{ backup: StoredBackup & { safetyDump?: true }; objects: Map<string, number> }[]> {
  const byStem = new Map<string, { backup: StoredBackup & { safetyDump?: true }; objects: Map<string, number> }>();
  // Safety dumps lie under `safety-dumps/`: listed with the rest when no filter narrows the
  // prefix, else by a second listing of `safety-dumps/<filter prefix>`.
  const prefix = filterPrefix(filter);
  const listings = prefix ? [storage.list(prefix), storage.list(`${SAFETY_PREFIX}${prefix}`)] : [storage.list('')];
  for (const listing of listings) for await (const obj of listing) {
    const parsed = parseBackupObjectKey(obj.key);
    if (!parsed) continue;
    if ((filter.service && parsed.service !== filter.service) || (filter.environment && parsed.environment !== filter.environment) || (filter.database && parsed.database !== filter.database)) continue;
    let found = byStem.get(parsed.stem);
    if (!found) {
      found = { backup: { ...parsed, complete: false, keys: [], sizeBytes: 0, lastModified: obj.lastModified }, objects: new Map() };
      byStem.set(parsed.stem, found);
    }
    const b = found.backup;
    b.keys.push(obj.key);
    found.objects.set(obj.key, obj.sizeBytes);
    b.sizeBytes += obj.sizeBytes;
    if (obj.lastModified > b.lastModified) b.lastModified = obj.lastModified;
    if (obj.key === `${parsed.stem}.manifest.json`) b.complete = true;
  }
  for (const { backup, objects } of byStem.values()) backup.archiveBytes = archiveBytes(backup.stem, objects);
  return [...byStem.values()];
}

/**
 * Applies a retention policy to the backups under `from`: plans per service/environment/database
 * group (see `src/backup/retention.ts` for the rules), and with `apply` deletes what the plan
 * says, oldest backup first; each backup's manifest is deleted before its other objects, so a
 * prune that stops half-way never leaves a listed backup without its dump. Every complete backup
 * is checked first (manifest read and validated, object sizes compared with it, verify record
 * read): one that is not restorable is never counted as a keeper. A group whose newest
 * restorable backup is older than `maxAge`, or that has complete backups but no restorable one,
 * is refused — nothing in it is deleted — and the result is not ok. A backup stamped in the
 * future or misdated (`maxClockSkew`, see src/backup/clock.ts) is never a keeper and never
 * deleted: kept for inspection, with a warning; drill reports and verify records stamped in the
 * future prove nothing. Drill reports and foreign
 * keys are never touched. Needs List, Get (manifests, drill reports, verify records) and, with
 * `apply`, Delete.
 * @throws UsageError for bad options, a location that does not exist, unusable storage, or a
 * delete the credentials may not make.
 */
export async function prune(options: PruneOptions): Promise<PruneResult> {
  const started = Date.now();
  const { logger } = options;
  const policy = policyFrom(options);
  const storage = options.storage ?? openStorage(options.from, options.s3);
  const now = (options.now ?? (() => new Date()))();
  const clock = { now, maxSkewMs: policy.maxClockSkewMs! };

  const keepSafetyText = options.keepSafetyDumps?.trim() || DEFAULT_KEEP_SAFETY_DUMPS;
  const keepSafetyMs = parseDuration(keepSafetyText, '--keep-safety-dumps');

  await checkLocation(storage);
  const everything = await scanWithSizes(storage, options.filter ?? {});
  // Safety dumps have their own retention (by age alone) and are no group's backups.
  const scanned = everything.filter((s) => !s.backup.safetyDump);
  const safetyPlan = planSafetyDumps(everything.filter((s) => s.backup.safetyDump).map((s) => s.backup), keepSafetyMs, policy.incompleteGraceMs ?? DEFAULT_INCOMPLETE_GRACE_MS, now, keepSafetyText)
    .sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime());
  const found = scanned.map((s) => s.backup);
  // Every complete backup is checked (manifest read and validated, sizes compared, verify
  // record read): one that is not restorable is never a keeper.
  await mapLimit(scanned.filter((s) => s.backup.complete), 8, async ({ backup, objects }) => {
    const health = await checkBackup(storage, { manifestKey: `${backup.stem}.manifest.json`, objects }, clock);
    backup.status = health.status;
    if (health.problem) backup.problem = health.problem;
    if (health.manifest?.run) backup.runId = health.manifest.run.id;
  });
  const broken = found.filter((b) => b.complete && !isRestorable(b));
  for (const b of broken) {
    if (isUntrustedTime(b.status)) logger.warn(`${storage.uri(b.stem)} is ${b.status === 'future' ? 'FUTURE' : 'MISDATED'} (${b.problem}): never counted as a keeper, never deleted; kept for inspection`);
    else logger.warn(`${storage.uri(b.stem)} is not restorable (${b.status}: ${b.problem}): never counted as a keeper`);
  }
  // Proof is read only for the groups' restorable backups, newest first, until keep-proven are found.
  const groups = new Map<string, StoredBackup[]>();
  for (const b of found) if (isRestorable(b) && !isGlobalsBackup(b)) groups.set(JSON.stringify([b.service, b.environment, b.database]), [...(groups.get(JSON.stringify([b.service, b.environment, b.database])) ?? []), b]);
  for (const members of groups.values()) {
    members.sort((a, b) => b.startedAt.getTime() - a.startedAt.getTime() || (a.stem < b.stem ? 1 : -1));
    const proofs = await findProofs(storage, members[0]!, members, policy.keepProven ?? DEFAULT_KEEP_PROVEN, logger, clock, options.drillTrust);
    for (const b of members) b.proof = proofs.get(b.id);
  }
  const plan = planRetention(found, policy, now);

  const result: PruneResult = {
    ok: true,
    applied: Boolean(options.apply),
    plan,
    safetyDumps: safetyPlan,
    refused: [],
    failures: [],
    counts: { kept: 0, deleted: 0, incompleteDeleted: 0, objectsDeleted: 0, bytesDeleted: 0, notRestorable: broken.length, untrustedTime: 0 },
    durationMs: 0,
  };
  const doomed: PlannedBackup[] = [];
  for (const g of plan.groups) {
    const scope = `${g.service}/${g.environment}/${g.database}`;
    if (g.refused) {
      result.refused.push(`${scope}: ${g.refused}`);
      logger.warn(`prune refused for ${scope}: ${g.refused}`);
    }
    result.counts.kept += g.backups.filter((b) => b.action === 'keep').length;
    result.counts.untrustedTime += [...g.backups, ...g.incomplete].filter((b) => b.untrustedTime).length;
    doomed.push(...g.backups.filter((b) => b.action === 'delete'), ...g.incomplete.filter((b) => b.action === 'delete'));
  }
  result.counts.kept += safetyPlan.filter((b) => b.action === 'keep' && b.complete).length;
  doomed.push(...safetyPlan.filter((b) => b.action === 'delete'));
  doomed.sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime());
  const planned = { deleted: doomed.filter((b) => b.complete).length, incomplete: doomed.filter((b) => !b.complete).length };
  logger.info(`plan: keep ${result.counts.kept} backup${result.counts.kept === 1 ? '' : 's'}, delete ${planned.deleted} and ${planned.incomplete} incomplete (frees ${formatBytes(doomed.reduce((n, b) => n + b.sizeBytes, 0))})${result.refused.length ? `; ${result.refused.length} group(s) refused` : ''}`);

  if (options.apply) {
    for (const b of doomed) {
      if (options.signal?.aborted) throw options.signal.reason;
      const failure = await deleteBackup(storage, b);
      if (failure) {
        result.failures.push(failure);
        logger.warn(failure);
        continue;
      }
      if (b.complete) result.counts.deleted++;
      else result.counts.incompleteDeleted++;
      result.counts.objectsDeleted += b.keys.length;
      result.counts.bytesDeleted += b.sizeBytes;
      logger.info(`deleted ${storage.uri(b.stem)}${b.complete ? '' : ' (incomplete)'}: ${b.keys.length} object${b.keys.length === 1 ? '' : 's'}, ${formatBytes(b.sizeBytes)}`);
    }
  } else {
    result.counts.deleted = planned.deleted;
    result.counts.incompleteDeleted = planned.incomplete;
    result.counts.objectsDeleted = doomed.reduce((n, b) => n + b.keys.length, 0);
    result.counts.bytesDeleted = doomed.reduce((n, b) => n + b.sizeBytes, 0);
    logger.info('dry run: nothing deleted (add --apply to delete)');
  }
  result.ok = result.refused.length === 0 && result.failures.length === 0;
  result.reason = result.refused[0] ? `prune refused for ${result.refused[0]}` : result.failures[0];
  result.durationMs = Date.now() - started;
  return result;
}

/**
 * Deletes one backup: the manifest first (alone), then its other objects, 8 at a time.
 * @returns a failure line, or undefined when every object is gone.
 * @throws UsageError when the credentials may not delete (no point going on).
 */
async function deleteBackup(storage: Storage, b: PlannedBackup): Promise<string | undefined> {
  const [first, ...rest] = deletionOrder(b.keys);
  const isManifest = first!.endsWith('.manifest.json');
  try {
    if (isManifest) await storage.delete(first!);
    await mapLimit(isManifest ? rest : [first!, ...rest], 8, (key) => storage.delete(key));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    return `could not delete all of ${storage.uri(b.stem)}: ${messageOf(err)}${isManifest ? ' (its manifest is gone: the next prune removes the rest as an incomplete backup)' : ''}`;
  }
  return undefined;
}

/**
 * The plan as an aligned table (src/cli/table.ts): a header row, then per group a heading line
 * (`service/environment/database`, `: REFUSED — why` when refused) and one row per backup —
 * action, start (UTC), size (the archive's, as `list` shows it; see `archiveBytes` in
 * src/backup/parts.ts), key stem, reasons — incomplete backups after the complete ones; then
 * the safety dumps of `restore --clean`, under their own heading.
 */
export function formatPlan(plan: RetentionPlan, safetyDumps: PlannedBackup[] = []): string[] {
  const rows: Row[] = [];
  const row = (b: PlannedBackup): string[] => [b.action, b.startedAt.toISOString().replace('.000Z', 'Z'), b.archiveBytes === undefined ? '-' : formatBytes(b.archiveBytes), b.stem, b.reasons.join('; ')];
  for (const g of plan.groups) {
    rows.push({ line: `${g.service}/${g.environment}/${g.database}${g.refused ? `: REFUSED — ${g.refused}` : ''}` });
    rows.push(...g.backups.map(row));
    if (g.incomplete.length) {
      rows.push({ line: 'incomplete (no manifest):' });
      rows.push(...g.incomplete.map(row));
    }
  }
  if (safetyDumps.length) {
    rows.push({ line: 'safety dumps of restore --clean:' });
    rows.push(...safetyDumps.map(row));
  }
  return renderTable([{ header: 'ACTION' }, { header: 'STARTED (UTC)' }, { header: 'SIZE', align: 'right' }, { header: 'BACKUP' }, { header: 'WHY' }], rows);
}
