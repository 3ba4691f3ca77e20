import { Transform, type TransformCallback } from 'node:stream';
import { createHash } from 'node:crypto';
import { listBackups, resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import { parseDuration } from '../duration.ts';
import { storedParts } from '../backup/parts.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { OverwriteError, openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { formatBytes, formatSeconds } from '../format.ts';

/** Options of {@link mirror}. */
export interface MirrorOptions {
  /** The backup location to copy from (`s3://…` or `file://…`); read access. */
  from: string;
  /** The off-region location to copy to; write access (and read, to skip what is there). */
  to: string;
  filter?: BackupFilter;
  /** Only backups taken within this long (e.g. `7d`); default: all. */
  since?: string;
  /** Plan only: list what would be copied. */
  dryRun?: boolean;
  s3?: S3Settings;
  /** Settings of `to` (endpoint, region, credentials, SSE, Object Lock). */
  targetS3?: S3Settings;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
}

/** What {@link mirror} did. */
export interface MirrorRunResult {
  /** Manifest keys copied (or, in a dry run, to copy). */
  copied: string[];
  /** Complete backups already at the target. */
  present: number;
  /** Backups whose copy failed, with why (each left without a manifest at the target). */
  failed: { manifestKey: string; error: string }[];
  bytes: number;
  durationMs: number;
}

/**
 * A pass-through that hashes what flows and, at the end, fails the stream unless its size and
 * SHA-256 match what the manifest says: an upload fed by it is then aborted, never completed.
 */
class ExpectDigest extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;
  readonly expected: { sha256: string; sizeBytes: number };
  readonly label: string;
  constructor(expected: { sha256: string; sizeBytes: number }, label: string) {
    super();
    this.expected = expected;
    this.label = label;
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.#hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const got = this.#hash.digest('hex');
    if (this.bytes !== this.expected.sizeBytes || got !== this.expected.sha256) {
      cb(new CheckFailedError(`${this.label}: the source has ${this.bytes} bytes hashing to ${got}, its manifest says ${this.expected.sizeBytes} bytes, ${this.expected.sha256}: not copied`));
    } else cb();
  }
}

/**
 * Copies complete backups that the target lacks (seed 004's hourly cross-region sync), oldest
 * first: every stored object (the dump or the directory-format files, then the sidecars) is
 * streamed from source to target through a SHA-256 check against the manifest — a mismatch
 * aborts that upload — and the manifest is written last, with `If-None-Match: *`. A backup whose
 * manifest is already at the target is skipped, so the command is idempotent and resumes after a
 * failure. Memory is bounded by the part size; nothing touches local disk.
 * @throws UsageError for bad options or unreachable locations.
 * @throws CheckFailedError after the run when any backup failed to copy (the others are copied).
 */
export async function mirror(options: MirrorOptions): Promise<MirrorRunResult> {
  const { logger } = options;
  const started = Date.now();
  const source = openStorage(options.from, options.s3);
  const target = openStorage(options.to, options.targetS3);
  if (source.url === target.url) throw new UsageError(`--to ${options.to} is --from itself: give the other location`);
  const sinceMs = options.since ? parseDuration(options.since, '--since') : undefined;
  const now = (options.now ?? (() => new Date()))();
  const [have, there] = await Promise.all([listBackups(source, options.filter), listBackups(target, options.filter)]);
  const present = new Set(there.map((b) => b.manifestKey));
  const wanted = have.filter((b) => sinceMs === undefined || now.getTime() - b.startedAt.getTime() <= sinceMs).reverse();
  const missing = wanted.filter((b) => !present.has(b.manifestKey));
  const result: MirrorRunResult = { copied: [], present: wanted.length - missing.length, failed: [], bytes: 0, durationMs: 0 };
  logger.info(`${missing.length} of ${wanted.length} complete backups under ${source.url} are missing at ${target.url}${options.dryRun ? ' (dry run: nothing copied)' : ''}`);
  for (const entry of missing) {
    if (options.signal?.aborted) throw options.signal.reason;
    if (options.dryRun) {
      logger.info(`would copy ${entry.manifestKey}`);
      result.copied.push(entry.manifestKey);
      continue;
    }
    try {
      const bytes = await copyBackup(source, target, entry.manifestKey, options.signal);
      result.bytes += bytes;
      result.copied.push(entry.manifestKey);
      logger.info(`copied ${entry.manifestKey} (${formatBytes(bytes)})`);
    } catch (err) {
      if (options.signal?.aborted || err instanceof UsageError) throw err;
      const error = messageOf(err);
      logger.warn(`${entry.manifestKey}: copy FAILED: ${error}`);
      result.failed.push({ manifestKey: entry.manifestKey, error });
    }
  }
  result.durationMs = Date.now() - started;
  logger.info(`mirror: ${result.copied.length} copied (${formatBytes(result.bytes)}), ${result.present} already there, ${result.failed.length} failed, in ${formatSeconds(result.durationMs)}`);
  if (result.failed.length) {
    throw Object.assign(new CheckFailedError(`${result.failed.length} backup(s) could not be copied to ${target.url}: ${result.failed.map((f) => `${f.manifestKey} (${f.error})`).join('; ')}`), { result });
  }
  return result;
}

/** Whether `storage` holds `o.key` with the size and SHA-256 given. */
async function sameObject(storage: Storage, o: { key: string; sha256: string; sizeBytes: number }): Promise<boolean> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of await storage.get(o.key)) {
    size += (chunk as Buffer).length;
    hash.update(chunk as Buffer);
  }
  return size === o.sizeBytes && hash.digest('hex') === o.sha256;
}

/** Copies one complete backup, manifest last; returns the bytes copied. */
async function copyBackup(source: Storage, target: Storage, manifestKey: string, signal?: AbortSignal): Promise<number> {
  const backup = await resolveBackup(source, manifestKey);
  const m = backup.manifest;
  const dir = backup.manifestKey.slice(0, backup.manifestKey.lastIndexOf('/') + 1);
  const objects = [
    ...storedParts(backup).map((p) => ({ key: p.key, sha256: p.sha256, sizeBytes: p.sizeBytes })),
    ...(m.sidecars ?? []).map((s) => ({ key: `${dir}${s.name}`, sha256: s.sha256, sizeBytes: s.sizeBytes })),
  ];
  let bytes = 0;
  for (const o of objects) {
    const body = await source.get(o.key);
    const check = new ExpectDigest(o, source.uri(o.key));
    body.on('error', (err) => check.destroy(err));
    try {
      await target.upload(o.key, body.pipe(check), { signal, sizeHintBytes: o.sizeBytes, noOverwrite: true });
      bytes += check.bytes;
    } catch (err) {
      body.destroy();
      if (!(err instanceof OverwriteError)) throw err;
      // Left by an earlier copy that stopped before its manifest (or by a failed dump-time
      // mirror): keep it if it is the same object, else refuse to guess.
      if (!(await sameObject(target, o))) throw new CheckFailedError(`${target.uri(o.key)} already exists and differs from the source's manifest: remove it, then mirror again`);
    }
  }
  await target.put(backup.manifestKey, await source.getText(backup.manifestKey), { contentType: 'application/json', noOverwrite: true });
  return bytes;
}
