import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';

/** S3's minimum part size (all parts but the last): 5 MiB. Source: AWS S3 "Multipart upload limits". */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3's maximum number of parts in one multipart upload. Source: AWS S3 "Multipart upload limits". */
export const MAX_PARTS = 10_000;

/**
 * Chooses the multipart part size in bytes for a stream of about `sizeHintBytes`: the smallest
 * whole number of MiB (at least 5 MiB) that fits the stream in 9 000 parts, leaving 10 % of the
 * 10 000-part limit as margin for an estimate that was low.
 */
export function choosePartSize(sizeHintBytes: number | undefined): number {
  if (!sizeHintBytes || sizeHintBytes <= 0) return MIN_PART_SIZE;
  const mib = 1024 * 1024;
  const needed = Math.ceil(sizeHintBytes / 9_000 / mib) * mib;
  return Math.max(MIN_PART_SIZE, needed);
}

/** How long the AbortMultipartUpload after a failure may take, retries included (ms). */
const ABORT_TIMEOUT_MS = 30_000;
/** The same after a cancellation (SIGINT/SIGTERM): the user waits, a lifecycle rule is the backstop (ms). */
const ABORT_ON_CANCEL_MS = 4_000;
/** How long a CreateMultipartUpload in flight may still take after a cancellation, so its id can be aborted (ms). */
const CREATE_GRACE_MS = 3_000;

/**
 * A signal that aborts `ms` after `signal` does (with its reason), and a function that detaches
 * it from `signal`. For a request that should outlive a cancellation briefly but not for long.
 */
export function afterAbort(signal: AbortSignal | undefined, ms: number): { signal: AbortSignal | undefined; dispose: () => void } {
  if (!signal) return { signal: undefined, dispose: () => undefined };
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => controller.abort(signal.reason), ms);
    timer.unref();
  };
  if (signal.aborted) arm();
  else signal.addEventListener('abort', arm, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      signal.removeEventListener('abort', arm);
      clearTimeout(timer);
    },
  };
}

/** An upload waiting for its first part buffer. */
interface BufferWaiter {
  size: number;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * The part buffers of one storage, shared by every upload streaming into it at once (the
 * concurrent dumps of a `--parallel-databases` run, a dump and its run's globals): at most
 * `queueSize + 1` parts' worth of buffers exist at a time, whatever the number of uploads, so the
 * process's memory does not grow with the parallelism. A buffer an upload is done with is kept
 * for the next part of any upload (of the same size) instead of being freed and allocated again.
 *
 * Every upload always gets its first buffer ({@link take}: waiting, first come first served, while
 * the others hold the budget) and can finish with that one alone, so none can starve the others;
 * further buffers ({@link tryTake}, for parts in flight) only while the budget allows and nobody
 * waits. Limit in bytes: `(queueSize + 1) × size` of the part size asked for (larger parts raise
 * it for that request; a single part larger than the limit is still granted when nothing else is
 * out).
 */
export class PartBuffers {
  readonly queueSize: number;
  /** Bytes of buffers handed out and not given back. */
  #outBytes = 0;
  /** Free buffers, by size: kept for reuse, counted in {@link allocatedBytes}. */
  readonly #free = new Map<number, Buffer[]>();
  #freeBytes = 0;
  readonly #waiters: BufferWaiter[] = [];

  /** @param queueSize parts one upload sends at once (the budget is one more part than that). */
  constructor(queueSize: number) {
    if (!(Number.isInteger(queueSize) && queueSize >= 1)) throw new RangeError(`queueSize must be a whole number >= 1, not ${queueSize}`);
    this.queueSize = queueSize;
  }

  /** Bytes of part buffers that exist (handed out plus kept free). */
  get allocatedBytes(): number {
    return this.#outBytes + this.#freeBytes;
  }

  /** Bytes handed out and not given back. */
  get outBytes(): number {
    return this.#outBytes;
  }

  /** A buffer of `size` bytes when the budget allows it and nobody waits; else undefined. */
  tryTake(size: number): Buffer | undefined {
    if (this.#waiters.length) return undefined;
    return this.#grant(size);
  }

  /**
   * A buffer of `size` bytes: at once when the budget allows, else when one is given back (first
   * come, first served). For an upload that holds no buffer yet.
   * @throws `signal.reason` when it aborts first.
   */
  take(size: number, signal?: AbortSignal): Promise<Buffer> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const now = this.tryTake(size);
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const waiter: BufferWaiter = { size, resolve, reject, signal };
      waiter.onAbort = () => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal!.reason);
        this.#serve();
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /**
   * Gives `buffer` back. With `reuse` false (a request that failed may still hold a reference to
   * it), it is only counted out and left to the garbage collector.
   */
  give(buffer: Buffer, reuse = true): void {
    this.#outBytes -= buffer.length;
    if (reuse) {
      const list = this.#free.get(buffer.length) ?? [];
      list.push(buffer);
      this.#free.set(buffer.length, list);
      this.#freeBytes += buffer.length;
    }
    this.#serve();
  }

  /** Serves the waiters in order while the budget allows. */
  #serve(): void {
    while (this.#waiters.length) {
      const w = this.#waiters[0]!;
      const b = this.#grant(w.size);
      if (!b) return;
      this.#waiters.shift();
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve(b);
    }
  }

  #grant(size: number): Buffer | undefined {
    const list = this.#free.get(size);
    if (list?.length) {
      this.#freeBytes -= size;
      this.#outBytes += size;
      return list.pop()!;
    }
    const limit = (this.queueSize + 1) * size;
    // Free buffers of other sizes make room first.
    if (this.allocatedBytes + size > limit) {
      for (const [n, bufs] of this.#free) {
        while (bufs.length && this.allocatedBytes + size > limit) {
          bufs.pop();
          this.#freeBytes -= n;
        }
      }
    }
    if (this.allocatedBytes + size > limit && this.#outBytes > 0) return undefined;
    this.#outBytes += size;
    return Buffer.allocUnsafeSlow(size);
  }
}

/** The object-level fields of a streamed write (what PutObject / CreateMultipartUpload take). */
export interface StreamedObjectParams {
  Bucket: string;
  Key: string;
  ContentType: string;
  /** SSE, SSE-C, Object Lock and checksum fields, sent where S3 expects them (see PART_FIELDS and COMPLETE_FIELDS). */
  [field: string]: unknown;
}

/** What {@link streamToObject} stored. */
export interface StreamedObject {
  /** Bytes read from the stream and stored. */
  sizeBytes: number;
  /** Present when the object was written as a multipart upload (more than one part). */
  uploadId?: string;
  /** The answer of the completing request (PutObject or CompleteMultipartUpload). */
  output: { ServerSideEncryption?: string; SSECustomerAlgorithm?: string };
}

/** The fields of `params` among `keys` that are set. */
function pick(params: StreamedObjectParams, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => params[k] !== undefined).map((k) => [k, params[k]]));
}

/**
 * Per-part request fields: SSE-C must be repeated on every UploadPart, and a checksum algorithm
 * asked for the object applies to each part (AWS S3 API Reference, UploadPart). SSE-S3/KMS,
 * Object Lock, the content type and If-None-Match belong to the object, not to its parts.
 */
const PART_FIELDS = ['SSECustomerAlgorithm', 'SSECustomerKey', 'SSECustomerKeyMD5', 'ChecksumAlgorithm', 'ExpectedBucketOwner', 'RequestPayer'];
/** Fields of CompleteMultipartUpload taken from the object's params (SSE-C, and If-None-Match: the write that must not replace). */
const COMPLETE_FIELDS = ['SSECustomerAlgorithm', 'SSECustomerKey', 'SSECustomerKeyMD5', 'IfNoneMatch', 'ExpectedBucketOwner', 'RequestPayer'];

/**
 * Streams `body` into one S3 object with memory bounded by `(queueSize + 1) × partSize`: the
 * stream is copied into reusable part buffers (no per-part allocation, so no garbage buffers
 * piling up between garbage collections), up to `queueSize` parts are uploaded at once, and
 * reading pauses (back-pressure) while they are all busy. The buffers come from `buffers`, a
 * budget shared with the storage's other uploads ({@link PartBuffers}): uploads running at once
 * share the same `(queueSize + 1) × partSize` instead of holding that much each.
 *
 * A stream shorter than one part is written with a single PutObject; otherwise with
 * CreateMultipartUpload, UploadPart × n and CompleteMultipartUpload (AWS S3 User Guide,
 * "Uploading and copying objects using multipart upload"). Each request is retried by the
 * client's retry strategy (the part buffer is resent as is). `onUploadId` learns the upload id
 * as soon as it exists, so a caller can abort it whatever happens here.
 *
 * On any failure — the stream errors, a part fails after its retries (or comes back without an
 * ETag), `signal` aborts — `body` is destroyed with that error at once, the parts in flight are
 * cancelled, the multipart upload is aborted (AbortMultipartUpload, by id) before this rejects
 * with the first error, and nothing is completed. After `signal` aborted, a
 * CreateMultipartUpload in flight gets CREATE_GRACE_MS to return its id and the
 * AbortMultipartUpload ABORT_ON_CANCEL_MS (ABORT_TIMEOUT_MS after other failures).
 *
 * Requests that carry a part (UploadPart, the single PutObject) have no first-byte limit
 * (`requestTimeout: 0`): how long the send takes depends on the link, and the client's idle
 * limit (socketTimeout) bounds both the send and the wait for the answer.
 *
 * `onStored` is called with the running total of bytes the store acknowledged: after each
 * UploadPart that returned its ETag, and after the PutObject of a short stream.
 *
 * @param partSize bytes per part (all but the last), at least 5 MiB for S3.
 * @param queueSize parts uploaded at once, at least 1.
 * @throws the stream's error, the first S3 error, or `signal.reason`.
 */
export async function streamToObject(
  client: S3Client,
  params: StreamedObjectParams,
  body: Readable,
  options: {
    partSize: number;
    queueSize: number;
    /** The storage's shared part buffers; default: a budget of this upload's own. */
    buffers?: PartBuffers;
    signal?: AbortSignal;
    onUploadId?: (uploadId: string) => void;
    onStored?: (bytes: number) => void;
    /**
     * Where CompleteMultipartUpload goes, and its first-byte limit in ms: the store may take long
     * to answer it on a large upload (AWS: minutes, sending whitespace meanwhile; Ceph RGW
     * assembles the part list first), so it can be given a client with a longer idle limit. A
     * timed-out Complete retried after the store finished answers NoSuchUpload: better not cut it
     * short. Default: `client` and its limits.
     */
    complete?: { client: S3Client; requestTimeout: number };
  },
): Promise<StreamedObject> {
  const { partSize, queueSize } = options;
  if (!(Number.isInteger(queueSize) && queueSize >= 1)) throw new RangeError(`queueSize must be a whole number >= 1, not ${queueSize}`);
  if (!(Number.isInteger(partSize) && partSize >= 1)) throw new RangeError(`partSize must be a whole number of bytes >= 1, not ${partSize}`);
  const cancel = new AbortController();
  const onAbort = () => fail(options.signal?.reason ?? new Error('upload aborted'));

  const buffers = options.buffers ?? new PartBuffers(queueSize);
  /** Buffers this upload holds (filling, held back, in flight): all given back when it ends. */
  const held = new Set<Buffer>();
  const inflight = new Set<Promise<void>>();
  const parts: CompletedPart[] = [];
  let failure: { error: unknown } | undefined;
  let uploadId: string | undefined;
  let partNumber = 0;
  let sizeBytes = 0;
  let acknowledged = 0;

  // fail() destroys `body` with the first error, possibly before the read loop below listens
  // (a signal that already fired): the loop and check() report it, not an unhandled 'error'.
  body.on('error', () => undefined);
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });

  /** Throws the first failure, if any (a part that failed while the stream was being read). */
  const check = () => {
    if (failure) throw failure.error;
  };
  // The first failure cancels the parts in flight and ends the read of `body` at once (not at
  // its next chunk: an idle producer must not hide a failed part).
  function fail(error: unknown): void {
    failure ??= { error };
    if (!cancel.signal.aborted) cancel.abort(error);
    if (!body.destroyed) body.destroy(error instanceof Error ? error : new Error(String(error)));
  }
  /** The first full part, held back until more data proves the object needs a multipart upload. */
  let first: Buffer | undefined;
  /**
   * The next buffer to fill. Holding none: wait for the shared budget. Holding some: another from
   * the budget while it allows (at most queueSize + 1 of our own), else one of ours back from a
   * part in flight; a held-back first part is sent first when it is all we hold, so an upload
   * always progresses on one buffer.
   */
  const takeBuffer = async (): Promise<Buffer> => {
    for (;;) {
      check();
      let b: Buffer | undefined;
      if (held.size === 0) b = await buffers.take(partSize, cancel.signal);
      else if (held.size < queueSize + 1) b = buffers.tryTake(partSize);
      if (b) {
        held.add(b);
        return b;
      }
      if (first) {
        await startMultipart();
        const f = first;
        first = undefined;
        await dispatch(f, partSize);
      }
      if (inflight.size) await Promise.race(inflight);
    }
  };
  const startMultipart = async () => {
    // Not cancelled at once: cut off, the store may still create the upload while its id never
    // reaches us, and it could not be aborted (the fault tests hit this with Ceph RGW). After a
    // cancellation it gets CREATE_GRACE_MS, so a store that never answers cannot hold the exit.
    const grace = afterAbort(options.signal, CREATE_GRACE_MS);
    let UploadId: string | undefined;
    try {
      ({ UploadId } = await client.send(new CreateMultipartUploadCommand(params as never), { abortSignal: grace.signal }));
    } finally {
      grace.dispose();
    }
    if (!UploadId) throw new Error(`CreateMultipartUpload for ${params.Key} returned no upload id`);
    uploadId = UploadId;
    options.onUploadId?.(UploadId);
  };
  /** Sends a part once fewer than `queueSize` are in flight. */
  const dispatch = async (buffer: Buffer, length: number) => {
    while (inflight.size >= queueSize) await Promise.race(inflight);
    check();
    sendPart(buffer, length);
  };
  const sendPart = (buffer: Buffer, length: number) => {
    const n = ++partNumber;
    if (n > MAX_PARTS) throw new Error(`the stream needs more than ${MAX_PARTS} parts of ${partSize} bytes: give a larger size hint`);
    const task = client
      .send(
        new UploadPartCommand({ ...pick(params, PART_FIELDS), Bucket: params.Bucket, Key: params.Key, UploadId: uploadId, PartNumber: n, Body: buffer.subarray(0, length), ContentLength: length } as never),
        { abortSignal: cancel.signal, requestTimeout: 0 },
      )
      .then(
        (out) => {
          if (!out.ETag) return fail(new Error(`UploadPart ${n} of ${params.Key} returned no ETag: the store (or a proxy) dropped it; the upload is aborted`));
          const part: CompletedPart = { PartNumber: n, ETag: out.ETag };
          if (out.ChecksumCRC32) part.ChecksumCRC32 = out.ChecksumCRC32;
          if (out.ChecksumCRC32C) part.ChecksumCRC32C = out.ChecksumCRC32C;
          if (out.ChecksumSHA1) part.ChecksumSHA1 = out.ChecksumSHA1;
          if (out.ChecksumSHA256) part.ChecksumSHA256 = out.ChecksumSHA256;
          parts.push(part);
          held.delete(buffer);
          buffers.give(buffer);
          acknowledged += length;
          options.onStored?.(acknowledged);
        },
        (err: unknown) => fail(err),
      )
      .finally(() => inflight.delete(task));
    inflight.add(task);
  };

  try {
    let current = await takeBuffer();
    let filled = 0;
    for await (const chunk of body as AsyncIterable<Buffer>) {
      check();
      sizeBytes += chunk.length;
      let offset = 0;
      while (offset < chunk.length) {
        if (first) {
          await startMultipart();
          await dispatch(first, partSize);
          first = undefined;
        }
        const n = chunk.copy(current, filled, offset);
        filled += n;
        offset += n;
        if (filled === partSize) {
          if (uploadId) await dispatch(current, partSize);
          else first = current;
          current = await takeBuffer();
          filled = 0;
        }
      }
    }
    check();
    if (!uploadId) {
      // The whole stream fits in one part: a single PutObject.
      const data = first ?? current.subarray(0, filled);
      const output = await client.send(new PutObjectCommand({ ...params, Body: data, ContentLength: data.length } as never), { abortSignal: cancel.signal, requestTimeout: 0 });
      options.onStored?.(data.length);
      return { sizeBytes, output };
    }
    // The last part may be shorter than partSize; a stream ending on a part boundary has none.
    if (filled > 0) await dispatch(current, filled);
    while (inflight.size) await Promise.race(inflight);
    check();
    parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
    const output = await (options.complete?.client ?? client).send(
      new CompleteMultipartUploadCommand({ ...pick(params, COMPLETE_FIELDS), Bucket: params.Bucket, Key: params.Key, UploadId: uploadId, MultipartUpload: { Parts: parts } } as never),
      { abortSignal: cancel.signal, ...(options.complete ? { requestTimeout: options.complete.requestTimeout } : {}) },
    );
    return { sizeBytes, uploadId, output };
  } catch (err) {
    fail(err);
    // Let the cancelled parts settle, then abort the upload by id on a fresh request.
    await Promise.allSettled([...inflight]);
    // Bounded, so an unreachable store cannot hold the failure (and pg_dump's snapshot) for long,
    // nor a cancelled run for more than a few seconds.
    if (uploadId) {
      const abort = new AbortMultipartUploadCommand({ Bucket: params.Bucket, Key: params.Key, UploadId: uploadId, ...(params.ExpectedBucketOwner ? { ExpectedBucketOwner: params.ExpectedBucketOwner as string } : {}) });
      await client.send(abort, { abortSignal: AbortSignal.timeout(options.signal?.aborted ? ABORT_ON_CANCEL_MS : ABORT_TIMEOUT_MS) }).catch(() => undefined);
    }
    throw failure ? failure.error : err;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    // Every buffer goes back to the budget; after a failure none is reused (a cancelled request
    // may still hold a reference to its part).
    await Promise.allSettled([...inflight]);
    for (const b of held) buffers.give(b, failure === undefined);
    held.clear();
  }
}
