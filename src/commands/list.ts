import { listBackups, type BackupEntry, type BackupFilter } from '../backup/catalog.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';

/** Options of {@link list}. */
export interface ListOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  filter?: BackupFilter;
  s3?: S3Settings;
}

/** One complete backup in a listing. */
export interface ListedBackup {
  service: string;
  environment: string;
  database: string;
  id: string;
  /** UTC, ISO 8601, to the second. */
  startedAt: string;
  /** The dump object's key relative to `from` (what `--backup` takes). */
  key: string;
  uri: string;
  manifestKey: string;
  /** Stored size in bytes, if the dump object is present. */
  sizeBytes: number | undefined;
}

/**
 * Lists complete backups (manifest present), newest first, paginating through the bucket.
 * Needs List permission only.
 */
export async function list(options: ListOptions): Promise<ListedBackup[]> {
  const storage = openStorage(options.from, options.s3);
  const entries: BackupEntry[] = await listBackups(storage, options.filter);
  return entries.map((e) => ({
    service: e.service,
    environment: e.environment,
    database: e.database,
    id: e.id,
    startedAt: e.startedAt.toISOString().replace('.000Z', 'Z'),
    key: e.objectKey ?? e.manifestKey,
    uri: storage.uri(e.objectKey ?? e.manifestKey),
    manifestKey: e.manifestKey,
    sizeBytes: e.sizeBytes,
  }));
}
