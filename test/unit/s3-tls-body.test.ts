import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { S3Storage, TLS_WRITE_BYTES } from '../../src/storage/s3/s3.ts';

// Unit level: what body the S3 client's HTTP handler is given for a PutObject, over HTTPS and over
// HTTP. The handler is replaced (no packet leaves the process); the same path runs against Ceph
// RGW over HTTPS, with connections reset mid-part, in test/integration/s3-multipart.test.ts.

interface Seen {
  body: unknown;
  chunks: Buffer[];
}

/**
 * Replaces `storage`'s HTTP handler: each attempt's body is recorded (a stream is read to its end);
 * the first `failures` attempts fail as a reset connection would, the next one answers 200.
 */
function fakeHandler(storage: S3Storage, failures: number): Seen[] {
  const seen: Seen[] = [];
  const handler = storage.client.config.requestHandler as unknown as { handle: (request: { body?: unknown }) => Promise<unknown> };
  handler.handle = async (request) => {
    const entry: Seen = { body: request.body, chunks: [] };
    seen.push(entry);
    if (request.body instanceof Readable) for await (const chunk of request.body) entry.chunks.push(chunk as Buffer);
    if (seen.length <= failures) throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    return { response: { statusCode: 200, reason: 'OK', headers: { etag: '"0"' }, body: Readable.from([]) } };
  };
  return seen;
}

const credentials = { accessKeyId: 'k', secretAccessKey: 's' };

describe('request bodies over TLS', () => {
  it('over HTTPS a large body goes as a stream of slices of at most TLS_WRITE_BYTES, made again for each attempt: a retry sends it whole', async () => {
    const storage = new S3Storage('b', '', { endpoint: 'https://127.0.0.1:9', credentials });
    const seen = fakeHandler(storage, 1);
    const data = randomBytes(2 * TLS_WRITE_BYTES + 12_345);
    await storage.put('obj.bin', data);
    assert.equal(seen.length, 2, 'one failed attempt, one retry');
    for (const [i, s] of seen.entries()) {
      assert.ok(s.body instanceof Readable, `attempt ${i + 1}: a stream, not one write`);
      assert.deepEqual(s.chunks.map((c) => c.length), [TLS_WRITE_BYTES, TLS_WRITE_BYTES, 12_345]);
      assert.ok(Buffer.concat(s.chunks).equals(data), `attempt ${i + 1} carries the whole body`);
    }
    assert.notEqual(seen[0]!.body, seen[1]!.body, 'each attempt has its own stream');
  });

  it('over HTTPS a body of at most TLS_WRITE_BYTES, and over HTTP any body, is handed over as it is', async () => {
    const small = new S3Storage('b', '', { endpoint: 'https://127.0.0.1:9', credentials });
    const seenSmall = fakeHandler(small, 0);
    const data = randomBytes(TLS_WRITE_BYTES);
    await small.put('small.bin', data);
    assert.ok(!(seenSmall[0]!.body instanceof Readable));
    assert.ok(Buffer.from(seenSmall[0]!.body as Uint8Array).equals(data));

    const plain = new S3Storage('b', '', { endpoint: 'http://127.0.0.1:9', credentials });
    const seenPlain = fakeHandler(plain, 0);
    const big = randomBytes(3 * TLS_WRITE_BYTES);
    await plain.put('big.bin', big);
    assert.ok(!(seenPlain[0]!.body instanceof Readable), 'over HTTP the socket writes from the buffer');
    assert.ok(Buffer.from(seenPlain[0]!.body as Uint8Array).equals(big));
  });
});
