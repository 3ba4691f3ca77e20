import { parseDuration } from '../duration.ts';
import { formatSeconds } from '../format.ts';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';

/** Options of {@link walFreshness}. */
export interface WalFreshnessOptions {
  /** The WAL archive: `s3://BUCKET/PREFIX` or `file:///DIR` (pgBackRest's `archive/<stanza>/`, WAL-G's `wal_005/`, a raw segment archive). */
  prefix: string;
  /** Fail when the newest object under the prefix is older than this (`15m`, `1h`). */
  maxAge: string;
  s3?: S3Settings;
  logger: Logger;
  now?: () => Date;
}

/** The verdict of {@link walFreshness}. */
export interface WalFreshnessResult {
  ok: boolean;
  reason?: string;
  problems: string[];
  prefix: string;
  /** Objects listed under the prefix. */
  objects: number;
  /** The newest object (by modification time) and its age at the check, in ms. */
  newestUri?: string;
  newestAt?: string;
  /** The same moment as `newestAt`, under the name the metrics read (`pg_backup_wal_last_archived_timestamp_seconds`, src/notify/report.ts). */
  walLastArchivedAt?: string;
  newestAgeMs?: number;
  durationMs: number;
}

/**
 * The RPO alarm for continuous archiving: lists every object under a WAL archive prefix and
 * fails when the newest one (by its modification time) is older than `maxAge`, or when there is
 * none. With `archive_timeout` set, PostgreSQL archives a segment at least that often while
 * anything is written, so a stale archive means archiving stopped (a failing `archive_command`
 * piles WAL up on the primary) — data written since is not recoverable. Needs List only.
 * Source: PostgreSQL docs, "Continuous Archiving and Point-in-Time Recovery" (archive_timeout).
 * @throws UsageError for a bad prefix or duration, or storage that cannot be listed.
 */
export async function walFreshness(options: WalFreshnessOptions): Promise<WalFreshnessResult> {
  const maxAgeMs = parseDuration(options.maxAge, '--max-age');
  const now = options.now ?? (() => new Date());
  const started = Date.now();
  const storage = openStorage(options.prefix, options.s3);
  const result: WalFreshnessResult = { ok: false, problems: [], prefix: storage.url, objects: 0, durationMs: 0 };
  let newest: { key: string; at: Date } | undefined;
  for await (const obj of storage.list('')) {
    result.objects++;
    if (!newest || obj.lastModified > newest.at) newest = { key: obj.key, at: obj.lastModified };
  }
  const at = now();
  if (!newest) {
    result.problems.push(`no WAL under ${storage.url}: archiving has never reached it (check archive_command and the prefix)`);
  } else {
    result.newestUri = storage.uri(newest.key);
    result.newestAt = newest.at.toISOString();
    result.walLastArchivedAt = result.newestAt;
    result.newestAgeMs = Math.max(0, at.getTime() - newest.at.getTime());
    options.logger.info(`WAL archive ${storage.url}: ${result.objects} object(s), newest ${result.newestUri} written ${result.newestAt} (${formatSeconds(result.newestAgeMs)} ago)`);
    if (result.newestAgeMs > maxAgeMs) {
      result.problems.push(`the newest WAL under ${storage.url} is ${formatSeconds(result.newestAgeMs)} old, older than --max-age ${options.maxAge}: WAL archiving has stopped or stalls (check archive_command / pg_stat_archiver on the primary)`);
    }
  }
  result.durationMs = Date.now() - started;
  result.ok = result.problems.length === 0;
  result.reason = result.problems[0];
  return result;
}

/** @throws UsageError unless exactly one of a backup location and a WAL prefix is given. */
export function checkVerifyScope(from: string | undefined, walPrefix: string | undefined, names: { from: string; walPrefix: string; maxAge: string }, maxAge: string | undefined): void {
  if (from && walPrefix) throw new UsageError(`give ${names.from} (backups) or ${names.walPrefix} (a WAL archive), not both: run verify once for each`);
  if (!from && !walPrefix) throw new UsageError(`${names.from} is required (s3://BUCKET/PREFIX or file:///DIR), or give ${names.walPrefix} with ${names.maxAge} to check a WAL archive's freshness`);
  if (walPrefix && !maxAge) throw new UsageError(`${names.walPrefix} needs ${names.maxAge}, e.g. ${names.maxAge} 15m: the age the newest WAL segment may reach`);
}
