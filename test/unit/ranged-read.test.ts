// orderedRangeStream (src/storage/ranged.ts): the ranges of an object come back in order whatever
// order the store answers in, a body that breaks off is resumed where it broke, a failure that
// may not be retried (a changed object) ends the stream with that error, and destroying the
// stream cancels every range in flight. The store is a function over a Buffer here; the real
// store (Ceph RGW) is in test/integration/readback-ranges.test.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { orderedRangeStream, type RangeFetch } from '../../src/storage/ranged.ts';

/** Collects a stream into one Buffer. */
async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A body that yields `bytes` in chunks of `chunk`, each after `delayMs`, and fails after `failAfter` bytes when given. */
function body(bytes: Buffer, chunk: number, delayMs = 0, failAfter?: number): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (let i = 0; i < bytes.length; i += chunk) {
      if (failAfter !== undefined && i >= failAfter) throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      yield bytes.subarray(i, Math.min(bytes.length, i + chunk));
    }
  })();
}

const retryable = (err: unknown) => (err as { code?: string }).code === 'ECONNRESET';

describe('orderedRangeStream', () => {
  it('re-assembles ranges in order when later ranges answer first', async () => {
    const object = randomBytes(1_000_003);
    const asked: [number, number][] = [];
    const fetch: RangeFetch = async (start, end) => {
      asked.push([start, end]);
      // Earlier ranges are slower: they arrive after the later ones.
      return body(object.subarray(start, end), 7_001, start === 0 ? 0 : Math.max(0, 6 - start / 100_000));
    };
    const out = await collect(orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 4, initialWidth: 4, fetch, maxAttempts: 1, retryable }));
    assert.ok(out.equals(object), 'the bytes come back in order');
    assert.equal(asked.length, 11, 'eleven ranges of at most 100 000 bytes');
    assert.deepEqual(asked.at(-1), [1_000_000, 1_000_003], 'the last range is the short rest');
    for (const [s, e] of asked) assert.ok(e - s <= 100_000);
  });

  it('reads the first range from the body it is given, and asks the store for the rest only', async () => {
    const object = randomBytes(250_000);
    const asked: number[] = [];
    const fetch: RangeFetch = async (start, end) => {
      asked.push(start);
      return body(object.subarray(start, end), 10_000);
    };
    const out = await collect(orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 2, fetch, maxAttempts: 1, retryable, first: { body: body(object.subarray(0, 100_000), 10_000), end: 100_000 } }));
    assert.ok(out.equals(object));
    assert.deepEqual(asked, [100_000, 200_000]);
  });

  it('resumes a range whose body broke off from the byte where it broke, within maxAttempts', async () => {
    const object = randomBytes(300_000);
    const asked: { start: number; attempt: number }[] = [];
    const fetch: RangeFetch = async (start, end, _signal, attempt) => {
      asked.push({ start, attempt });
      // The middle range breaks after 30 000 bytes on its first two attempts.
      const fails = start >= 100_000 && start < 200_000 && attempt < 3;
      return body(object.subarray(start, end), 10_000, 0, fails ? 30_000 : undefined);
    };
    const out = await collect(orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 3, fetch, maxAttempts: 3, retryable, backoffMs: () => 1 }));
    assert.ok(out.equals(object), 'the resumed range fits seamlessly');
    const middle = asked.filter((a) => a.start >= 100_000 && a.start < 200_000);
    assert.deepEqual(middle, [
      { start: 100_000, attempt: 1 },
      { start: 130_000, attempt: 2 },
      { start: 160_000, attempt: 3 },
    ]);
  });

  it('fails with the error once a range used up its attempts', async () => {
    const object = randomBytes(200_000);
    const fetch: RangeFetch = async (start, end) => body(object.subarray(start, end), 10_000, 0, start === 100_000 ? 0 : undefined);
    const stream = orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 2, fetch, maxAttempts: 2, retryable, backoffMs: () => 1 });
    await assert.rejects(collect(stream), /socket hang up/);
  });

  it('does not retry an error the caller marks final (a changed object), and stops the other ranges', async () => {
    const object = randomBytes(500_000);
    let attempts = 0;
    const signals: AbortSignal[] = [];
    const fetch: RangeFetch = async (start, end, signal) => {
      signals.push(signal);
      if (start === 200_000) {
        attempts++;
        throw Object.assign(new Error('PreconditionFailed'), { name: 'PreconditionFailed' });
      }
      return body(object.subarray(start, end), 1_000, 2);
    };
    const retryUnlessChanged = (err: unknown) => (err as { name?: string }).name !== 'PreconditionFailed';
    const stream = orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 4, initialWidth: 4, fetch, maxAttempts: 4, retryable: retryUnlessChanged, backoffMs: () => 1 });
    await assert.rejects(collect(stream), /PreconditionFailed/);
    assert.equal(attempts, 1, 'a changed object is not asked for again');
    assert.ok(signals.every((s) => s.aborted), 'the ranges still in flight were cancelled');
  });

  it('destroying the stream aborts every range in flight', async () => {
    const object = randomBytes(400_000);
    const signals: AbortSignal[] = [];
    const fetch: RangeFetch = async (start, end, signal) => {
      signals.push(signal);
      return body(object.subarray(start, end), 1_000, 5);
    };
    const stream = orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 4, initialWidth: 4, fetch, maxAttempts: 1, retryable });
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    stream.destroy();
    assert.equal(signals.length, 4, 'four ranges were in flight');
    assert.ok(signals.every((s) => s.aborted), 'every range request saw the abort');
  });

  it('fails at once with the reason of an aborted signal', async () => {
    const object = randomBytes(300_000);
    const controller = new AbortController();
    const fetch: RangeFetch = async (start, end) => body(object.subarray(start, end), 1_000, 5);
    const stream = orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 2, fetch, maxAttempts: 3, retryable, signal: controller.signal });
    setTimeout(() => controller.abort(new Error('cancelled by SIGTERM')), 20);
    await assert.rejects(collect(stream), /cancelled by SIGTERM/);
  });

  it('refuses a range that sends more bytes than asked for', async () => {
    const object = randomBytes(200_000);
    const fetch: RangeFetch = async (start) => body(object.subarray(start, start + 150_000), 10_000);
    await assert.rejects(collect(orderedRangeStream({ totalBytes: object.length, rangeBytes: 100_000, concurrency: 1, fetch, maxAttempts: 1, retryable })), /more bytes than asked for/);
  });
});

describe('readRangeSettings', () => {
  it('reads PG_BACKUP_S3_READ_RANGE_SIZE and PG_BACKUP_S3_READ_CONCURRENCY, defaults 8 MiB and 1', async () => {
    const { readRangeSettings } = await import('../../src/storage/s3/s3.ts');
    assert.deepEqual(readRangeSettings({}), { rangeBytes: 8 * 1024 * 1024, concurrency: 1 });
    assert.deepEqual(readRangeSettings({ PG_BACKUP_S3_READ_RANGE_SIZE: '64KiB', PG_BACKUP_S3_READ_CONCURRENCY: '2' }), { rangeBytes: 65536, concurrency: 2 });
    assert.equal(readRangeSettings({ PG_BACKUP_S3_READ_RANGE_SIZE: '16mib' }).rangeBytes, 16 * 1024 * 1024);
    for (const bad of ['1KiB', '2GiB', 'lots', '-1']) {
      assert.throws(() => readRangeSettings({ PG_BACKUP_S3_READ_RANGE_SIZE: bad }), (err: Error) => err.name === 'UsageError' && /PG_BACKUP_S3_READ_RANGE_SIZE=.* must be a size from 64KiB to 1GiB/.test(err.message));
    }
    for (const bad of ['0', '33', '1.5']) {
      assert.throws(() => readRangeSettings({ PG_BACKUP_S3_READ_CONCURRENCY: bad }), /PG_BACKUP_S3_READ_CONCURRENCY=.* must be a whole number from 1 to 32/);
    }
  });
});
