import { compressionSuffix, type CompressionSpec } from './compression.ts';
import { AGE_SUFFIX } from './encryption.ts';
import type { Manifest } from './manifest.ts';

/** One stored object of a backup and what the manifest says of it. */
export interface StoredPart {
  key: string;
  compression: CompressionSpec;
  sizeBytes: number;
  sha256: string;
  /** For a directory archive: the file's name, used in messages and as the local file name. */
  label?: string;
  /** Encrypted on the client with age (decrypted before decompression). */
  encrypted?: boolean;
}

/**
 * The stored objects of a backup: the one dump object, or each file of a directory archive
 * (stored as `<id>.dir/<file><compression suffix>`).
 */
export function storedParts(backup: { manifest: Manifest; objectKey: string }): StoredPart[] {
  const m = backup.manifest;
  const encrypted = m.encryption?.scheme === 'age';
  if (m.format !== 'directory') return [{ key: backup.objectKey, compression: m.compression, sizeBytes: m.object.sizeBytes, sha256: m.object.sha256, encrypted }];
  const suffix = `${compressionSuffix(m.compression)}${encrypted ? AGE_SUFFIX : ''}`;
  return (m.files ?? []).map((f) => ({ key: `${backup.objectKey}/${f.name}${suffix}`, compression: m.compression, sizeBytes: f.sizeBytes, sha256: f.sha256, label: f.name, encrypted }));
}

/**
 * A backup's archive size from a listing, in bytes: the stored size of its dump object
 * (`<stem>.dump[.zst|.gz][.age]`, `<stem>.sql…`), or the sum of its directory archive's files
 * (`<stem>.dir/…`); the manifest, sidecars and verify record are not counted. This is the size
 * every output shows for a backup (`list`, `prune`, `status`; the manifest's `object.sizeBytes`).
 * `objects` maps key → stored size. Undefined when the listing holds no archive object.
 */
export function archiveBytes(stem: string, objects: Iterable<[string, number]>): number | undefined {
  let total: number | undefined;
  for (const [key, size] of objects) {
    if (!key.startsWith(`${stem}.`)) continue;
    const rest = key.slice(stem.length);
    if (/^\.(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?$/.test(rest) || /^\.dir\/[^/]+$/.test(rest)) total = (total ?? 0) + size;
  }
  return total;
}
