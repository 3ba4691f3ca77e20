import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { messageOf } from '../errors.ts';
import type { Storage } from '../storage/index.ts';
import type { ResolvedBackup } from './catalog.ts';
import { compressionSuffix, startCodec, type CompressionSpec } from './compression.ts';
import { AGE_SUFFIX, startDecrypt } from './encryption.ts';
import type { Manifest } from './manifest.ts';
import { Meter } from './meter.ts';

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
export function storedParts(backup: ResolvedBackup): StoredPart[] {
  const m = backup.manifest;
  const encrypted = m.encryption?.scheme === 'age';
  if (m.format !== 'directory') return [{ key: backup.objectKey, compression: m.compression, sizeBytes: m.object.sizeBytes, sha256: m.object.sha256, encrypted }];
  const suffix = `${compressionSuffix(m.compression)}${encrypted ? AGE_SUFFIX : ''}`;
  return (m.files ?? []).map((f) => ({ key: `${backup.objectKey}/${f.name}${suffix}`, compression: m.compression, sizeBytes: f.sizeBytes, sha256: f.sha256, label: f.name, encrypted }));
}

/** The local name of a downloaded archive: `<id>.dump`, `<id>.sql`, or the directory `<id>.dir`. */
export function localArchiveName(m: Manifest): string {
  return `${m.id}.${m.format === 'plain' ? 'sql' : m.format === 'directory' ? 'dir' : 'dump'}`;
}

/** A backup downloaded, checked and decompressed to local disk. */
export interface LocalArchive {
  /** The archive file, or directory for the directory format. */
  path: string;
  /** Size and checksum problems (empty when every part matches the manifest). */
  problems: string[];
  /** Bytes downloaded. */
  sizeBytes: number;
}

/**
 * Downloads a backup into `scratch`, checking every part's size and SHA-256 against the manifest
 * and decompressing it: one file for custom and plain, a directory of files for the directory
 * format (4 at a time). Needs the manifest's `archiveSizeBytes` of free space.
 */
export async function downloadArchive(storage: Storage, backup: ResolvedBackup, scratch: string, signal?: AbortSignal, identities?: string[]): Promise<LocalArchive> {
  const target = path.join(scratch, localArchiveName(backup.manifest));
  const parts = storedParts(backup);
  if (backup.manifest.format === 'directory') await mkdir(target, { recursive: true });
  const problems: string[] = [];
  let sizeBytes = 0;
  await mapLimit(parts, 4, async (part) => {
    const file = part.label ? path.join(target, part.label) : target;
    const outcome = await streamBackup(storage, part, () => fileSink(file), signal, identities);
    sizeBytes += outcome.sizeBytes;
    problems.push(...readbackProblems(outcome, part).map((p) => p.replace(/archive unreadable: /, 'writing the archive failed: ')));
  });
  return { path: target, problems, sizeBytes };
}

/** A sink that writes a local file; running out of space is named as such. */
function fileSink(file: string): ArchiveSink {
  const stream = createWriteStream(file);
  const done = finished(stream).catch((err: NodeJS.ErrnoException) => {
    throw new Error(err.code === 'ENOSPC' ? `${path.dirname(file)} ran out of space (ENOSPC): free space or choose another --work-dir` : messageOf(err));
  });
  return { stream, done };
}

/**
 * Runs `fn` over `items`, at most `limit` at a time. After the first failure no new item is
 * started, and the promise settles only once every started call has settled (so nothing runs on
 * after it), rejecting with the first failure.
 */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
  return results;
}

/** What reading a backup back found; every field is filled even when an earlier stage failed. */
export interface ReadbackOutcome {
  /** Bytes downloaded. */
  sizeBytes: number;
  /** SHA-256 of the downloaded bytes (hex), undefined if the download itself failed. */
  sha256: string | undefined;
  downloadError?: string;
  /** age decryption failed (no identity matched, or the ciphertext was altered). */
  decryptError?: string;
  /** The part is encrypted and no identity was given: only the download was hashed. */
  decryptSkipped?: boolean;
  decompressError?: string;
  restoreError?: string;
}

/**
 * A writable that forwards into `dest` while `dest` accepts data and silently drops the rest
 * once `dest` failed or closed (a decompressor that gave up on corrupt input, a pg_restore that
 * exited on the first error). Upstream keeps flowing, so the download is still hashed in full
 * and the checksum verdict is always available.
 */
function forwardOrDrain(dest: Writable): Writable {
  let broken = false;
  const markBroken = () => {
    broken = true;
  };
  dest.on('error', markBroken);
  dest.on('close', markBroken);
  return new Writable({
    write(chunk, _enc, callback) {
      if (broken || dest.destroyed) return callback();
      if (dest.write(chunk)) return callback();
      const resume = () => {
        dest.off('drain', resume);
        dest.off('close', resume);
        callback();
      };
      dest.on('drain', resume);
      dest.on('close', resume);
    },
    final(callback) {
      if (!broken && !dest.destroyed) dest.end();
      callback();
    },
  });
}

/** Where a read-back's decompressed archive goes: a writable and when it is done with it. */
export interface ArchiveSink {
  stream: Writable;
  /** Settles when the sink finished (a process exited, a file was flushed). */
  done: Promise<void>;
}

/**
 * One sink that writes into several (verify's archive read and schema replay share one
 * download). Each part is fed through {@link forwardOrDrain}, so one that gives up does not stall
 * the others; `done` rejects with the first part's failure.
 */
export function teeSinks(parts: ArchiveSink[]): ArchiveSink {
  if (parts.length === 1) return parts[0]!;
  const outs = parts.map((p) => {
    p.stream.on('error', () => undefined);
    return forwardOrDrain(p.stream);
  });
  const stream = new Writable({
    write(chunk, _enc, callback) {
      let pending = outs.length;
      for (const out of outs) out.write(chunk, () => --pending === 0 && callback());
    },
    final(callback) {
      for (const out of outs) out.end();
      callback();
    },
  });
  return { stream, done: Promise.all(parts.map((p) => p.done)).then(() => undefined) };
}

/**
 * Streams a backup out of storage through SHA-256 and decompression into `sink`. The download is
 * hashed to the end even when the decompressor or the sink gives up early, so the checksum
 * verdict is always available. Sink errors are reported as `restoreError`.
 */
export async function streamBackup(storage: Storage, part: StoredPart, openSink: () => ArchiveSink, signal?: AbortSignal, identities?: string[]): Promise<ReadbackOutcome> {
  const outcome: ReadbackOutcome = { sizeBytes: 0, sha256: undefined };
  let source;
  try {
    source = await storage.get(part.key);
  } catch (err) {
    outcome.downloadError = messageOf(err);
    return outcome;
  }
  const meter = new Meter('sha256');
  if (part.encrypted && !identities?.length) {
    // Without an identity only the stored bytes can be checked: hash them, nothing else.
    outcome.decryptSkipped = true;
    source.once('error', () => meter.end());
    source.pipe(meter).resume();
    const done = await Promise.allSettled([finished(meter), new Promise<void>((resolve, reject) => source.once('error', reject).once('end', resolve))]);
    outcome.sizeBytes = meter.bytes;
    const failed = done.find((d) => d.status === 'rejected');
    if (failed) outcome.downloadError = messageOf(failed.reason);
    else outcome.sha256 = meter.digest();
    return outcome;
  }
  const decrypt = part.encrypted ? startDecrypt(identities!) : undefined;
  decrypt?.stream.on('error', () => undefined); // its `done` tells why
  const codec = await startCodec(part.compression, 'decompress', signal);
  const sink = openSink();
  sink.stream.on('error', () => undefined); // EPIPE when the sink exits early: its own status tells why
  codec.stream.on('error', () => undefined); // likewise for the decompressor
  const onAbort = () => source.destroy(signal?.reason instanceof Error ? signal.reason : new Error('cancelled'));
  signal?.addEventListener('abort', onAbort, { once: true });
  // A download that breaks off ends the pipeline instead of leaving it waiting for more bytes:
  // the decompressor and the sink then see a truncated stream and fail on their own.
  source.once('error', () => {
    source.unpipe(meter);
    meter.end();
  });
  if (decrypt) {
    source.pipe(meter).pipe(forwardOrDrain(decrypt.stream));
    decrypt.stream.pipe(forwardOrDrain(codec.stream));
    // A decryption that gives up ends the decompressor's input instead of leaving it waiting.
    decrypt.done.catch(() => codec.stream.end());
  } else {
    source.pipe(meter).pipe(forwardOrDrain(codec.stream));
  }
  codec.stream.pipe(forwardOrDrain(sink.stream));
  const downloaded = new Promise<void>((resolve, reject) => {
    source.once('error', reject);
    source.once('end', resolve);
  });
  const [download, decompress, sunk, decrypted] = await Promise.allSettled([
    Promise.all([downloaded, finished(meter)]),
    codec.done,
    sink.done,
    decrypt?.done,
  ]);
  signal?.removeEventListener('abort', onAbort);
  outcome.sizeBytes = meter.bytes;
  if (download.status === 'rejected') {
    outcome.downloadError = messageOf(download.reason);
  } else {
    outcome.sha256 = meter.digest();
  }
  if (decrypted.status === 'rejected') {
    outcome.decryptError = messageOf(decrypted.reason);
    return outcome; // what follows only failed because its input was cut off
  }
  if (decompress.status === 'rejected') outcome.decompressError = messageOf(decompress.reason);
  if (sunk.status === 'rejected') outcome.restoreError = messageOf(sunk.reason);
  return outcome;
}

/**
 * The reasons a read-back disagrees with its manifest, most telling first: download failure,
 * size, SHA-256, decompression, pg_restore. Empty when the backup is intact.
 */
export function readbackProblems(outcome: ReadbackOutcome, part: StoredPart): string[] {
  const expected = part;
  const problems: string[] = [];
  const of = part.label ? `${part.label}: ` : '';
  if (outcome.downloadError) problems.push(`${of}download failed: ${outcome.downloadError}`);
  else {
    if (outcome.sizeBytes !== expected.sizeBytes) problems.push(`${of}size mismatch: the object has ${outcome.sizeBytes} bytes, the manifest says ${expected.sizeBytes}`);
    if (outcome.sha256 !== expected.sha256) problems.push(`${of}sha256 mismatch: the object hashes to ${outcome.sha256}, the manifest says ${expected.sha256}`);
  }
  if (outcome.decryptError) problems.push(`${of}${outcome.decryptError}`);
  if (outcome.decompressError) problems.push(`${of}decompression failed: ${outcome.decompressError}`);
  if (outcome.restoreError) problems.push(`${of}archive unreadable: ${outcome.restoreError}`);
  return problems;
}
