import { CheckFailedError, UsageError } from '../errors.ts';
import { NotFoundError, type Storage } from '../storage/index.ts';
import { encodeSegment, parseManifestKey, type ParsedManifestKey } from './keys.ts';
import { parseManifest, type Manifest } from './manifest.ts';
import { VERIFY_RECORD_SUFFIX } from './proof.ts';

/** Narrows a listing to one service, environment and/or database. */
export interface BackupFilter {
  service?: string;
  environment?: string;
  database?: string;
}

/** A complete backup (its manifest exists) as a listing shows it. */
export interface BackupEntry extends ParsedManifestKey {
  /** The dump object's key, if the listing holds it. */
  objectKey: string | undefined;
  /** The dump object's stored size in bytes, if the listing holds it. */
  sizeBytes: number | undefined;
  /** The key of the backup's verify record (`<stem>.verify.json`, see proof.ts), if the listing holds one. */
  verifyRecordKey?: string | undefined;
}

/**
 * Lists complete backups — those whose manifest exists — newest first, reading the bucket
 * page by page (1 000 keys a request). Objects without a manifest (a dump that failed or is
 * still uploading) are skipped. Needs List permission only; manifests are not read.
 */
export async function listBackups(storage: Storage, filter: BackupFilter = {}): Promise<BackupEntry[]> {
  let prefix = '';
  if (filter.service) {
    prefix = `${encodeSegment(filter.service)}/`;
    if (filter.environment) {
      prefix += `${encodeSegment(filter.environment)}/`;
      if (filter.database) prefix += `${encodeSegment(filter.database)}/`;
    }
  }
  const manifests: ParsedManifestKey[] = [];
  const objects = new Map<string, { key: string; sizeBytes: number }>();
  const verifyRecords = new Set<string>();
  for await (const obj of storage.list(prefix)) {
    const parsed = parseManifestKey(obj.key);
    if (parsed) {
      if (
        (!filter.service || parsed.service === filter.service) &&
        (!filter.environment || parsed.environment === filter.environment) &&
        (!filter.database || parsed.database === filter.database)
      ) {
        manifests.push(parsed);
      }
      continue;
    }
    if (obj.key.endsWith(VERIFY_RECORD_SUFFIX)) verifyRecords.add(obj.key.slice(0, -VERIFY_RECORD_SUFFIX.length));
    const dump = /^(.*)\.(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?$/.exec(obj.key);
    if (dump) objects.set(dump[1]!, { key: obj.key, sizeBytes: obj.sizeBytes });
    const dirFile = /^(.*)\.dir\/[^/]+$/.exec(obj.key);
    if (dirFile) {
      const prev = objects.get(dirFile[1]!);
      objects.set(dirFile[1]!, { key: `${dirFile[1]}.dir`, sizeBytes: (prev?.sizeBytes ?? 0) + obj.sizeBytes });
    }
  }
  return manifests
    .map((m) => {
      const object = objects.get(m.stem);
      return { ...m, objectKey: object?.key, sizeBytes: object?.sizeBytes, verifyRecordKey: verifyRecords.has(m.stem) ? `${m.stem}${VERIFY_RECORD_SUFFIX}` : undefined };
    })
    .sort((a, b) => b.startedAt.getTime() - a.startedAt.getTime() || (a.manifestKey < b.manifestKey ? 1 : -1));
}

/** A backup chosen for verify, drill or restore, with its manifest read and validated. */
export interface ResolvedBackup {
  manifestKey: string;
  objectKey: string;
  manifest: Manifest;
}

/**
 * Finds a backup by reference: `latest` (the newest complete backup matching the filter), a
 * manifest key, a dump object key, or the full URI of either under this storage location.
 * `listing` (the result of {@link listBackups} with the same filter) saves a second listing.
 * @throws UsageError when no backup matches the reference.
 * @throws CheckFailedError when the manifest is missing, unreadable or invalid.
 */
export async function resolveBackup(storage: Storage, ref: string | undefined, filter: BackupFilter = {}, listing?: BackupEntry[]): Promise<ResolvedBackup> {
  const wanted = (ref ?? 'latest').trim() || 'latest';
  let manifestKey: string;
  if (wanted === 'latest') {
    const [newest] = listing ?? (await listBackups(storage, filter));
    if (!newest) {
      const scope = [filter.service, filter.environment, filter.database].filter(Boolean).join('/');
      throw new UsageError(`no complete backup found under ${storage.url}${scope ? ` for ${scope}` : ''}: run a dump first or check --from`);
    }
    manifestKey = newest.manifestKey;
  } else {
    let key = wanted;
    if (/^[a-z0-9]+:\/\//.test(key)) key = storage.keyOf(key) ?? key;
    if (/^[a-z0-9]+:\/\//.test(key)) throw new UsageError(`backup ${wanted} is not under ${storage.url}: give a key relative to --from, or "latest"`);
    manifestKey = key.endsWith('.manifest.json') ? key : key.replace(/\.(?:(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?|dir\/?)$/, '') + '.manifest.json';
    if (!parseManifestKey(manifestKey)) throw new UsageError(`${JSON.stringify(wanted)} is not a backup key: use a key printed by "pg-backup list", or "latest"`);
  }
  let text: string;
  try {
    text = await storage.getText(manifestKey);
  } catch (err) {
    if (err instanceof NotFoundError) throw new CheckFailedError(`manifest ${storage.uri(manifestKey)} is missing: the backup is incomplete (its dump failed or is still running)`);
    throw err;
  }
  const manifest = parseManifest(text, manifestKey);
  const dir = manifestKey.slice(0, manifestKey.lastIndexOf('/') + 1);
  const expectedId = manifestKey.slice(dir.length, -'.manifest.json'.length);
  if (manifest.id !== expectedId || !manifest.object.name.startsWith(`${expectedId}.`)) {
    throw new CheckFailedError(`manifest ${manifestKey} belongs to another backup (${manifest.id}): it was copied or overwritten`);
  }
  return { manifestKey, objectKey: dir + manifest.object.name, manifest };
}
