import { resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import type { Manifest } from '../backup/manifest.ts';
import { readBackup, readbackProblems } from '../backup/readback.ts';
import { CheckFailedError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary } from '../postgres/binaries.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';
import { formatBytes, formatSeconds } from './format.ts';

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  /** `latest` (default), a manifest or dump key, or its full URI. */
  backup?: string;
  /** With `latest`: which service / environment / database. */
  filter?: BackupFilter;
  s3?: S3Settings;
  logger: Logger;
  signal?: AbortSignal;
}

/** The verdict of {@link verify}. A failed check is a result (`ok: false`), not an exception. */
export interface VerifyResult {
  ok: boolean;
  /** Why the backup is not intact; absent when ok. */
  reason?: string;
  problems: string[];
  backupUri?: string;
  manifestUri?: string;
  manifest?: Manifest;
  /** Bytes downloaded. */
  sizeBytes: number;
  sha256?: string;
  durationMs: number;
}

/**
 * Proves a stored backup intact and readable: reads its manifest, re-downloads the object,
 * checks size and SHA-256 against the manifest, and reads the whole archive with
 * `pg_restore --file=/dev/null` (which reads every data block, unlike `pg_restore --list`,
 * which reads only the TOC and passes truncated archives). Streams; uses no local disk.
 * Needs read-only credentials (List for `latest`, Get).
 * @throws UsageError when no backup matches or storage/pg_restore are not usable.
 */
export async function verify(options: VerifyOptions): Promise<VerifyResult> {
  const { logger } = options;
  const started = Date.now();
  const storage = openStorage(options.from, options.s3);
  let backup;
  try {
    backup = await resolveBackup(storage, options.backup, options.filter);
  } catch (err) {
    if (err instanceof CheckFailedError) {
      logger.warn(`verify FAILED: ${err.message}`);
      return { ok: false, reason: err.message, problems: [err.message], sizeBytes: 0, durationMs: Date.now() - started };
    }
    throw err;
  }
  const { manifest } = backup;
  const pgRestore = await findPgBinary('pg_restore', manifest.pgDump.major, `reading an archive written by pg_dump ${manifest.pgDump.version}`);
  logger.info(`verifying ${storage.uri(backup.objectKey)} (${formatBytes(manifest.object.sizeBytes)}, ${manifest.compression.algorithm}, pg_dump ${manifest.pgDump.version}) with pg_restore ${pgRestore.version}`);
  const outcome = await readBackup(storage, backup, pgRestore, ['--file=/dev/null'], { signal: options.signal });
  const problems = readbackProblems(outcome, backup);
  const result: VerifyResult = {
    ok: problems.length === 0,
    problems,
    backupUri: storage.uri(backup.objectKey),
    manifestUri: storage.uri(backup.manifestKey),
    manifest,
    sizeBytes: outcome.sizeBytes,
    sha256: outcome.sha256,
    durationMs: Date.now() - started,
  };
  if (problems[0]) result.reason = problems[0];
  if (result.ok) logger.info(`verify OK: size ${outcome.sizeBytes} bytes and sha256 match the manifest; pg_restore read the whole archive (${formatSeconds(result.durationMs)})`);
  else for (const p of problems) logger.warn(`verify FAILED: ${p}`);
  return result;
}
