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
