import { UsageError } from '../errors.ts';
import { formatSeconds } from '../format.ts';
import { DEFAULT_MAX_CLOCK_SKEW_MS, isFuture, judgeTimes, type ClockCheck } from './clock.ts';
import { DRILLS_FOLDER, GLOBALS_DATABASE, decodeSegment, isGlobalsEntry } from './keys.ts';
import { SAFETY_PREFIX, isSafetyDumpKey, splitSafetyKey } from './safety.ts';

/**
 * What a listing says of a backup's health:
 * - `ok`: the manifest is valid and every stored object it names is there with its size;
 * - `missing`: the dump object (every file of a directory archive) is gone;
 * - `damaged`: the manifest is not JSON, fails the schema or names another backup, or an object
 *   has another size than the manifest says, or some files of a directory archive are gone;
 * - `verify-failed`: the backup's verify record (`<id>.verify.json`, the latest
 *   `verify --record`) says it FAILED;
 * - `future`: its key or manifest is stamped later than now + the clock tolerance
 *   (`--max-clock-skew`, see clock.ts): a wrong clock or a forged object;
 * - `misdated`: its key stamp and its manifest's `startedAt` disagree (or `finishedAt` is before
 *   `startedAt`): one of them was changed.
 * Only `ok` backups are restorable as far as the tool knows: retention never counts another one
 * as a keeper. `future` and `misdated` ones are never `latest`, never fresh, and never deleted
 * because of their time either: a prune keeps them for inspection.
 */
export type BackupStatus = 'ok' | 'missing' | 'damaged' | 'verify-failed' | 'future' | 'misdated';

/** Whether a status says the backup's time is not believed (`future`, `misdated`). */
export function isUntrustedTime(status: BackupStatus | undefined): status is 'future' | 'misdated' {
  return status === 'future' || status === 'misdated';
}

/**
 * Retention planning: which stored backups a prune keeps and which it deletes, and why. Pure —
 * no storage, no clock: the caller lists the bucket, says which backups are proven and what
 * time it is. `src/commands/prune.ts` executes the plan.
 *
 * Rules, applied within each service/environment/database group (UTC throughout):
 * - `keepLast` N: the N newest complete backups.
 * - `keepDaily` / `keepWeekly` / `keepMonthly` N (grandfather-father-son): the newest backup of
 *   each of the N most recent days / ISO weeks (Monday to Sunday) / months that have a backup —
 *   restic's and borg's meaning, so a week without dumps does not use up a slot.
 * - `maxAgeMs`: a cap — a backup older than this is deleted whatever the keep rules say. Given
 *   alone, every backup younger than it is kept.
 * - `keepProven` N (default 1): the N newest backups that passed a drill or a recorded verify
 *   are never deleted, not even past `maxAgeMs`.
 * - Refusal: when a group's newest complete backup is older than `maxAgeMs`, or the group has
 *   no complete backup but an incomplete one past the grace period, the dumps are failing:
 *   nothing in that group is deleted.
 * - Incomplete backups (objects without a manifest) whose newest object is older than
 *   `incompleteGraceMs` (default 1 day) are deleted; younger ones may still be uploading.
 * - Backups that are not restorable (`status` other than `ok`: dump object missing, manifest
 *   damaged, object of the wrong size, recorded verify FAILED) are never counted by a keep rule
 *   nor as proven: the keepers are the restorable ones. One newer than every restorable backup
 *   is kept (flagged: it holds the newest data and shows the failure); an older one is deleted,
 *   its point in time being covered by a newer restorable backup. A group with complete backups
 *   but no restorable one is refused, and so is one whose newest restorable backup is older than
 *   `maxAgeMs`.
 * - Backups whose time is not believed (status `future` or `misdated`, or a key stamped later
 *   than `now` + `maxClockSkewMs`, complete or not): never a keeper, never the newest restorable,
 *   never counted in a keep-last or period slot, never proven — and never deleted either, since
 *   their age means nothing: kept for inspection, flagged. docs/retention.md tells the same.
 * - A run's globals (`@globals`, src/backup/globals.ts) are no database: never counted by a keep
 *   rule, never a reason to refuse. Each service/environment's globals form their own group,
 *   planned after the databases: a globals object is kept while any kept database backup of
 *   the same run (manifest `run.id`) exists, or while it is younger than `incompleteGraceMs`
 *   (its run may still be dumping its databases); otherwise it is deleted. Incomplete and
 *   untrusted ones follow the rules above.
 */

/** A retention policy. Durations in ms; counts are backups or periods. */
export interface RetentionPolicy {
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  /** Delete backups older than this; refuse to prune a group whose newest backup is older. */
  maxAgeMs?: number;
  /** The newest N proven backups of each group are never deleted. Default 1. */
  keepProven?: number;
  /** Incomplete backups are deleted once their newest object is this old. Default 1 day. */
  incompleteGraceMs?: number;
  /** A backup stamped later than now + this is `future` (see clock.ts). Default {@link DEFAULT_MAX_CLOCK_SKEW_MS}. */
  maxClockSkewMs?: number;
}

/** One backup as found in the bucket: every object sharing the stem `<dir>/<id>`. */
export interface StoredBackup {
  service: string;
  environment: string;
  database: string;
  id: string;
  /** `<service>/<environment>/<database>/YYYY/MM/DD/<id>` (encoded key segments). */
  stem: string;
  /** UTC start of the dump, from the id. */
  startedAt: Date;
  /** Its manifest exists. */
  complete: boolean;
  /** Every object of the backup (manifest, dump object, sidecars, `<id>.dir/…` files, verify record). */
  keys: string[];
  /** Total stored bytes of `keys` (what deleting the backup frees). */
  sizeBytes: number;
  /** Stored bytes of the archive alone (dump object or directory files; `archiveBytes` in parts.ts): the size outputs show. */
  archiveBytes?: number;
  /** Newest last-modified time among `keys`. */
  lastModified: Date;
  /** Why it is proven (e.g. `drill OK 2026-11-20T03:00:00Z`); undefined when it is not. */
  proof?: string;
  /** What a check of the manifest and objects found (complete backups); undefined means not checked, taken as `ok`. */
  status?: BackupStatus;
  /** Why `status` is not ok, one line. */
  problem?: string;
  /** The dump run it belongs to (its manifest's `run.id`), when the manifest was read and records one. */
  runId?: string;
}

/** A backup with its fate and the reasons for it. */
export interface PlannedBackup extends StoredBackup {
  action: 'keep' | 'delete';
  /** Every rule that keeps it, or why it goes. */
  reasons: string[];
  /** Set when its time is not believed (`future`, `misdated`): kept for inspection. */
  untrustedTime?: 'future' | 'misdated';
}

/** The plan of one service/environment/database group. */
export interface GroupPlan {
  service: string;
  environment: string;
  database: string;
  /** Set when the group is refused (dumps are failing): the reason; nothing in it is deleted. */
  refused?: string;
  /** Complete backups, newest first. */
  backups: PlannedBackup[];
  /** Incomplete backups (no manifest), newest first. */
  incomplete: PlannedBackup[];
}

/** What a prune will do. */
export interface RetentionPlan {
  /** UTC, ISO 8601: the time the plan was made for. */
  now: string;
  groups: GroupPlan[];
}

export const DEFAULT_KEEP_PROVEN = 1;
export const DEFAULT_INCOMPLETE_GRACE_MS = 86_400_000;

/**
 * Checks a policy: counts are non-negative integers and at least one of the keep rules or
 * `maxAgeMs` is given (otherwise every backup would go).
 * @throws UsageError naming the option.
 */
export function validatePolicy(policy: RetentionPolicy): void {
  const counts: [keyof RetentionPolicy, string][] = [
    ['keepLast', '--keep-last'],
    ['keepDaily', '--keep-daily'],
    ['keepWeekly', '--keep-weekly'],
    ['keepMonthly', '--keep-monthly'],
    ['keepProven', '--keep-proven'],
  ];
  for (const [field, flag] of counts) {
    const v = policy[field];
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new UsageError(`${flag} must be a whole number of 0 or more (got ${String(v)})`);
  }
  if (policy.maxAgeMs !== undefined && !(policy.maxAgeMs > 0)) throw new UsageError('--max-age must be longer than 0');
  const keeps = (policy.keepLast ?? 0) + (policy.keepDaily ?? 0) + (policy.keepWeekly ?? 0) + (policy.keepMonthly ?? 0);
  if (keeps === 0 && policy.maxAgeMs === undefined) {
    throw new UsageError('no retention rule given: use at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly or --max-age');
  }
}

/** `YYYY-MM-DD` (UTC). */
export function dayOf(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** `YYYY-MM` (UTC). */
export function monthOf(d: Date): string {
  return d.toISOString().slice(0, 7);
}

/** ISO 8601 week `YYYY-Www` (UTC; weeks start on Monday; week 1 holds the year's first Thursday). */
export function isoWeekOf(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const dow = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - dow); // the Thursday of this week decides its year
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** A policy duration as a user writes it: `30d`, `36h`, else as {@link formatSeconds}. */
function formatLimit(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  return formatSeconds(ms);
}

const newestFirst = (a: StoredBackup, b: StoredBackup) => b.startedAt.getTime() - a.startedAt.getTime() || (a.stem < b.stem ? 1 : a.stem > b.stem ? -1 : 0);

/**
 * Plans a prune of `backups` under `policy` at `now`. Every input backup appears exactly once
 * in the plan. Groups are sorted by service, environment, database.
 * @throws UsageError for an invalid policy (see {@link validatePolicy}).
 */
export function planRetention(backups: StoredBackup[], policy: RetentionPolicy, now: Date): RetentionPlan {
  validatePolicy(policy);
  const groups = new Map<string, StoredBackup[]>();
  const globals = new Map<string, StoredBackup[]>();
  for (const b of backups) {
    const k = JSON.stringify([b.service, b.environment, b.database]);
    const into = isGlobalsBackup(b) ? globals : groups;
    into.set(k, [...(into.get(k) ?? []), b]);
  }
  const byKey = ([a]: [string, unknown], [b]: [string, unknown]) => (a < b ? -1 : a > b ? 1 : 0);
  const plans = [...groups.entries()].sort(byKey).map(([, members]) => planGroup(members, policy, now));
  // The globals a kept database backup needs: those of its run.
  const keptRuns = new Set(plans.flatMap((g) => g.backups.filter((b) => b.action === 'keep' && b.runId).map((b) => b.runId!)));
  const globalsPlans = [...globals.entries()].sort(byKey).map(([, members]) => planGlobals(members, keptRuns, policy, now));
  return { now: now.toISOString(), groups: [...plans, ...globalsPlans].sort((a, b) => byKey([JSON.stringify([a.service, a.environment, a.database]), 0], [JSON.stringify([b.service, b.environment, b.database]), 0])) };
}

/** Whether a stored backup is a run's globals (the reserved `@globals` key segment, keys.ts). */
export function isGlobalsBackup(b: Pick<StoredBackup, 'database' | 'stem'>): boolean {
  return isGlobalsEntry({ database: b.database, manifestKey: b.stem });
}

/**
 * The plan of one service/environment's globals: each complete one is kept while a kept
 * database backup of its run exists (`keptRuns`), or while younger than the incomplete grace
 * period (its run may still be dumping); else deleted. Never refused; untrusted times and
 * incomplete objects as for databases.
 */
function planGlobals(members: StoredBackup[], keptRuns: Set<string>, policy: RetentionPolicy, now: Date): GroupPlan {
  const { service, environment } = members[0]!;
  const clock: ClockCheck = { now, maxSkewMs: policy.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS };
  const grace = policy.incompleteGraceMs ?? DEFAULT_INCOMPLETE_GRACE_MS;
  const plan = (b: StoredBackup): PlannedBackup => {
    const t = untrustedTimeOf(b, clock);
    if (t) return { ...b, ...(b.complete ? { status: t.time, problem: t.problem } : {}), action: 'keep', untrustedTime: t.time, reasons: [`${t.time === 'future' ? 'FUTURE' : 'MISDATED'} (${t.problem}); kept for inspection`] };
    const age = now.getTime() - (b.complete ? b.startedAt.getTime() : Math.max(b.lastModified.getTime(), b.startedAt.getTime()));
    if (!b.complete) {
      return age > grace
        ? { ...b, action: 'delete', reasons: [`incomplete (no manifest), last written ${formatSeconds(age)} ago, over the grace period ${formatLimit(grace)}`] }
        : { ...b, action: 'keep', reasons: [`incomplete, within the grace period ${formatLimit(grace)} (it may still be uploading)`] };
    }
    if (b.runId && keptRuns.has(b.runId)) return { ...b, action: 'keep', reasons: [`globals of ${b.runId}, whose kept database backups need them`] };
    if (age <= grace) return { ...b, action: 'keep', reasons: [`globals of ${b.runId ?? 'a run'}, within the grace period ${formatLimit(grace)} (the run may still be dumping its databases)`] };
    return { ...b, action: 'delete', reasons: [b.runId ? `no kept database backup of ${b.runId}` : 'records no run and no kept database backup can need it'] };
  };
  return {
    service,
    environment,
    database: GLOBALS_DATABASE,
    backups: members.filter((b) => b.complete).sort(newestFirst).map(plan),
    incomplete: members.filter((b) => !b.complete).sort(newestFirst).map(plan),
  };
}

/** Whether a backup counts as restorable: complete, and its check (if any) found nothing wrong. */
export function isRestorable(b: StoredBackup): boolean {
  return b.complete && (b.status === undefined || b.status === 'ok');
}

/**
 * Whether a backup's time is not believed: its check said `future` or `misdated`, or its key is
 * stamped later than the clock allows (judged here too, so an unchecked backup cannot win).
 * @returns the verdict and why, or undefined.
 */
export function untrustedTimeOf(b: StoredBackup, clock: ClockCheck): { time: 'future' | 'misdated'; problem: string } | undefined {
  if (isUntrustedTime(b.status)) return { time: b.status, problem: b.problem ?? b.status };
  if (!isFuture(clock, b.startedAt)) return undefined;
  return judgeTimes(clock, { kind: 'backup', keyStamp: b.startedAt });
}

function planGroup(members: StoredBackup[], policy: RetentionPolicy, now: Date): GroupPlan {
  const { service, environment, database } = members[0]!;
  const clock: ClockCheck = { now, maxSkewMs: policy.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS };
  const untrusted = new Map(members.flatMap((b) => {
    const t = untrustedTimeOf(b, clock);
    return t ? [[b, t] as const] : [];
  }));
  /** A backup kept whatever happens, because its time means nothing: flagged. */
  const forInspection = (b: StoredBackup): PlannedBackup => {
    const t = untrusted.get(b)!;
    const label = t.time === 'future' ? 'FUTURE' : 'MISDATED';
    const why = t.time === 'future' ? 'stamped in the future' : 'its stamps disagree';
    return { ...b, ...(b.complete ? { status: t.time, problem: t.problem } : {}), action: 'keep', untrustedTime: t.time, reasons: [`${label} (${t.problem}), never counted as a keeper${b.complete ? '' : ' (incomplete)'}; kept for inspection: ${why}`] };
  };
  const complete = members.filter((b) => b.complete).sort(newestFirst);
  const incomplete = members.filter((b) => !b.complete).sort(newestFirst);
  const restorable = complete.filter((b) => isRestorable(b) && !untrusted.has(b));
  const maxAge = policy.maxAgeMs;
  const ageOf = (b: StoredBackup) => now.getTime() - b.startedAt.getTime();

  const grace = policy.incompleteGraceMs ?? DEFAULT_INCOMPLETE_GRACE_MS;
  const idleOf = (b: StoredBackup) => now.getTime() - Math.max(b.lastModified.getTime(), b.startedAt.getTime());
  let refused: string | undefined;
  const newest = restorable[0];
  const brokenNote = (b: StoredBackup) => {
    const t = untrusted.get(b);
    return t ? `${t.time}: ${t.problem}` : `${b.status}${b.problem ? `: ${b.problem}` : ''}`;
  };
  // A group without a complete backup is refused once an incomplete one is past the grace period
  // (its dumps fail); before that its first dump may still be uploading.
  if (complete.length === 0 && incomplete.some((b) => idleOf(b) > grace)) refused = 'no complete backup in this group: the dumps are failing, nothing is deleted here';
  else if (complete.length > 0 && !newest) {
    refused = `no restorable backup in this group: all ${complete.length} complete backup(s) are not restorable (the newest is ${brokenNote(complete[0]!)}), nothing is deleted here`;
  } else if (newest && maxAge !== undefined && ageOf(newest) > maxAge) {
    const which = newest === complete[0] ? 'complete' : 'restorable';
    refused = `the newest ${which} backup is ${formatSeconds(ageOf(newest))} old (taken ${newest.startedAt.toISOString()}), over max-age ${formatLimit(maxAge)}: the dumps are failing, nothing is deleted here`;
  }
  if (refused) {
    const keepAll = (b: StoredBackup): PlannedBackup => (untrusted.has(b) ? forInspection(b) : { ...b, action: 'keep', reasons: ['group refused (stale)'] });
    return { service, environment, database, refused, backups: complete.map(keepAll), incomplete: incomplete.map(keepAll) };
  }

  const reasons = new Map<StoredBackup, string[]>(restorable.map((b) => [b, []]));
  restorable.slice(0, policy.keepLast ?? 0).forEach((b, i) => reasons.get(b)!.push(`last ${i + 1}`));
  const periodRule = (n: number | undefined, label: string, periodOf: (d: Date) => string) => {
    const seen = new Set<string>();
    for (const b of restorable) {
      if (seen.size >= (n ?? 0)) break;
      const p = periodOf(b.startedAt);
      if (seen.has(p)) continue;
      seen.add(p);
      reasons.get(b)!.push(`${label} ${p}`);
    }
  };
  periodRule(policy.keepDaily, 'daily', dayOf);
  periodRule(policy.keepWeekly, 'weekly', isoWeekOf);
  periodRule(policy.keepMonthly, 'monthly', monthOf);
  const noKeepRule = !(policy.keepLast || policy.keepDaily || policy.keepWeekly || policy.keepMonthly);
  const proven = new Set(restorable.filter((b) => b.proof).slice(0, policy.keepProven ?? DEFAULT_KEEP_PROVEN));

  const planned = complete.map((b): PlannedBackup => {
    if (untrusted.has(b)) return forInspection(b);
    const tooOld = maxAge !== undefined && ageOf(b) > maxAge;
    if (!isRestorable(b)) {
      const note = `NOT RESTORABLE (${brokenNote(b)}), never counted as a keeper`;
      if (b.startedAt.getTime() > newest!.startedAt.getTime() && !tooOld) return { ...b, action: 'keep', reasons: [`${note}; kept for inspection: newer than every restorable backup`] };
      return { ...b, action: 'delete', reasons: [`${note}; the restorable backup of ${newest!.startedAt.toISOString().replace('.000Z', 'Z')} is newer`] };
    }
    const why = reasons.get(b)!;
    if (proven.has(b)) return { ...b, action: 'keep', reasons: [`proven: ${b.proof}`, ...(tooOld ? [] : why)] };
    if (tooOld) return { ...b, action: 'delete', reasons: [`older than max-age ${formatLimit(maxAge)} (${formatSeconds(ageOf(b))} old)`] };
    if (noKeepRule) return { ...b, action: 'keep', reasons: ['within max-age'] };
    return why.length ? { ...b, action: 'keep', reasons: why } : { ...b, action: 'delete', reasons: ['no keep rule selects it'] };
  });

  const plannedIncomplete = incomplete.map((b): PlannedBackup => {
    if (untrusted.has(b)) return forInspection(b);
    const idle = idleOf(b);
    return idle > grace
      ? { ...b, action: 'delete', reasons: [`incomplete (no manifest), last written ${formatSeconds(idle)} ago, over the grace period ${formatLimit(grace)}`] }
      : { ...b, action: 'keep', reasons: [`incomplete, within the grace period ${formatLimit(grace)} (it may still be uploading)`] };
  });
  return { service, environment, database, backups: planned, incomplete: plannedIncomplete };
}

/**
 * The order a backup's objects are deleted in: the manifest first — from then on the backup is
 * no longer listed as complete, so a prune interrupted half-way never leaves a "complete"
 * backup without its dump — then everything else.
 */
export function deletionOrder(keys: string[]): string[] {
  const manifest = keys.filter((k) => k.endsWith('.manifest.json'));
  return [...manifest, ...keys.filter((k) => !k.endsWith('.manifest.json'))];
}

const BACKUP_OBJECT = /^([^/]+)\/([^/]+)\/([^/]+)\/(\d{4})\/(\d{2})\/(\d{2})\/([^/]+-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-[0-9a-f]{6})(?:\.[^/]+|\.dir\/[^/]+)$/;

/** What a backup object's key tells: its group, id, stem and start time. */
export interface BackupObjectKey {
  service: string;
  environment: string;
  database: string;
  id: string;
  stem: string;
  startedAt: Date;
  /** Set for a safety dump of `restore --clean` (see safety.ts): never part of a group's retention. */
  safetyDump?: true;
}

/**
 * Parses any object key of the backup layout (`<svc>/<env>/<db>/YYYY/MM/DD/<id>.<anything>` or
 * `<id>.dir/<file>`); undefined for every other key (drill logs, foreign files), which a prune
 * never touches.
 */
export function parseBackupObjectKey(key: string): BackupObjectKey | undefined {
  const { inFolder, rest } = splitSafetyKey(key);
  const m = BACKUP_OBJECT.exec(rest);
  if (!m || m[1] === DRILLS_FOLDER) return undefined;
  const [, s, e, db, yyyy, mm, dd, id, y, mo, d, h, mi, sec] = m as unknown as string[];
  try {
    return {
      service: decodeSegment(s!),
      environment: decodeSegment(e!),
      database: decodeSegment(db!),
      id: id!,
      stem: (inFolder ? SAFETY_PREFIX : '') + [s, e, db, yyyy, mm, dd, id].join('/'),
      startedAt: new Date(Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +sec!)),
      ...(isSafetyDumpKey(inFolder, decodeSegment(e!)) ? { safetyDump: true as const } : {}),
    };
  } catch {
    return undefined;
  }
}
