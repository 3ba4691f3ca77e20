import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Storage } from '../storage/index.ts';
import { startCodec, type CompressionSpec } from './compression.ts';
import { Meter, type MeterHash } from './meter.ts';

/** A stream being produced by something that reports its own success (a pg_dump process, a file). */
export interface Producer {
  stream: Readable;
  /** Resolves when the producer finished cleanly (exit code 0); rejects otherwise. */
  done: Promise<void>;
  /** The stream is already compressed (e.g. pg_dump piped into zstd): no codec is started. */
  compressed?: boolean;
  /** With `compressed`: the uncompressed size, known once `done` resolved (undefined if unknown). */
  rawBytes?: () => number | undefined;
}

/** What {@link uploadStream} stored. */
export interface StoredStream {
  /** Bytes produced (before compression). */
  rawBytes: number;
  /** Bytes stored (after compression). */
  storedBytes: number;
  /** Hex digests of the stored bytes. */
  digests: Partial<Record<MeterHash, string>>;
}

/** Live byte counters of a running {@link uploadStream}, for progress lines and the stall watchdog. */
export interface StreamCounters {
  raw: Meter;
  stored: Meter;
}

/**
 * Streams a producer through compression and hashing into one storage object, completing the
 * upload only after the producer and the compressor both finished cleanly: a producer that
 * fails or is killed half-way never becomes a valid-looking object. On any failure, or when
 * `signal` aborts, the upload is aborted (S3: AbortMultipartUpload) and the promise rejects with
 * the first error. Memory stays bounded (back-pressure end to end).
 */
export async function uploadStream(
  storage: Storage,
  key: string,
  produce: (signal: AbortSignal) => Producer,
  options: { compression: CompressionSpec; hashes?: MeterHash[]; sizeHintBytes?: number; signal?: AbortSignal; onCounters?: (c: StreamCounters) => void },
): Promise<StoredStream> {
  const controller = new AbortController();
  let firstError: unknown;
  const fail = (err: unknown) => {
    firstError ??= err;
    if (!controller.signal.aborted) controller.abort(err);
  };
  const onOuterAbort = () => fail(options.signal?.reason ?? new Error('cancelled'));
  if (options.signal?.aborted) onOuterAbort();
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const producer = produce(controller.signal);
  producer.done.catch(() => undefined);
  const codec = await startCodec(producer.compressed ? { algorithm: 'none' } : options.compression, 'compress', controller.signal);
  const raw = new Meter();
  const stored = new Meter(...(options.hashes ?? ['sha256']));
  const body = new PassThrough({ highWaterMark: 1024 * 1024 });
  options.onCounters?.({ raw, stored });
  producer.stream.on('error', fail);
  codec.stream.on('error', fail);
  stored.on('error', fail);
  producer.stream.pipe(raw).pipe(codec.stream).pipe(stored).pipe(body, { end: false });
  const upload = storage.upload(key, body, { signal: controller.signal, sizeHintBytes: options.sizeHintBytes });
  upload.catch(fail);
  // An abort must end the wait even when a stage ignores the signal (a file producer, a zlib
  // codec): back-pressure from a stopped upload would otherwise keep them waiting forever.
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = () => reject(controller.signal.reason);
    if (controller.signal.aborted) onAbort();
    else controller.signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => undefined);
  try {
    await Promise.race([Promise.all([producer.done, codec.done, finished(stored)]), aborted]).catch((err) => {
      fail(err);
      throw err;
    });
    body.end();
    await upload;
    const digests: Partial<Record<MeterHash, string>> = {};
    for (const h of options.hashes ?? ['sha256']) digests[h] = stored.digest(h);
    return { rawBytes: producer.rawBytes?.() ?? raw.bytes, storedBytes: stored.bytes, digests };
  } catch (err) {
    fail(err);
    // Tear the whole chain down: a stage left paused with buffered data would keep the
    // compressor (and so this promise) waiting forever.
    stored.unpipe(body);
    for (const stream of [producer.stream, raw, codec.stream, stored, body]) stream.destroy();
    codec.abort();
    await Promise.race([
      Promise.allSettled([upload, producer.done, codec.done]),
      new Promise((resolve) => setTimeout(resolve, 60_000).unref()),
    ]);
    throw firstError;
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
}
