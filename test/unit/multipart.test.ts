import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { PartBuffers, streamToObject } from '../../src/storage/s3/multipart.ts';

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

  it('a signal that fired before the upload starts: rejects with its reason, the stream destroyed, no unhandled error event', async () => {
    const f = fakeClient();
    const controller = new AbortController();
    controller.abort(new Error('cancelled before the start'));
    const idle = new Readable({ read() {} });
    await assert.rejects(streamToObject(f.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, idle, { partSize: 1_000, queueSize: 2, signal: controller.signal }), /cancelled before the start/);
    assert.ok(idle.destroyed);
    assert.deepEqual(f.log, [], 'nothing was sent');
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

describe('PartBuffers (one budget for the uploads of a storage)', () => {
  it('uploads running at once share queueSize + 1 buffers, and all complete with the right parts', async () => {
    const budget = new PartBuffers(3);
    const clients = [fakeClient(), fakeClient(), fakeClient()];
    const outs = await Promise.all(clients.map((f, i) => streamToObject(f.client, { Bucket: 'b', Key: `k${i}`, ContentType: 'x' }, chunks(9_300 + i * 1_000, 300), { partSize: 1_000, queueSize: 3, buffers: budget })));
    assert.deepEqual(outs.map((o) => o.sizeBytes), [9_300, 10_300, 11_300]);
    const buffers = new Set(clients.flatMap((f) => f.log.filter((l) => l.body).map((l) => l.body!.buffer)));
    assert.ok(buffers.size <= 4, `${buffers.size} part buffers for three uploads at once (budget 4)`);
    for (const [i, f] of clients.entries()) {
      const parts = f.log.filter((l) => l.command === 'UploadPartCommand');
      assert.equal(parts.reduce((n, p) => n + p.body!.length, 0), 9_300 + i * 1_000);
      assert.equal(f.log.at(-1)!.command, 'CompleteMultipartUploadCommand');
    }
    assert.equal(budget.outBytes, 0, 'every buffer was given back');
    assert.ok(budget.allocatedBytes <= 4_000);
  });

  it('a later upload reuses the buffers of an earlier one instead of allocating', async () => {
    const budget = new PartBuffers(2);
    const a = fakeClient();
    await streamToObject(a.client, { Bucket: 'b', Key: 'a', ContentType: 'x' }, chunks(500), { partSize: 1_000, queueSize: 2, buffers: budget });
    const b = fakeClient();
    await streamToObject(b.client, { Bucket: 'b', Key: 'b', ContentType: 'x' }, chunks(700), { partSize: 1_000, queueSize: 2, buffers: budget });
    assert.equal(a.log[0]!.body!.buffer, b.log[0]!.body!.buffer, 'the same buffer served both PutObjects');
    assert.equal(budget.allocatedBytes, 1_000);
  });

  it('an upload waiting for its first buffer is served when another gives one back, and a cancelled wait leaves the budget whole', async () => {
    const budget = new PartBuffers(1);
    const held = [budget.tryTake(1_000)!, budget.tryTake(1_000)!];
    assert.equal(budget.tryTake(1_000), undefined, 'the budget of 2 is spent');
    const waiting = budget.take(1_000);
    const cancel = new AbortController();
    const cancelled = budget.take(1_000, cancel.signal);
    cancel.abort(new Error('stop waiting'));
    await assert.rejects(cancelled, /stop waiting/);
    budget.give(held[0]!);
    assert.equal(await waiting, held[0], 'the waiter got the buffer given back');
    assert.equal(budget.tryTake(1_000), undefined, 'still spent: the waiter holds it');
    budget.give(held[1]!, false);
    assert.equal(budget.outBytes, 1_000);
    assert.equal(budget.allocatedBytes, 1_000, 'a buffer given back without reuse is not kept');
  });

  it('free buffers of another part size make room, and buffers out of another size make a smaller part wait', () => {
    const budget = new PartBuffers(1);
    const large = [budget.tryTake(3_000)!, budget.tryTake(3_000)!];
    assert.equal(budget.tryTake(1_000), undefined, '6 000 bytes out: over the 2 000 a 1 000-byte part allows');
    for (const b of large) budget.give(b);
    assert.equal(budget.allocatedBytes, 6_000, 'kept free for reuse');
    assert.equal(budget.tryTake(1_000)?.length, 1_000);
    assert.equal(budget.allocatedBytes, 1_000, 'the free 3 000-byte buffers were dropped to make room');
  });
});
