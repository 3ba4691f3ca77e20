import { GetBucketLifecycleConfigurationCommand, PutBucketLifecycleConfigurationCommand, type LifecycleRule } from '@aws-sdk/client-s3';
import type { BackupFilter } from '../backup/catalog.ts';
import { parseDuration } from '../duration.ts';
import { encodeSegment } from '../backup/keys.ts';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { parseLocation } from '../storage/location.ts';
import { S3Storage, mapS3Error, type S3Settings } from '../storage/s3/s3.ts';
import { parseCount } from './prune.ts';

/** Options of {@link lifecycle}. */
export interface LifecycleOptions {
  /** `s3://BUCKET/PREFIX` (lifecycle rules are an S3 feature; `file://` is refused). */
  to: string;
  /** Narrow the rule's prefix to one service (and environment, database). */
  filter?: BackupFilter;
  /** Objects under the prefix expire this long after they were written (`30d`; rounded up to whole days). */
  maxAge: string;
  /** Versioned buckets: noncurrent versions are removed this many days after they become noncurrent. Default 7. */
  noncurrentDays?: number | string;
  /** Incomplete multipart uploads are aborted this many days after they started. Default 7. */
  abortMultipartDays?: number | string;
  /** Put the rule with PutBucketLifecycleConfiguration. Default false: only build it. */
  apply?: boolean;
  s3?: S3Settings;
  logger: Logger;
}

/** An S3 lifecycle configuration, in the JSON shape of the S3 API (`aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration file://…`). */
export interface LifecycleConfiguration {
  Rules: LifecycleRule[];
}

/** What {@link lifecycle} built and, with `apply`, what the bucket holds afterwards. */
export interface LifecycleResult {
  bucket: string;
  /** Our rule alone. */
  configuration: LifecycleConfiguration;
  applied: boolean;
  /** With `apply`: the bucket's whole configuration read back after the put (GetBucketLifecycleConfiguration). */
  readBack?: LifecycleConfiguration;
  /** With `apply`: how many rules of others (other IDs) were kept. */
  otherRules?: number;
}

/** Rule IDs this tool owns start with this. */
export const RULE_ID_PREFIX = 'pg-backup-retention';

/**
 * The lifecycle rule matching a prune's `--max-age` for stores that enforce retention themselves:
 * `Expiration.Days` (objects under `prefix` older than that many days are deleted),
 * `NoncurrentVersionExpiration.NoncurrentDays` (versioned buckets: superseded and deleted
 * versions go after that many days) and `AbortIncompleteMultipartUpload.DaysAfterInitiation`.
 * Source: AWS S3 User Guide, "Lifecycle configuration elements". Unlike prune, a lifecycle rule
 * cannot keep the newest proven backup nor stop when the dumps fail.
 */
export function lifecycleRule(prefix: string, days: { expiration: number; noncurrent: number; abortMultipart: number }): LifecycleRule {
  return {
    ID: `${RULE_ID_PREFIX} ${prefix || '(whole bucket)'}`.slice(0, 255),
    Status: 'Enabled',
    Filter: { Prefix: prefix },
    Expiration: { Days: days.expiration },
    NoncurrentVersionExpiration: { NoncurrentDays: days.noncurrent },
    AbortIncompleteMultipartUpload: { DaysAfterInitiation: days.abortMultipart },
  };
}

/**
 * Builds (and with `apply`, puts) the bucket lifecycle rule for a location: one rule whose ID
 * names its prefix. Applying reads the bucket's configuration first and keeps every rule with
 * another ID, since PutBucketLifecycleConfiguration replaces the whole configuration; then reads
 * it back. Needs s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration.
 * @throws UsageError for a `file://` location, bad options, or missing permissions.
 */
export async function lifecycle(options: LifecycleOptions): Promise<LifecycleResult> {
  const location = parseLocation(options.to);
  if (location.driver !== 's3') throw new UsageError('lifecycle rules are an S3 feature: give an s3://BUCKET/PREFIX location (for file:// use pg-backup prune)');
  const day = 86_400_000;
  const expiration = Math.max(1, Math.ceil(parseDuration(options.maxAge, '--max-age') / day));
  const noncurrent = parseCount(options.noncurrentDays, '--noncurrent-days') ?? 7;
  const abortMultipart = parseCount(options.abortMultipartDays, '--abort-multipart-days') ?? 7;
  if (noncurrent < 1 || abortMultipart < 1) throw new UsageError('--noncurrent-days and --abort-multipart-days must be 1 or more');
  const f = options.filter ?? {};
  const scope = [f.service, f.service && f.environment, f.service && f.environment && f.database].filter((s): s is string => Boolean(s)).map(encodeSegment);
  const prefix = [location.prefix, ...scope].filter(Boolean).join('/');
  const rule = lifecycleRule(prefix ? `${prefix}/` : '', { expiration, noncurrent, abortMultipart });
  const result: LifecycleResult = { bucket: location.bucket, configuration: { Rules: [rule] }, applied: false };
  if (!options.apply) return result;

  const { client } = new S3Storage(location.bucket, location.prefix, options.s3);
  const uri = `s3://${location.bucket}`;
  try {
    const current = await readRules(client, location.bucket);
    const others = current.filter((r) => r.ID !== rule.ID);
    await client.send(new PutBucketLifecycleConfigurationCommand({ Bucket: location.bucket, LifecycleConfiguration: { Rules: [...others, rule] } }));
    result.applied = true;
    result.otherRules = others.length;
    result.readBack = { Rules: await readRules(client, location.bucket) };
    options.logger.info(`lifecycle rule "${rule.ID}" put on ${uri}: expire after ${expiration} d, noncurrent versions after ${noncurrent} d, incomplete multipart uploads after ${abortMultipart} d${others.length ? `; ${others.length} other rule(s) kept` : ''}`);
  } catch (err) {
    const mapped = mapS3Error(err, uri, 'write');
    if (mapped instanceof UsageError && /access denied/.test(mapped.message)) {
      throw new UsageError(`access denied to the lifecycle configuration of ${uri}: the credentials need s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration`);
    }
    throw mapped;
  } finally {
    client.destroy();
  }
  return result;
}

/** The bucket's lifecycle rules; none when it has no configuration (NoSuchLifecycleConfiguration). */
async function readRules(client: S3Storage['client'], bucket: string): Promise<LifecycleRule[]> {
  try {
    return (await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket }))).Rules ?? [];
  } catch (err) {
    if ((err as Error).name === 'NoSuchLifecycleConfiguration') return [];
    throw err;
  }
}
