import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { streamToObject } from '../../src/storage/s3/multipart.ts';

// A stand-in for S3Client.send (a unit test: the real store is exercised in
// test/integration/s3-multipart.test.ts and by every dump test): records each command, holds
// UploadParts for a few ms, and can fail one part.
function fakeClient(options: { failPart?: number; noEtagPart?: number } = {}) {
  const log: { command: string; partNumber?: number; body?: Uint8Array }[] = [];
  let inflight = 0;
  let maxInflight = 0;
  const client = {
    async send(command: { constructor: { name: string }; input: Record<string, unknown> }, sendOptions?: { abortSignal?: AbortSignal }) {
      const name = command.constructor.name;
      const input = command.input;
      log.push({ command: name, partNumber: input.PartNumber as number | undefined, body: input.Body as Uint8Array | undefined });
      if (name === 'CreateMultipartUploadCommand') return { UploadId: 'u-1' };
      if (name === 'UploadPartCommand') {
        inflight++;
        maxInflight = Math.max(maxInflight, inflight);
        try {
          await new Promise((resolve, reject) => {
            const t = setTimeout(resolve, 5);
            sendOptions?.abortSignal?.addEventListener('abort', () => {
              clearTimeout(t);
              reject(sendOptions.abortSignal!.reason);
            });
          });
          if (input.PartNumber === options.failPart) throw Object.assign(new Error('InternalError'), { name: 'InternalError' });
          return input.PartNumber === options.noEtagPart ? {} : { ETag: `"e${input.PartNumber}"` };
        } finally {
          inflight--;
        }
      }
      return {};
    },
  };
  return { client: client as unknown as S3Client, log, maxInflight: () => maxInflight };
}

const chunks = (total: number, size = 100) => Readable.from((function* () {
  for (let i = 0; i < total; i += size) yield Buffer.alloc(Math.min(size, total - i), i % 251);
})());

describe('streamToObject', () => {
  it('keeps at most queueSize parts in flight, reuses queueSize + 1 buffers, and completes the parts in order', async () => {
    const f = fakeClient();
    const out = await streamToObject(f.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, chunks(10_450, 333), { partSize: 1_000, queueSize: 3 });
    assert.equal(out.sizeBytes, 10_450);
    assert.equal(out.uploadId, 'u-1');
    assert.ok(f.maxInflight() <= 3, `max in flight ${f.maxInflight()}`);
    const parts = f.log.filter((l) => l.command === 'UploadPartCommand');
    assert.deepEqual(parts.map((p) => p.partNumber), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert.deepEqual(parts.map((p) => p.body!.length), [...Array(10).fill(1_000), 450]);
    assert.ok(new Set(parts.map((p) => p.body!.buffer)).size <= 4, 'part buffers come from a pool of queueSize + 1');
    const complete = f.log.at(-1)!;
    assert.equal(complete.command, 'CompleteMultipartUploadCommand');
  });

  it('a stream of exactly one part is one PutObject; exactly two parts make two parts and no empty third', async () => {
    const one = fakeClient();
    await streamToObject(one.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, chunks(1_000, 250), { partSize: 1_000, queueSize: 2 });
    assert.deepEqual(one.log.map((l) => l.command), ['PutObjectCommand']);
    const two = fakeClient();
    await streamToObject(two.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, chunks(2_000, 250), { partSize: 1_000, queueSize: 2 });
    assert.deepEqual(two.log.map((l) => l.command), ['CreateMultipartUploadCommand', 'UploadPartCommand', 'UploadPartCommand', 'CompleteMultipartUploadCommand']);
  });

  it('a failed part cancels the others, aborts the upload by id, never completes, and rejects with its error', async () => {
    const f = fakeClient({ failPart: 3 });
    await assert.rejects(streamToObject(f.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, chunks(20_000, 500), { partSize: 1_000, queueSize: 3 }), /InternalError/);
    const names = f.log.map((l) => l.command);
    assert.equal(names.at(-1), 'AbortMultipartUploadCommand');
    assert.ok(!names.includes('CompleteMultipartUploadCommand'));
    assert.ok(names.filter((n) => n === 'UploadPartCommand').length < 20, 'reading stopped after the failure');
  });

  it('an abort signal stops the upload and aborts it', async () => {
    const f = fakeClient();
    const controller = new AbortController();
    const slow = new Readable({ read() {} });
    const p = streamToObject(f.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, slow, { partSize: 1_000, queueSize: 2, signal: controller.signal });
    slow.push(Buffer.alloc(2_500));
    await new Promise((r) => setTimeout(r, 20));
    controller.abort(new Error('cancelled by the test'));
    slow.destroy(new Error('cancelled by the test'));
    await assert.rejects(p, /cancelled by the test/);
    assert.equal(f.log.at(-1)!.command, 'AbortMultipartUploadCommand');
  });

  it('a part that fails while the producer is idle fails the upload at once, and destroys the stream', async () => {
    for (const opts of [{ failPart: 1 }, { noEtagPart: 1 }]) {
      const f = fakeClient(opts);
      const idle = new Readable({ read() {} });
      const p = streamToObject(f.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, idle, { partSize: 1_000, queueSize: 2 });
      idle.push(Buffer.alloc(1_500)); // part 1 goes out; then the producer says nothing more
      await assert.rejects(p, opts.failPart ? /InternalError/ : /returned no ETag/);
      assert.ok(idle.destroyed, 'the stream was destroyed');
      assert.equal(f.log.at(-1)!.command, 'AbortMultipartUploadCommand');
    }
  });

  it('refuses a queue size below 1 instead of waiting forever', async () => {
    await assert.rejects(streamToObject(fakeClient().client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, chunks(10), { partSize: 1_000, queueSize: 0 }), /queueSize/);
  });
});
