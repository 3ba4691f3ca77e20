import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { openStorage } from '../../src/storage/index.ts';
import { MIN_PART_SIZE } from '../../src/storage/s3/s3.ts';
import { need, openMultipartUploads, s3Client, s3Get, s3Keys, s3Location } from '../helpers.ts';

const MiB = 1024 * 1024;
const settings = () => ({ endpoint: need('PGB_TEST_S3_ENDPOINT'), credentials: { accessKeyId: need('PGB_TEST_S3_ACCESS_KEY'), secretAccessKey: need('PGB_TEST_S3_SECRET_KEY') } });

/** A stream of `bytes` random bytes in chunks of odd sizes (so chunk and part boundaries never line up by accident). */
function randomStream(bytes: number, data = randomBytes(bytes)): { stream: Readable; sha256: string } {
  const sha256 = createHash('sha256').update(data).digest('hex');
  let offset = 0;
  const stream = new Readable({
    read() {
      if (offset >= data.length) return void this.push(null);
      const n = Math.min(65_521 + (offset % 7) * 1_000, data.length - offset);
      this.push(data.subarray(offset, offset + n));
      offset += n;
    },
  });
  return { stream, sha256 };
}

describe('S3 streamed upload on Ceph RGW (pooled part buffers)', () => {
  const sizes: [string, number, number][] = [
    ['empty', 0, 1],
    ['one byte', 1, 1],
    ['just under one part', MIN_PART_SIZE - 1, 1],
    ['exactly one part', MIN_PART_SIZE, 1],
    ['one part and a byte', MIN_PART_SIZE + 1, 2],
    ['exactly three parts', 3 * MIN_PART_SIZE, 3],
    ['seven and a half parts (more than the parts in flight)', 7.5 * MIN_PART_SIZE, 8],
  ];
  for (const [label, bytes, parts] of sizes) {
    it(`${label} (${bytes} bytes): stored byte for byte, in ${parts} part(s), nothing left open`, { timeout: 120_000 }, async () => {
      const to = s3Location('mp');
      const storage = openStorage(to, settings());
      const { stream, sha256 } = randomStream(bytes);
      const result = await storage.upload('obj.bin', stream, { noOverwrite: true });
      assert.equal(result.sizeBytes, bytes);
      const back = await s3Get(to, 'obj.bin');
      assert.equal(back.length, bytes);
      assert.equal(createHash('sha256').update(back).digest('hex'), sha256);
      const [bucket, ...rest] = to.replace('s3://', '').split('/');
      const head = await s3Client().send(new HeadObjectCommand({ Bucket: bucket, Key: `${rest.join('/')}/obj.bin` }));
      // A multipart object's ETag ends in -<parts>; a single PutObject's has no suffix.
      const suffix = /-(\d+)"?$/.exec(head.ETag ?? '')?.[1];
      assert.equal(suffix === undefined ? 1 : Number(suffix), parts, `ETag ${head.ETag}`);
      assert.deepEqual(await openMultipartUploads(to), []);
      assert.deepEqual(await s3Keys(to), ['obj.bin']);
    });
  }

  it('uploads running at once through one storage share its part buffers: all stored byte for byte, nothing left open', { timeout: 180_000 }, async () => {
    const to = s3Location('mp-shared');
    const storage = openStorage(to, settings());
    // Four uploads of 1 to 3.5 parts at once: more buffers wanted than the budget of queueSize + 1
    // (4), so uploads wait for buffers, send their held-back first part early, and reuse the
    // buffers of the others.
    const streams = [MIN_PART_SIZE + 7, 2.5 * MIN_PART_SIZE, 100_000, 3.5 * MIN_PART_SIZE].map((bytes) => ({ bytes, ...randomStream(bytes) }));
    const results = await Promise.all(streams.map((s, i) => storage.upload(`obj-${i}.bin`, s.stream, { noOverwrite: true })));
    assert.deepEqual(results.map((r) => r.sizeBytes), streams.map((s) => s.bytes));
    for (const [i, s] of streams.entries()) {
      const back = await s3Get(to, `obj-${i}.bin`);
      assert.equal(createHash('sha256').update(back).digest('hex'), s.sha256, `obj-${i}.bin`);
    }
    assert.deepEqual(await openMultipartUploads(to), []);
    assert.deepEqual((await s3Keys(to)).sort(), ['obj-0.bin', 'obj-1.bin', 'obj-2.bin', 'obj-3.bin']);
  });

  it('a stream that fails after several parts: the multipart upload is aborted, no object', { timeout: 120_000 }, async () => {
    const to = s3Location('mp-fail');
    const storage = openStorage(to, settings());
    let sent = 0;
    const stream = new Readable({
      read() {
        if (sent >= 12 * MiB) return void this.destroy(new Error('producer died'));
        this.push(randomBytes(256 * 1024));
        sent += 256 * 1024;
      },
    });
    await assert.rejects(storage.upload('obj.bin', stream), /producer died/);
    assert.deepEqual(await openMultipartUploads(to), []);
    assert.deepEqual(await s3Keys(to), []);
  });
});
