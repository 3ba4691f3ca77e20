import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Storage, UploadOptions } from '../storage/index.ts';
import { startCodec, type CompressionSpec } from './compression.ts';
import { startEncrypt } from './encryption.ts';
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
  /** Per mirror (in order): undefined when its copy completed, else why it failed. */
  mirrorErrors: unknown[];
}

/** A second object that receives the same bytes as the primary upload. */
export interface MirrorTarget {
  storage: Storage;
  /** Default: the primary's key. */
  key?: string;
}

/** Live byte counters of a running {@link uploadStream}, for progress lines and the stall watchdog. */
export interface StreamCounters {
  /** Bytes the producer gave, before compression (for a self-compressing producer: the compressed bytes, as `sent`). */
  raw: { readonly bytes: number };
  /** Bytes handed to the storage driver (compressed, encrypted): not yet stored. */
  sent: { readonly bytes: number };
  /** Bytes the store acknowledged (see {@link UploadOptions.onStored}): what a progress line may call stored. */
  stored: { readonly bytes: number };
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
  options: {
    compression: CompressionSpec;
    hashes?: MeterHash[];
    sizeHintBytes?: number;
    signal?: AbortSignal;
    onCounters?: (c: StreamCounters) => void;
    /** age recipients: encrypt after compression; the digests are of the encrypted (stored) bytes. */
    encryptTo?: string[];
    /** Refuse to replace an existing object (see {@link UploadOptions.noOverwrite}). */
    noOverwrite?: boolean;
    /** Also stream the same bytes into these objects (an off-region mirror); see {@link MirrorTarget}. */
    mirrors?: MirrorTarget[];
    /** A mirror that takes no data (or does not complete) for this long is abandoned, in ms. Default 60 000. */
    mirrorStallMs?: number;
  },
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
  // A producer that compresses itself (pg_dump piped into zstd) goes straight to the hashing
  // stage: no codec, and no second counter over the same bytes (its raw size comes from the
  // producer at the end; until then progress counts the stored bytes).
  const codec = producer.compressed ? undefined : await startCodec(options.compression, 'compress', controller.signal);
  const stored = new Meter(...(options.hashes ?? ['sha256']));
  const raw = codec ? new Meter() : stored;
  const body = new PassThrough({ highWaterMark: 1024 * 1024 });
  const acknowledged = { bytes: 0 };
  options.onCounters?.({ raw, sent: stored, stored: acknowledged });
  producer.stream.on('error', fail);
  codec?.stream.on('error', fail);
  stored.on('error', fail);
  const encrypt = options.encryptTo?.length ? startEncrypt(options.encryptTo) : undefined;
  encrypt?.stream.on('error', fail);
  encrypt?.done.catch(fail);
  const compressed = codec ? producer.stream.pipe(raw).pipe(codec.stream) : producer.stream;
  (encrypt ? compressed.pipe(encrypt.stream) : compressed).pipe(stored).pipe(body, { end: false });
  const upload = storage.upload(key, body, { signal: controller.signal, sizeHintBytes: options.sizeHintBytes, noOverwrite: options.noOverwrite, onStored: (n) => (acknowledged.bytes = n) });
  upload.catch(fail);
  // Mirror copies: the same stored bytes, teed. A mirror that fails, or that stops reading for
  // `mirrorStallMs` (a hung DR endpoint), is cut loose — unpiped, its multipart upload aborted —
  // and reported; it may slow the primary upload by that long at most, never stop or fail it.
  const mirrorStallMs = options.mirrorStallMs ?? 60_000;
  const mirrors = (options.mirrors ?? []).map((m) => {
    const mirrorBody = new PassThrough({ highWaterMark: 1024 * 1024 });
    const mirrorAbort = new AbortController();
    let cutLoose: Error | undefined;
    const detach = (why?: Error) => {
      cutLoose ??= why;
      clearInterval(watchdog);
      stored.unpipe(mirrorBody); // resumes the primary if it waited for this mirror to drain
      mirrorBody.destroy();
      if (why) mirrorAbort.abort(why);
    };
    let blockedSince: number | undefined;
    const watchdog = setInterval(() => {
      if (!mirrorBody.writableNeedDrain) blockedSince = undefined;
      else if ((blockedSince ??= Date.now()) && Date.now() - blockedSince >= mirrorStallMs) {
        detach(new Error(`the mirror took no data for ${Math.round(mirrorStallMs / 1000)} s: copy abandoned`));
      }
    }, Math.min(1000, mirrorStallMs / 4));
    watchdog.unref();
    const onPrimaryAbort = () => mirrorAbort.abort(controller.signal.reason);
    controller.signal.addEventListener('abort', onPrimaryAbort, { once: true });
    stored.pipe(mirrorBody, { end: false });
    const done = m.storage.upload(m.key ?? key, mirrorBody, { signal: mirrorAbort.signal, sizeHintBytes: options.sizeHintBytes, noOverwrite: options.noOverwrite }).then(
      () => {
        clearInterval(watchdog);
        if (cutLoose) throw cutLoose;
      },
      (err: unknown) => {
        detach();
        throw cutLoose ?? err;
      },
    );
    done.catch(() => undefined);
    /** After the primary completed: the mirror's own completion, abandoned after `mirrorStallMs`. */
    const settled = async (): Promise<unknown> => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new Error(`the mirror did not complete within ${Math.round(mirrorStallMs / 1000)} s of the primary: copy abandoned`);
          detach(err);
          reject(err);
        }, mirrorStallMs);
        timer.unref();
      });
      try {
        await Promise.race([done, timeout]);
        return undefined;
      } catch (err) {
        return err;
      } finally {
        clearTimeout(timer);
      }
    };
    return { body: mirrorBody, done, settled, abort: () => detach(new Error('cancelled')) };
  });
  // An abort must end the wait even when a stage ignores the signal (a file producer, a zlib
  // codec): back-pressure from a stopped upload would otherwise keep them waiting forever.
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = () => reject(controller.signal.reason);
    if (controller.signal.aborted) onAbort();
    else controller.signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => undefined);
  try {
    await Promise.race([Promise.all([producer.done, codec?.done, encrypt?.done, finished(stored)]), aborted]).catch((err) => {
      fail(err);
      throw err;
    });
    body.end();
    for (const m of mirrors) m.body.end();
    await upload;
    const mirrorErrors = await Promise.all(mirrors.map((m) => m.settled()));
    const digests: Partial<Record<MeterHash, string>> = {};
    for (const h of options.hashes ?? ['sha256']) digests[h] = stored.digest(h);
    return { rawBytes: producer.rawBytes?.() ?? raw.bytes, storedBytes: stored.bytes, digests, mirrorErrors };
  } catch (err) {
    fail(err);
    for (const m of mirrors) m.abort();
    // Tear the whole chain down: a stage left paused with buffered data would keep the
    // compressor (and so this promise) waiting forever.
    stored.unpipe(body);
    for (const stream of [producer.stream, raw, ...(codec ? [codec.stream] : []), ...(encrypt ? [encrypt.stream] : []), stored, body]) stream.destroy();
    codec?.abort();
    await Promise.race([
      Promise.allSettled([upload, producer.done, codec?.done, encrypt?.done, ...mirrors.map((m) => m.done)]),
      new Promise((resolve) => setTimeout(resolve, 60_000).unref()),
    ]);
    throw firstError;
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
}
