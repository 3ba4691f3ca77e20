import { z } from 'zod';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Storage } from '../storage/index.ts';
import { clockCheck, judgeTimes, parseKeyStamp, type ClockCheck } from './clock.ts';
import { DRILL_STAMP, DRILLS_FOLDER, encodeSegment } from './keys.ts';
import { signedDrillCounts, type DrillTrust } from '../evidence/check.ts';

/**
 * Proof that a backup restores: a drill report (`drills/<svc>/<env>/<db>/<YYYY>-Q<n>/<id>-drill-
 * <stamp>.json`, written by every drill) or a verify record (`<id>.verify.json` beside the
 * backup, written by `verify --record`). A prune never deletes the newest proven backups.
 */

/** Suffix of the verify record beside a backup: `<stem>.verify.json`. */
export const VERIFY_RECORD_SUFFIX = '.verify.json';

/** The key of the verify record of the backup whose manifest is `manifestKey`. */
export function verifyRecordKey(manifestKey: string): string {
  return `${manifestKey.slice(0, -'.manifest.json'.length)}${VERIFY_RECORD_SUFFIX}`;
}

/**
 * The verify record, schema version 1: the verdict of the latest `verify --record` run of one
 * backup (each run overwrites it, so a backup that fails later is no longer proven).
 */
export const VerifyRecordSchema = z.object({
  recordVersion: z.literal(1),
  tool: z.object({ name: z.string(), version: z.string() }),
  backupId: z.string().min(1),
  /** `checksum`, `archive` or `schema` (level `none` is never recorded: it proves nothing). */
  level: z.string(),
  ok: z.boolean(),
  reason: z.string().optional(),
  sha256: z.string().optional(),
  /** UTC, ISO 8601. */
  verifiedAt: z.iso.datetime(),
  durationMs: z.number().int().nonnegative(),
});

/** A parsed verify record. */
export type VerifyRecord = z.infer<typeof VerifyRecordSchema>;

/** One piece of evidence about a backup: a verify record or a drill report. */
interface Evidence {
  at: string;
  ok: boolean;
  what: string;
}

/**
 * Finds which of one group's backups are proven, newest first, stopping after `limit` proven
 * ones (so a prune reads only what it needs). A backup is proven when its newest evidence — the
 * verify record or a drill report, whichever is later — passed. Unreadable evidence is skipped
 * with a warning, and so is evidence whose time is not believed ({@link judgeTimes}: a drill
 * report or verify record stamped later than `clock` allows, or a drill report whose key stamp
 * and `startedAt` disagree): a record stamped ahead would otherwise be the newest evidence for
 * ever and hide every real failure after it. With `drillTrust` (`--require-signed-drills`), a drill report counts only when its signed
 * statement verifies (src/evidence/check.ts); one that does not is named in a warning. Needs List
 * and Get.
 * @param clock now and the tolerance (`--max-clock-skew`); default this machine's clock, 10 min.
 * @returns backup id → proof text (e.g. `drill OK 2026-11-20T03:00:00Z`), for the proven ones.
 */
export async function findProofs(
  storage: Storage,
  group: { service: string; environment: string; database: string },
  backups: { id: string; keys: string[] }[],
  limit: number,
  logger: Logger,
  clock: ClockCheck = clockCheck(),
  drillTrust?: DrillTrust,
): Promise<Map<string, string>> {
  const proofs = new Map<string, string>();
  if (limit <= 0 || backups.length === 0) return proofs;
  const folder = `${DRILLS_FOLDER}/${encodeSegment(group.service)}/${encodeSegment(group.environment)}/${encodeSegment(group.database)}/`;
  const drillReports = new Map<string, { key: string; stamp: Date | undefined }[]>();
  const reportKey = new RegExp(String.raw`\/([^/]+)-drill-(${DRILL_STAMP})\.json$`);
  for await (const obj of storage.list(folder)) {
    const m = reportKey.exec(obj.key);
    if (m) drillReports.set(m[1]!, [...(drillReports.get(m[1]!) ?? []), { key: obj.key, stamp: parseKeyStamp(m[2]!) }]);
  }
  for (const backup of backups) {
    if (proofs.size >= limit) break;
    const evidence: Evidence[] = [];
    const recordKey = backup.keys.find((k) => k.endsWith(VERIFY_RECORD_SUFFIX));
    if (recordKey) {
      try {
        const record = VerifyRecordSchema.parse(JSON.parse(await storage.getText(recordKey)));
        const untrusted = judgeTimes(clock, { kind: 'verify record', at: record.verifiedAt });
        if (untrusted) logger.warn(`ignoring the verify record ${storage.uri(recordKey)}: ${untrusted.problem}`);
        else if (record.backupId === backup.id) evidence.push({ at: record.verifiedAt, ok: record.ok, what: `verify (${record.level}) ${record.ok ? 'OK' : 'FAILED'} ${record.verifiedAt}` });
      } catch (err) {
        logger.warn(`ignoring the verify record ${storage.uri(recordKey)}: ${messageOf(err)}`);
      }
    }
    for (const { key, stamp } of drillReports.get(backup.id) ?? []) {
      try {
        const text = await storage.getText(key);
        const report = JSON.parse(text) as { ok?: unknown; backupId?: unknown; startedAt?: unknown };
        if (report.backupId !== backup.id || typeof report.startedAt !== 'string' || typeof report.ok !== 'boolean') continue;
        const untrusted = judgeTimes(clock, { kind: 'drill report', keyStamp: stamp, at: report.startedAt });
        if (untrusted) {
          logger.warn(`ignoring the drill report ${storage.uri(key)}: ${untrusted.problem}`);
          continue;
        }
        if (drillTrust) {
          const signed = await signedDrillCounts(storage, key, text, backup.keys.find((k) => k.endsWith('.manifest.json')), drillTrust);
          if (!signed.counts) {
            logger.warn(signed.warning!);
            continue;
          }
        }
        evidence.push({ at: new Date(report.startedAt).toISOString(), ok: report.ok, what: `drill ${report.ok ? 'OK' : 'FAILED'} ${report.startedAt}` });
      } catch (err) {
        logger.warn(`ignoring the drill report ${storage.uri(key)}: ${messageOf(err)}`);
      }
    }
    const latest = evidence.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0))[0];
    if (latest?.ok) proofs.set(backup.id, latest.what);
  }
  return proofs;
}
