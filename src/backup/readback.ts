import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { messageOf } from '../errors.ts';
import type { PgBinary } from '../postgres/binaries.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { runPgProgram } from '../postgres/processes.ts';
import type { Storage } from '../storage/index.ts';
import type { ResolvedBackup } from './catalog.ts';
import { startCodec } from './compression.ts';
import { Meter } from './meter.ts';

/** What reading a backup back found; every field is filled even when an earlier stage failed. */
export interface ReadbackOutcome {
  /** Bytes downloaded. */
  sizeBytes: number;
  /** SHA-256 of the downloaded bytes (hex), undefined if the download itself failed. */
  sha256: string | undefined;
  downloadError?: string;
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
export async function streamBackup(storage: Storage, backup: ResolvedBackup, openSink: () => ArchiveSink, signal?: AbortSignal): Promise<ReadbackOutcome> {
  const outcome: ReadbackOutcome = { sizeBytes: 0, sha256: undefined };
  let source;
  try {
    source = await storage.get(backup.objectKey);
  } catch (err) {
    outcome.downloadError = messageOf(err);
    return outcome;
  }
  const meter = new Meter('sha256');
  const codec = await startCodec(backup.manifest.compression, 'decompress', signal);
  const sink = openSink();
  sink.stream.on('error', () => undefined); // EPIPE when the sink exits early: its own status tells why
  codec.stream.on('error', () => undefined); // likewise for the decompressor
  const onAbort = () => source.destroy(signal?.reason instanceof Error ? signal.reason : new Error('cancelled'));
  signal?.addEventListener('abort', onAbort, { once: true });
  source.pipe(meter).pipe(forwardOrDrain(codec.stream));
  codec.stream.pipe(forwardOrDrain(sink.stream));
  const [download, decompress, sunk] = await Promise.allSettled([
    new Promise<void>((resolve, reject) => {
      source.once('error', reject);
      finished(meter).then(resolve, reject);
    }),
    codec.done,
    sink.done,
  ]);
  signal?.removeEventListener('abort', onAbort);
  outcome.sizeBytes = meter.bytes;
  if (download.status === 'rejected') {
    outcome.downloadError = messageOf(download.reason);
  } else {
    outcome.sha256 = meter.digest();
  }
  if (decompress.status === 'rejected') outcome.decompressError = messageOf(decompress.reason);
  if (sunk.status === 'rejected') outcome.restoreError = messageOf(sunk.reason);
  return outcome;
}

/**
 * Streams a backup into `pg_restore` with the given arguments (reading the archive from stdin):
 * `--file=/dev/null` reads every data block without writing anywhere (verify); `--dbname`
 * restores (restore). Nothing touches local disk.
 */
export function readBackup(
  storage: Storage,
  backup: ResolvedBackup,
  pgRestore: PgBinary,
  restoreArgs: string[],
  options: { connection?: DatabaseConnection; signal?: AbortSignal } = {},
): Promise<ReadbackOutcome> {
  return streamBackup(
    storage,
    backup,
    () => {
      const restore = runPgProgram(pgRestore, restoreArgs, { connection: options.connection, signal: options.signal, stdin: 'pipe', stdout: 'ignore' });
      return { stream: restore.stdin, done: restore.done };
    },
    options.signal,
  );
}

/**
 * The reasons a read-back disagrees with its manifest, most telling first: download failure,
 * size, SHA-256, decompression, pg_restore. Empty when the backup is intact.
 */
export function readbackProblems(outcome: ReadbackOutcome, backup: ResolvedBackup): string[] {
  const expected = backup.manifest.object;
  const problems: string[] = [];
  if (outcome.downloadError) problems.push(`download failed: ${outcome.downloadError}`);
  else {
    if (outcome.sizeBytes !== expected.sizeBytes) problems.push(`size mismatch: the object has ${outcome.sizeBytes} bytes, the manifest says ${expected.sizeBytes}`);
    if (outcome.sha256 !== expected.sha256) problems.push(`sha256 mismatch: the object hashes to ${outcome.sha256}, the manifest says ${expected.sha256}`);
  }
  if (outcome.decompressError) problems.push(`decompression failed: ${outcome.decompressError}`);
  if (outcome.restoreError) problems.push(`archive unreadable: ${outcome.restoreError}`);
  return problems;
}
