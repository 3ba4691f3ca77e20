import { Readable } from 'node:stream';

/**
 * Reads one byte range of an object: the bytes `[start, end)` (end exclusive) as a stream.
 * `attempt` counts from 1 for each range. Rejects (or its stream fails) with the store's error.
 */
export type RangeFetch = (start: number, end: number, signal: AbortSignal, attempt: number) => Promise<AsyncIterable<Uint8Array>>;

/** Options of {@link orderedRangeStream}. */
export interface OrderedRangeOptions {
  /** The object's size in bytes. */
  totalBytes: number;
  /** Bytes per range (the last one is shorter); at least 1. */
  rangeBytes: number;
  /**
   * Ranges read at most at once; each holds at most `rangeBytes` in memory. At least 1. The
   * stream starts with one range in flight and widens by one (up to this) after two ranges in
   * a row during which the consumer spent over half of the time waiting mid-body for bytes that
   * had not arrived yet: then one connection, not the consumer, is the bottleneck. (Measured on
   * loopback: more ranges in flight than needed cost memory and CPU and gain nothing.)
   */
  concurrency: number;
  fetch: RangeFetch;
  /** Ranges in flight from the start (default 1; at most `concurrency`). */
  initialWidth?: number;
  /**
   * The body of the first range, already open (`[0, firstEnd)`): the request that learned the
   * object's size and ETag. Read as range 0; if it breaks, the rest of it is fetched again.
   */
  first?: { body: AsyncIterable<Uint8Array>; end: number };
  /** Attempts per range, the first included (a body that breaks off is resumed where it broke). */
  maxAttempts: number;
  /** Whether an error of a range's request or body may be retried (a reset, a timeout); a changed object or an abort may not. */
  retryable: (err: unknown) => boolean;
  /** Waits before attempt `attempt` (2, 3, …) of a range; default: 100 ms × 2^(attempt-2), at most 5 s. */
  backoffMs?: (attempt: number) => number;
  /** Aborting it stops every range in flight; the stream fails with its reason. */
  signal?: AbortSignal;
  /** Turns the error the stream fails with into the one its reader sees (one line naming the object). Default: the error itself. */
  describeError?: (err: unknown) => Error;
}

/** Bytes the range being emitted may hold ahead of the consumer before its read waits: 512 KiB. */
const HEAD_BUFFER_BYTES = 512 * 1024;

/** One range being read: the chunks not yet emitted, and whether it is complete. */
interface Slot {
  start: number;
  end: number;
  /** The chunks received and not yet emitted. */
  chunks: Buffer[];
  /** Bytes received so far. */
  received: number;
  /** Bytes received and not yet emitted. */
  pending: number;
  /** Resumes the read of the range being emitted once the consumer took its bytes. */
  resume?: () => void;
  done: boolean;
  error?: unknown;
  wake?: () => void;
}

/**
 * An object read as consecutive byte ranges, up to `concurrency` of them in flight, re-assembled in
 * order into one stream (the way `aws s3 cp` and rclone's multi-thread download read large
 * objects; HTTP range requests: RFC 9110 §14, S3 GetObject `Range`). The range being emitted is
 * read as the consumer takes it (at most 512 KiB ahead, back-pressure on its connection); each
 * range ahead of it is read to its end as fast as the store sends it, into memory of at most
 * `rangeBytes`: the memory bound is `concurrency × rangeBytes` whatever the object's size, and a
 * slow consumer only stops new ranges from starting. A range whose request or body fails with a retryable error is fetched
 * again from the byte where it broke, up to `maxAttempts` times; any other failure (or an abort)
 * destroys the stream with that error and cancels every range in flight. Destroying the stream
 * cancels them too. Emits the bytes in order, in the chunks the network delivered.
 */
export function orderedRangeStream(options: OrderedRangeOptions): Readable {
  const { totalBytes, rangeBytes, concurrency, fetch, maxAttempts, retryable } = options;
  if (!(rangeBytes >= 1) || !(concurrency >= 1) || !(maxAttempts >= 1)) throw new Error('orderedRangeStream: rangeBytes, concurrency and maxAttempts must be at least 1');
  const backoff = options.backoffMs ?? ((attempt: number) => Math.min(5_000, 100 * 2 ** (attempt - 2)));
  const controller = new AbortController();
  // An abort also releases the reads waiting for the consumer.
  controller.signal.addEventListener('abort', () => {
    for (const slot of slots) slot.resume?.();
  }, { once: true });
  const stop = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) stop();
  options.signal?.addEventListener('abort', stop, { once: true });

  const slots: Slot[] = [];
  let next = 0;
  /** Ranges in flight allowed now: grows while the consumer waits on the network. */
  let width = Math.min(concurrency, Math.max(1, options.initialWidth ?? 1));
  let firstBody = options.first;
  let failed: { error: unknown } | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((resolve, reject) => {
      if (controller.signal.aborted) return reject(controller.signal.reason);
      const t = setTimeout(() => {
        controller.signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(controller.signal.reason);
      };
      controller.signal.addEventListener('abort', onAbort, { once: true });
    });

  /** Reads one range to its end into `slot.chunks`, resuming after a retryable break. */
  const read = async (slot: Slot, body?: AsyncIterable<Uint8Array>) => {
    let offset = slot.start;
    for (let attempt = 1; ; attempt++) {
      try {
        if (attempt > 1) await sleep(backoff(attempt));
        const source = body ?? (await fetch(offset, slot.end, controller.signal, attempt));
        body = undefined;
        for await (const chunk of source) {
          if (controller.signal.aborted) throw controller.signal.reason;
          const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          if (offset + buf.length > slot.end) throw new Error(`the store sent more bytes than asked for (range ${slot.start}-${slot.end - 1})`);
          slot.chunks.push(buf);
          offset += buf.length;
          slot.received += buf.length;
          slot.pending += buf.length;
          slot.wake?.();
          // The range being emitted follows the consumer (back-pressure on its connection, as a
          // single GET would); only the ranges ahead of it fill their buffers.
          while (slots[0] === slot && slot.pending > HEAD_BUFFER_BYTES && !controller.signal.aborted) {
            await new Promise<void>((resolve) => (slot.resume = resolve));
          }
        }
        if (offset !== slot.end) throw Object.assign(new Error(`the store ended range ${slot.start}-${slot.end - 1} after ${offset - slot.start} bytes`), { code: 'ECONNRESET' });
        return;
      } catch (err) {
        body = undefined;
        if (controller.signal.aborted || attempt >= maxAttempts || !retryable(err)) throw controller.signal.aborted ? controller.signal.reason : err;
      }
    }
  };

  const launch = () => {
    while (!failed && slots.length < width && next < totalBytes) {
      const end = firstBody ? Math.min(firstBody.end, totalBytes) : Math.min(next + rangeBytes, totalBytes);
      const slot: Slot = { start: next, end, chunks: [], received: 0, pending: 0, done: false };
      const body = firstBody?.body;
      firstBody = undefined;
      next = end;
      slots.push(slot);
      read(slot, body).then(
        () => {
          slot.done = true;
          slot.wake?.();
        },
        (error: unknown) => {
          slot.error = error;
          slot.done = true;
          failed ??= { error };
          controller.abort(error); // the first failure cancels every other range
          slot.wake?.();
        },
      );
    }
  };

  let starvedMs = 0;
  let starvedRanges = 0;
  let rangeFrom = performance.now();
  async function* ordered(): AsyncGenerator<Buffer> {
    try {
      launch();
      while (slots.length) {
        const slot = slots[0]!;
        while (true) {
          if (slot.chunks.length) {
            const chunk = slot.chunks.shift()!;
            slot.pending -= chunk.length;
            if (slot.pending <= HEAD_BUFFER_BYTES && slot.resume) {
              const resume = slot.resume;
              slot.resume = undefined;
              resume();
            }
            yield chunk;
            continue;
          }
          if (failed) throw failed.error;
          if (controller.signal.aborted) throw controller.signal.reason;
          if (slot.done) break;
          const waitFrom = performance.now();
          await new Promise<void>((resolve) => (slot.wake = resolve));
          slot.wake = undefined;
          if (slot.received > 0 && slot.chunks.length) starvedMs += performance.now() - waitFrom;
        }
        // The consumer waited on the network for over half of this range's time: one
        // connection is the bottleneck, read one more range ahead.
        const rangeMs = performance.now() - rangeFrom;
        // Two ranges in a row (the first also waits for start-up, so it does not count): a
        // passing stall (a busy store, a busy CPU) adds no connection.
        starvedRanges = slot.start > 0 && starvedMs > rangeMs / 2 ? starvedRanges + 1 : 0;
        if (width < concurrency && starvedRanges >= 2) {
          width++;
          starvedRanges = 0;
        }
        starvedMs = 0;
        rangeFrom = performance.now();
        slots.shift();
        launch();
      }
    } finally {
      options.signal?.removeEventListener('abort', stop);
      if (!controller.signal.aborted) controller.abort(new Error('the read was stopped'));
    }
  }
  // Driven by hand rather than with Readable.from(): destroying the stream must cancel the
  // ranges in flight at once, not after the generator's next step.
  const chunks = ordered();
  let pumping = false;
  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      while (!stream.destroyed) {
        const { value, done } = await chunks.next();
        if (done) {
          stream.push(null);
          return;
        }
        if (!stream.push(value)) return;
      }
    } catch (err) {
      stream.destroy(options.describeError ? options.describeError(err) : (err as Error));
    } finally {
      pumping = false;
    }
  };
  const stream: Readable = new Readable({
    highWaterMark: 256 * 1024,
    read() {
      void pump();
    },
    destroy(err, callback) {
      if (!controller.signal.aborted) controller.abort(err ?? new Error('the read was stopped'));
      options.signal?.removeEventListener('abort', stop);
      callback(err);
    },
  });
  return stream;
}
