import { z } from 'zod';
import { signedDrillCounts, type DrillTrust } from '../evidence/check.ts';
import { filterPrefix, isBelieved, judgeNewest, listBackups, type BackupEntry, type BackupFilter } from '../backup/catalog.ts';
import { DEFAULT_MAX_CLOCK_SKEW_MS, judgeTimes, parseKeyStamp, type ClockCheck, type TimeProblem, type UntrustedTime } from '../backup/clock.ts';
import { parseDuration } from '../duration.ts';
import { DRILL_STAMP, DRILLS_FOLDER, decodeSegment, isGlobalsEntry } from '../backup/keys.ts';
import { VerifyRecordSchema, type VerifyRecord } from '../backup/proof.ts';
import { mapLimit } from '../map-limit.ts';
import { formatSeconds } from '../format.ts';
import { messageOf } from '../errors.ts';
import type { Storage } from '../storage/index.ts';

/**
 * The fleet status model: what a bucket tells about every database backed up into it, built
 * from one listing of the backups ({@link listBackups}), one listing of `drills/`, the verify
 * records (`<id>.verify.json`, proof.ts) and the drill reports (`drills/<service>/<environment>/
 * <database or stanza>/<YYYY>-Q<n>/<backup id>-drill-<YYYYMMDDTHHMMSS.mmmZ>.json`, drill.ts). Dump
 * objects are not read, and of the manifests only the newest of each database (and one more per
 * backup whose time is not believed: see `judgeNewest`): List and Get of small JSON records.
 *
 * Records whose time is not believed (src/backup/clock.ts: stamped later than now + the
 * tolerance, or whose two stamps disagree) never count: a backup so stamped is not the newest
 * (not fresh), a drill report not the last drill, a verify record not the last verify, neither
 * is proof; each is named in `untrusted`, and the database's state is `untrusted` (exit 1).
 */

/** Default `--max-age`: a database whose newest complete backup is older is stale. 30 h (a daily backup plus slack). */
export const DEFAULT_MAX_AGE_MS = 30 * 3_600_000;

/** Drill reports read per database for its RTO history (the newest ones), beside those of the backups kept. */
export const DEFAULT_DRILL_HISTORY = 30;

/** How far back the size trend looks: the newest backup against the median of up to this many before it. */
export const SIZE_TREND_WINDOW = 7;

/** A newest backup this much smaller than the median before it (in %) is flagged. */
export const SIZE_DROP_WARNING_PERCENT = -50;

/**
 * The verdict for one database, worst first: `failed` (its last drill failed), `stale` (no
 * complete backup newer than the max age), `untrusted` (a backup, drill report or verify record
 * stamped in the future or misdated: see {@link UntrustedRecord}), `warning` (last verify
 * failed, backups whose dump object is missing, a size drop, an RTO over budget, unreadable
 * records), `ok`.
 */
export type DatabaseState = 'failed' | 'stale' | 'untrusted' | 'warning' | 'ok';

/** A record whose time is not believed (src/backup/clock.ts): not counted, named. */
export interface UntrustedRecord {
  kind: 'backup' | 'drill report' | 'verify record';
  /** Its key relative to the location (a backup: its manifest). */
  key: string;
  time: UntrustedTime;
  /** One line: which stamp, how far ahead or apart. */
  problem: string;
}

/** `logical`: pg_dump backups under `<service>/<environment>/<database>/`. `physical`: only drill reports (e.g. a pgBackRest stanza). */
export type DatabaseKind = 'logical' | 'physical';

/** The newest complete backup of a database. */
export interface NewestBackup {
  id: string;
  /** UTC, ISO 8601, to the second. */
  startedAt: string;
  /** Age at the time of the status, in ms. */
  ageMs: number;
  /** Stored size (the dump object, compressed and encrypted as stored), in bytes. */
  sizeBytes: number;
  /** The dump object's key relative to the location (what `--backup` takes). */
  key: string;
}

/** The newest verify record of a database (`verify --record`). */
export interface LastVerify {
  /** UTC, ISO 8601. */
  at: string;
  ok: boolean;
  /** `checksum`, `archive` or `schema`. */
  level: string;
  backupId: string;
  reason?: string;
}

/** One drill of a database, from its JSON report. */
export interface DrillSummary {
  /** UTC, ISO 8601. */
  at: string;
  ok: boolean;
  /** Recovery time (wall time from the download's start to the checks' end, or restore + WAL replay), in ms. */
  rtoMs: number;
  /** The backup drilled, when the report names it. */
  backupId?: string;
  /** Why it failed. */
  reason?: string;
  /** The RTO budget the drill ran with (`--max-rto`), in ms, when the report records it. */
  maxRtoMs?: number;
  /** The recovery point the drill measured: the backup's age (logical) or the newest archived WAL's (physical) at drill start, in ms. */
  rpoMs?: number;
  /** The drill kind the report names (`physical`), if any. */
  kind?: string;
  /** The report's key relative to the location. */
  reportKey: string;
}

/** The status of one database (or physical stanza). Every name is user data: escape it before showing it. */
export interface DatabaseStatus {
  service: string;
  environment: string;
  /** The database name, or the stanza of a physical drill. */
  database: string;
  kind: DatabaseKind;
  state: DatabaseState;
  /** No complete backup newer than the max age (logical only). */
  stale: boolean;
  /** The newest drill failed. */
  drillFailed: boolean;
  /** Records stamped in the future or misdated: not counted anywhere, each a problem. */
  untrusted: UntrustedRecord[];
  /** Why the state is `failed`, `stale` or `untrusted`, one line each. */
  problems: string[];
  /** Why the state is (at least) `warning`, one line each. */
  warnings: string[];
  newest: NewestBackup | null;
  /** Size of the newest backup against the median of up to {@link SIZE_TREND_WINDOW} before it, in %; null with fewer than 2 backups. */
  sizeTrendPercent: number | null;
  /** Complete backups kept (manifest and dump object present), proven ones (newest evidence — verify record or drill — passed), and manifests whose dump object is missing. */
  backups: { complete: number; proven: number; missingObject: number };
  lastVerify: LastVerify | null;
  lastDrill: DrillSummary | null;
  /** RTO of the newest drill against the median of the drills before it, in %; null with fewer than 2 drills. */
  rtoTrendPercent: number | null;
  /** The RTO budget that applies: the newest drill report's `maxRtoMs`, else the `--rto-budget` option; null if neither. */
  rtoBudgetMs: number | null;
  /** Series for charts, oldest first: every complete backup's size, and the drills read. */
  history: { sizes: { at: string; sizeBytes: number }[]; drills: { at: string; ok: boolean; rtoMs: number }[] };
}

/**
 * The newest globals (roles, tablespaces: src/backup/globals.ts) of one service/environment.
 * Not a database: never counted in `counts`, never stale or failed; shown so a reader sees
 * whether a whole-server restore would bring the roles back, and with their passwords.
 */
export interface GlobalsStatus {
  service: string;
  environment: string;
  /** Complete globals objects kept (one per dump run that stored them). */
  count: number;
  newest: {
    id: string;
    /** UTC, ISO 8601, to the second. */
    startedAt: string;
    ageMs: number;
    /** The object's key relative to the location. */
    key: string;
    /** The run it belongs to, when its manifest could be read. */
    runId: string | null;
    /** Role password hashes included; null when the manifest could not be read. */
    rolePasswords: boolean | null;
    /** Roles and tablespaces it holds; null when the manifest could not be read. */
    roles: number | null;
    tablespaces: number | null;
  } | null;
}

/** The status of every database under a location. */
export interface FleetStatus {
  /** False when any database is stale, its last drill failed, or it holds a record stamped in the future or misdated (the CLI then exits 1). */
  ok: boolean;
  /** UTC, ISO 8601. */
  generatedAt: string;
  /** The location, e.g. `s3://bucket/prefix`. */
  from: string;
  maxAgeMs: number;
  /** The `--rto-budget` option, in ms, if given. */
  rtoBudgetMs: number | null;
  counts: { databases: number; ok: number; warning: number; untrusted: number; stale: number; failed: number };
  /** Sorted by service, environment, database. */
  databases: DatabaseStatus[];
  /** The newest globals of each service/environment that has any, sorted by service, environment. */
  globals?: GlobalsStatus[];
  /** Records that could not be read (skipped), one line each. */
  warnings: string[];
}

/** Options of {@link collectFleetStatus}. */
export interface FleetStatusOptions {
  filter?: BackupFilter;
  /** Default {@link DEFAULT_MAX_AGE_MS}. */
  maxAgeMs?: number;
  /** Budget for RTO when a drill report records none, in ms. */
  rtoBudgetMs?: number;
  /** Default {@link DEFAULT_DRILL_HISTORY}. */
  drillHistory?: number;
  /** A record stamped later than now + this is `future` (`--max-clock-skew`, in ms). Default {@link DEFAULT_MAX_CLOCK_SKEW_MS}. */
  maxClockSkewMs?: number;
  /** The clock (tests). */
  now?: Date;
  /** `--require-signed-drills`: only drill reports whose signed statement verifies count (src/evidence/check.ts). */
  drillTrust?: DrillTrust;
}

/**
 * The fields of a drill report the status reads; anything else in it is ignored, so reports of
 * other drill kinds (physical, other majors) count as long as they carry these.
 */
const DrillReportSchema = z.looseObject({
  startedAt: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not a date'),
  ok: z.boolean(),
  rtoMs: z.number().nonnegative().optional(),
  backupId: z.string().optional(),
  reason: z.string().optional(),
  maxRtoMs: z.number().positive().optional(),
  maxRto: z.string().optional(),
  budgets: z.looseObject({ maxRtoMs: z.number().positive().optional() }).optional(),
  /** `physical` for a pgBackRest (or other physical) drill. */
  kind: z.string().optional(),
  /** Age of the backup (logical) or of the newest archived WAL (physical) when the drill started, in ms. */
  rpoMs: z.number().nonnegative().optional(),
});

/** `drills/<service>/<environment>/<name>/<YYYY>-Q<n>/<backup id>-drill-<stamp>.json`. */
const DRILL_REPORT_KEY = new RegExp(String.raw`^drills\/([^/]+)\/([^/]+)\/([^/]+)\/\d{4}-Q[1-4]\/(.+)-drill-(${DRILL_STAMP})\.json$`);

/** A backup id of the dump layout: `<database>-<YYYYMMDDTHHMMSSZ>-<6 hex>`. */
const DUMP_BACKUP_ID = /-\d{8}T\d{6}Z-[0-9a-f]{6}$/;

interface Group {
  service: string;
  environment: string;
  database: string;
  backups: BackupEntry[];
  /** Drill report keys with their backup id and stamp, newest first. */
  reports: { key: string; backupId: string; stamp: string }[];
}

const groupKey = (g: { service: string; environment: string; database: string }) => JSON.stringify([g.service, g.environment, g.database]);

/**
 * Walks everything under `storage` and returns the status of every database: logical backups
 * from {@link listBackups}, drill reports of any kind from `drills/`. A record that cannot be
 * read or parsed is skipped and named in `warnings` (it is never a reason to fail the walk).
 * Needs List and Get.
 * @throws whatever the storage throws for the listing itself (no bucket, no permission).
 */
export async function collectFleetStatus(storage: Storage, options: FleetStatusOptions): Promise<FleetStatus> {
  const now = options.now ?? new Date();
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  const historyLimit = options.drillHistory ?? DEFAULT_DRILL_HISTORY;
  const filter = options.filter ?? {};
  const warnings: string[] = [];
  const warn = (message: string) => void warnings.push(message);

  const groups = new Map<string, Group>();
  const groupOf = (labels: { service: string; environment: string; database: string }) => {
    const key = groupKey(labels);
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { service: labels.service, environment: labels.environment, database: labels.database, backups: [], reports: [] }));
    return group;
  };
  const clock: ClockCheck = { now, maxSkewMs: options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS };
  const entries = await listBackups(storage, filter);
  await judgeNewest(storage, entries, clock);
  // A run's globals are no database: shown apart ({@link GlobalsStatus}).
  for (const entry of entries) if (!isGlobalsEntry(entry)) groupOf(entry).backups.push(entry);
  const globals = globalsStatus(entries.filter((e) => isGlobalsEntry(e)), now);

  const drillsPrefix = `${DRILLS_FOLDER}/${filterPrefix(filter)}`;
  for await (const obj of storage.list(drillsPrefix)) {
    const m = DRILL_REPORT_KEY.exec(obj.key);
    if (!m) continue;
    let labels: { service: string; environment: string; database: string };
    try {
      labels = { service: decodeSegment(m[1]!), environment: decodeSegment(m[2]!), database: decodeSegment(m[3]!) };
    } catch {
      warn(`ignoring the drill report ${storage.uri(obj.key)}: its folder names are not valid percent-encoding`);
      continue;
    }
    if ((filter.service && labels.service !== filter.service) || (filter.environment && labels.environment !== filter.environment) || (filter.database && labels.database !== filter.database)) continue;
    groupOf(labels).reports.push({ key: obj.key, backupId: m[4]!, stamp: m[5]! });
  }

  const databases = await mapLimit([...groups.values()], 4, (group) => databaseStatus(storage, group, { now, clock, maxAgeMs, rtoBudgetMs: options.rtoBudgetMs, historyLimit, warn, drillTrust: options.drillTrust }));
  databases.sort((a, b) => compareText(a.service, b.service) || compareText(a.environment, b.environment) || compareText(a.database, b.database));
  const counts = { databases: databases.length, ok: 0, warning: 0, untrusted: 0, stale: 0, failed: 0 };
  for (const d of databases) counts[d.state]++;
  return {
    ok: databases.every((d) => !d.stale && !d.drillFailed && d.untrusted.length === 0),
    generatedAt: now.toISOString(),
    from: storage.url,
    maxAgeMs,
    rtoBudgetMs: options.rtoBudgetMs ?? null,
    counts,
    databases,
    globals,
    warnings,
  };
}

/**
 * The newest believed globals of each service/environment, with what its manifest says (read by
 * `judgeNewest` already: no further Get).
 */
function globalsStatus(entries: BackupEntry[], now: Date): GlobalsStatus[] {
  const byScope = new Map<string, BackupEntry[]>();
  for (const e of entries) {
    const k = JSON.stringify([e.service, e.environment]);
    byScope.set(k, [...(byScope.get(k) ?? []), e]);
  }
  return [...byScope.values()]
    .map((group): GlobalsStatus => {
      const complete = group.filter((e) => isBelieved(e) && e.objectKey !== undefined);
      const newest = complete[0];
      const m = newest?.resolved?.manifest;
      return {
        service: group[0]!.service,
        environment: group[0]!.environment,
        count: complete.length,
        newest: newest
          ? {
              id: newest.id,
              startedAt: isoSecond(newest.startedAt),
              ageMs: Math.max(0, now.getTime() - newest.startedAt.getTime()),
              key: newest.objectKey!,
              runId: m?.run?.id ?? null,
              rolePasswords: m?.globals?.rolePasswords ?? null,
              roles: m?.globals ? m.globals.roles.length : null,
              tablespaces: m?.globals ? m.globals.tablespaces.length : null,
            }
          : null,
      };
    })
    .sort((a, b) => compareText(a.service, b.service) || compareText(a.environment, b.environment));
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The median of a non-empty list. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** `newest` against the median of `before`, in % rounded to 0.1; null when there is nothing to compare with. */
function trendPercent(newest: number | undefined, before: number[]): number | null {
  if (newest === undefined || before.length === 0) return null;
  const base = median(before);
  if (base <= 0) return null;
  return Math.round(((newest - base) / base) * 1000) / 10;
}

const isoSecond = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

async function databaseStatus(
  storage: Storage,
  group: Group,
  ctx: { now: Date; clock: ClockCheck; maxAgeMs: number; rtoBudgetMs: number | undefined; historyLimit: number; warn: (m: string) => void; drillTrust?: DrillTrust },
): Promise<DatabaseStatus> {
  const { now, maxAgeMs } = ctx;
  const untrusted: UntrustedRecord[] = [];
  const distrust = (kind: UntrustedRecord['kind'], key: string, t: TimeProblem) => void untrusted.push({ kind, key, time: t.time, problem: t.problem });
  // Backups whose time is not believed (judged by judgeNewest) count nowhere below.
  for (const b of group.backups) if (!isBelieved(b)) distrust('backup', b.manifestKey, b.time as TimeProblem);
  const believed = group.backups.filter(isBelieved);
  const complete = believed.filter((b) => b.objectKey !== undefined && b.sizeBytes !== undefined); // newest first
  const missingObject = believed.length - complete.length;
  const keptIds = new Set(group.backups.map((b) => b.id));

  // Verify records of the backups kept.
  const records = (
    await mapLimit(
      group.backups.filter((b) => b.verifyRecordKey),
      8,
      async (b): Promise<VerifyRecord | undefined> => {
        try {
          const record = VerifyRecordSchema.parse(JSON.parse(await storage.getText(b.verifyRecordKey!)));
          const t = judgeTimes(ctx.clock, { kind: 'verify record', at: record.verifiedAt });
          if (t) return void distrust('verify record', b.verifyRecordKey!, t);
          if (record.backupId === b.id) return record;
          ctx.warn(`ignoring the verify record ${storage.uri(b.verifyRecordKey!)}: it names another backup (${record.backupId})`);
        } catch (err) {
          ctx.warn(`ignoring the verify record ${storage.uri(b.verifyRecordKey!)}: ${messageOf(err).split('\n')[0]}`);
        }
        return undefined;
      },
    )
  ).filter((r): r is VerifyRecord => r !== undefined);

  // Drill reports: the newest ones (history) and every one of a backup kept (proof).
  group.reports.sort((a, b) => compareText(b.stamp, a.stamp) || compareText(b.key, a.key));
  const wanted = group.reports.filter((r, i) => i < ctx.historyLimit || keptIds.has(r.backupId));
  const drills = (
    await mapLimit(wanted, 8, async (r): Promise<DrillSummary | undefined> => {
      try {
        const text = await storage.getText(r.key);
        const report = DrillReportSchema.parse(JSON.parse(text));
        const t = judgeTimes(ctx.clock, { kind: 'drill report', keyStamp: parseKeyStamp(r.stamp), at: report.startedAt });
        if (t) return void distrust('drill report', r.key, t);
        if (ctx.drillTrust) {
          const signed = await signedDrillCounts(storage, r.key, text, group.backups.find((b) => b.id === r.backupId)?.manifestKey, ctx.drillTrust);
          if (!signed.counts) return void ctx.warn(signed.warning!);
        }
        let maxRtoMs = report.maxRtoMs ?? report.budgets?.maxRtoMs;
        if (maxRtoMs === undefined && report.maxRto) {
          try {
            maxRtoMs = parseDuration(report.maxRto, 'maxRto');
          } catch {
            /* a budget we cannot read is no budget */
          }
        }
        return {
          at: new Date(report.startedAt).toISOString(),
          ok: report.ok,
          rtoMs: Math.round(report.rtoMs ?? 0),
          backupId: report.backupId ?? (r.backupId === 'unknown' ? undefined : r.backupId),
          reason: report.ok ? undefined : report.reason,
          maxRtoMs,
          ...(report.rpoMs !== undefined ? { rpoMs: Math.round(report.rpoMs) } : {}),
          ...(report.kind ? { kind: report.kind } : {}),
          reportKey: r.key,
        };
      } catch (err) {
        const message = err instanceof z.ZodError ? `${err.issues[0]!.path.join('.') || '(root)'}: ${err.issues[0]!.message}` : messageOf(err).split('\n')[0];
        ctx.warn(`ignoring the drill report ${storage.uri(r.key)}: ${message}`);
        return undefined;
      }
    })
  ).filter((d): d is DrillSummary => d !== undefined);
  drills.sort((a, b) => compareText(b.at, a.at)); // newest first

  // Proof per backup: its newest evidence passed (the rule prune's --keep-proven uses).
  const evidence = new Map<string, { at: string; ok: boolean }>();
  const consider = (id: string | undefined, at: string, ok: boolean) => {
    if (!id) return;
    const prev = evidence.get(id);
    if (!prev || at > prev.at) evidence.set(id, { at, ok });
  };
  for (const r of records) consider(r.backupId, new Date(r.verifiedAt).toISOString(), r.ok);
  for (const d of drills) consider(d.backupId, d.at, d.ok);
  const proven = complete.filter((b) => evidence.get(b.id)?.ok === true).length;

  const newestEntry = complete[0];
  const newest: NewestBackup | null = newestEntry
    ? {
        id: newestEntry.id,
        startedAt: isoSecond(newestEntry.startedAt),
        ageMs: Math.max(0, now.getTime() - newestEntry.startedAt.getTime()),
        sizeBytes: newestEntry.sizeBytes!,
        key: newestEntry.objectKey!,
      }
    : null;
  // No dumps here: physical when a report says so, or when none names a dump's backup id (a pgBackRest label such as 20261201-040000F).
  const kind: DatabaseKind =
    group.backups.length > 0 || (!drills.some((d) => d.kind === 'physical') && drills.some((d) => d.backupId && DUMP_BACKUP_ID.test(d.backupId))) ? 'logical' : 'physical';

  const lastRecord = [...records].sort((a, b) => compareText(new Date(b.verifiedAt).toISOString(), new Date(a.verifiedAt).toISOString()))[0];
  const lastVerify: LastVerify | null = lastRecord
    ? { at: new Date(lastRecord.verifiedAt).toISOString(), ok: lastRecord.ok, level: lastRecord.level, backupId: lastRecord.backupId, ...(lastRecord.reason ? { reason: lastRecord.reason } : {}) }
    : null;
  const lastDrill = drills[0] ?? null;
  const rtoBudgetMs = lastDrill?.maxRtoMs ?? ctx.rtoBudgetMs ?? null;

  const problems: string[] = [];
  const warnings: string[] = [];
  const stale = kind === 'logical' && (!newest || newest.ageMs > maxAgeMs);
  if (stale) {
    problems.push(
      newest
        ? `stale: the newest complete backup is ${formatSeconds(newest.ageMs)} old (max ${formatSeconds(maxAgeMs)})`
        : `stale: no complete backup${missingObject ? ` (${missingObject} manifest${missingObject > 1 ? 's' : ''} without a dump object)` : ''}`,
    );
  }
  const drillFailed = lastDrill !== null && !lastDrill.ok;
  if (drillFailed) problems.push(`last drill failed (${lastDrill.at}): ${lastDrill.reason ?? 'no reason recorded'}`);
  if (lastVerify && !lastVerify.ok) warnings.push(`last verify failed (${lastVerify.at}, ${lastVerify.level}): ${lastVerify.reason ?? 'no reason recorded'}`);
  for (const u of untrusted) problems.push(`${u.time === 'future' ? 'FUTURE' : 'MISDATED'} ${u.kind} ${storage.uri(u.key)}: ${u.problem}`);
  if (group.backups.length === 0 && drills.length === 0 && untrusted.length === 0) warnings.push('no readable drill report (see the records skipped)');
  if (missingObject) warnings.push(`${missingObject} manifest${missingObject > 1 ? 's have' : ' has'} no dump object: damaged or deleted by hand`);
  const sizeTrendPercent = trendPercent(newestEntry?.sizeBytes, complete.slice(1, 1 + SIZE_TREND_WINDOW).map((b) => b.sizeBytes!));
  if (sizeTrendPercent !== null && sizeTrendPercent <= SIZE_DROP_WARNING_PERCENT) warnings.push(`the newest backup is ${-sizeTrendPercent}% smaller than the ones before it`);
  if (lastDrill?.ok && rtoBudgetMs !== null && lastDrill.rtoMs > rtoBudgetMs) warnings.push(`last drill's RTO ${formatSeconds(lastDrill.rtoMs)} is over the budget ${formatSeconds(rtoBudgetMs)}`);
  const okDrillsBefore = drills.slice(1).filter((d) => d.ok).map((d) => d.rtoMs);
  const rtoTrendPercent = lastDrill?.ok ? trendPercent(lastDrill.rtoMs, okDrillsBefore.slice(0, 5)) : null;

  const state: DatabaseState = drillFailed ? 'failed' : stale ? 'stale' : untrusted.length ? 'untrusted' : warnings.length ? 'warning' : 'ok';
  return {
    service: group.service,
    environment: group.environment,
    database: group.database,
    kind,
    state,
    stale,
    drillFailed,
    untrusted,
    problems,
    warnings,
    newest,
    sizeTrendPercent,
    backups: { complete: complete.length, proven, missingObject },
    lastVerify,
    lastDrill,
    rtoTrendPercent,
    rtoBudgetMs,
    history: {
      sizes: [...complete].reverse().map((b) => ({ at: isoSecond(b.startedAt), sizeBytes: b.sizeBytes! })),
      drills: [...drills].reverse().slice(-ctx.historyLimit).map((d) => ({ at: d.at, ok: d.ok, rtoMs: d.rtoMs })),
    },
  };
}
