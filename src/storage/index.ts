import { registerSecret } from '../errors.ts';
import { FileStorage } from './file/file.ts';
import { parseLocation } from './location.ts';
import type { S3Settings } from './s3/config.ts';
import { LazyS3Storage } from './s3/lazy.ts';
import type { Storage } from './storage.ts';

export type { GetOptions, PutOptions, ServerTime, ServerTimeOptions, Storage, StoredObject, UploadOptions, UploadResult } from './storage.ts';
export { DEFAULT_READ_CONCURRENCY, DEFAULT_READ_RANGE_BYTES, NotFoundError, OverwriteError, joinKey } from './storage.ts';
export type { S3Settings, ServerSideEncryption, ObjectLockSettings } from './s3/config.ts';

/**
 * Opens the storage a location URL names: `s3://BUCKET/PREFIX` (S3 or any S3-compatible store,
 * configured by `settings` and the AWS env vars; the driver and the AWS SDK are loaded at its first
 * request: src/storage/s3/lazy.ts) or `file:///DIR`. Registers the S3 secret key,
 * session token and SSE-C key (from `settings` and `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`)
 * as secrets first, so no message can show them.
 * @throws UsageError for a malformed URL or endpoint.
 */
export function openStorage(url: string, settings: S3Settings = {}): Storage {
  for (const secret of [settings.credentials?.secretAccessKey, settings.credentials?.sessionToken, settings.sse?.type === 'sse-c' ? settings.sse.key : undefined, process.env.AWS_SECRET_ACCESS_KEY, process.env.AWS_SESSION_TOKEN]) {
    registerSecret(secret);
  }
  const location = parseLocation(url);
  return location.driver === 's3' ? new LazyS3Storage(location.bucket, location.prefix, settings) : new FileStorage(location.root);
}

/**
 * Checks that a location a command reads from exists: for `file://`, that the directory is
 * there (a listing of a missing directory would otherwise look like an empty location). S3
 * locations are checked by their first request (an unknown bucket is a usage error there).
 * `dump` does not call it: it creates its directory.
 * @throws UsageError naming the location when it does not exist or is not a directory.
 */
export async function checkLocation(storage: Storage): Promise<void> {
  if (storage instanceof FileStorage) await storage.checkRoot();
}
