import { randomBytes } from 'node:crypto';
import { encodeSegment } from '../backup/keys.ts';
import type { Storage } from '../storage/index.ts';

/**
 * The key a dump's write check uses: `<service>/<environment>/.write-check-<12 hex>`, beside the
 * databases' folders. It matches no backup, manifest or drill key (the catalog, prune and
 * status ignore it), and with S3 no object is ever created under it (see {@link checkWritable}).
 */
export function writeCheckKey(labels: { service: string; environment: string }): string {
  return `${encodeSegment(labels.service)}/${encodeSegment(labels.environment)}/.write-check-${randomBytes(6).toString('hex')}`;
}

/**
 * Checks that a dump can write into `storage` before anything is dumped, so an unknown bucket,
 * rejected credentials or a denied write end the run in one line before the first "dumping …"
 * line (and before pg_dump starts). With S3 it is the cheapest request a write-only credential
 * may make and that leaves nothing: CreateMultipartUpload under {@link writeCheckKey}, then
 * AbortMultipartUpload of that empty upload (`Storage.probeWrite`). A storage without the check
 * passes. `signal` (SIGINT/SIGTERM) cancels it.
 * @throws `signal.reason` when cancelled.
 * @throws UsageError naming the fix (bucket, credentials, permission, endpoint).
 */
export async function checkWritable(storage: Storage, labels: { service: string; environment: string }, signal?: AbortSignal): Promise<void> {
  await storage.probeWrite?.(writeCheckKey(labels), signal);
}
