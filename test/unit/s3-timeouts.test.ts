import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { startProgress } from '../../src/backup/progress.ts';
import { UsageError } from '../../src/errors.ts';
import type { Logger } from '../../src/log.ts';
import { streamToObject } from '../../src/storage/s3/multipart.ts';
import { DEFAULT_S3_TIMEOUTS, S3Storage, mapS3Error, s3Timeouts, silentEndpointBoundMs } from '../../src/storage/s3/s3.ts';

// Unit level: the S3 client's resolved limits (the 2-minute bound is proven here, from the
// configuration the SDK actually holds, instead of by a 2-minute run), the error lines, the
// uploader's cancellation bounds and what "stored" counts. The same behaviours run against real
// processes in test/integration/blackhole.test.ts.

/** The NodeHttpHandler settings and retry settings a client resolved. */
async function resolved(storage: S3Storage, client: S3Client = storage.client) {
  const handler = client.config.requestHandler as unknown as { configProvider: Promise<Record<string, unknown>> };
  const config = await handler.configProvider;
  return { handler: config, maxAttempts: await client.config.maxAttempts(), retryMode: typeof client.config.retryMode === 'function' ? await client.config.retryMode() : client.config.retryMode };
}

describe('S3 limits', () => {
  it('defaults: connect 10 s, first byte 20 s, idle 20 s (reads 120 s), 4 attempts, standard retries: a silent endpoint fails within 2 minutes', async () => {
    const storage = new S3Storage('b', '', { endpoint: 'http://127.0.0.1:9' });
    const r = await resolved(storage);
    assert.equal(r.handler.connectionTimeout, 10_000);
    assert.equal(r.handler.requestTimeout, 20_000);
    assert.equal(r.handler.throwOnRequestTimeout, true, 'requestTimeout only warns unless throwOnRequestTimeout is set');
    assert.equal(r.handler.socketTimeout, 20_000);
    assert.equal(r.maxAttempts, 4);
    assert.equal(r.retryMode, 'standard');
    const read = await resolved(storage, storage.readClient);
    assert.equal(read.handler.socketTimeout, 120_000, 'a body being read may pause longer (the reader waits on a lock)');
    assert.equal(read.handler.requestTimeout, 20_000);
    assert.equal(read.handler.connectionTimeout, 10_000);
    assert.equal(read.maxAttempts, 4);
    assert.deepEqual(storage.timeouts, DEFAULT_S3_TIMEOUTS);
    const bound = silentEndpointBoundMs(storage.timeouts);
    assert.ok(bound <= 120_000, `a silent endpoint may take ${bound} ms`);
    assert.ok(bound >= 60_000, 'and is not cut so short that a slow store fails');
  });

  it('PG_BACKUP_S3_* override each limit; a bad value is a usage error naming the variable', () => {
    const t = s3Timeouts({ PG_BACKUP_S3_CONNECT_TIMEOUT: '2s', PG_BACKUP_S3_FIRST_BYTE_TIMEOUT: '500ms', PG_BACKUP_S3_IDLE_TIMEOUT: '1m', PG_BACKUP_S3_READ_IDLE_TIMEOUT: '5m', PG_BACKUP_S3_MAX_ATTEMPTS: '2' });
    assert.deepEqual(t, { connectMs: 2_000, firstByteMs: 500, idleMs: 60_000, readIdleMs: 300_000, maxAttempts: 2 });
    assert.throws(() => s3Timeouts({ PG_BACKUP_S3_IDLE_TIMEOUT: 'soon' }), (e: Error) => e instanceof UsageError && /PG_BACKUP_S3_IDLE_TIMEOUT/.test(e.message));
    assert.throws(() => s3Timeouts({ PG_BACKUP_S3_MAX_ATTEMPTS: '0' }), (e: Error) => e instanceof UsageError && /PG_BACKUP_S3_MAX_ATTEMPTS/.test(e.message));
    assert.throws(() => s3Timeouts({ PG_BACKUP_S3_CONNECT_TIMEOUT: '0s' }), UsageError);
  });

  it('the client of every request carries the overridden limits', async () => {
    const saved = process.env.PG_BACKUP_S3_FIRST_BYTE_TIMEOUT;
    process.env.PG_BACKUP_S3_FIRST_BYTE_TIMEOUT = '3s';
    try {
      const r = await resolved(new S3Storage('b', '', { endpoint: 'http://127.0.0.1:9' }));
      assert.equal(r.handler.requestTimeout, 3_000);
    } finally {
      if (saved === undefined) delete process.env.PG_BACKUP_S3_FIRST_BYTE_TIMEOUT;
      else process.env.PG_BACKUP_S3_FIRST_BYTE_TIMEOUT = saved;
    }
  });

  it('a timeout becomes one line naming the endpoint and what did not answer: exit 2 before any answer, 1 after', () => {
    const ctx = { endpoint: 'https://s3.example', answered: false, timeouts: DEFAULT_S3_TIMEOUTS };
    const ttfb = Object.assign(new Error('@smithy/node-http-handler - [ERROR] a request has exceeded the configured 20000 ms requestTimeout.'), { name: 'TimeoutError', code: 'ETIMEDOUT', $metadata: { attempts: 4 } });
    const never = mapS3Error(ttfb, 's3://b/p/', 'list', ctx);
    assert.ok(never instanceof UsageError);
    assert.equal(never.message.split('\n').length, 1);
    assert.match(never.message, /^the S3 endpoint https:\/\/s3\.example did not start answering within 20 s on list of s3:\/\/b\/p\/ \(4 attempts\); it never answered/);
    const idle = Object.assign(new Error('@smithy/node-http-handler - the request socket timed out after 20000 ms of inactivity (configured by client requestHandler).'), { name: 'TimeoutError', $metadata: { attempts: 4 } });
    const later = mapS3Error(idle, 's3://b/k', 'write', { ...ctx, answered: true });
    assert.ok(!(later instanceof UsageError));
    assert.match(later.message, /went silent \(no byte for 20 s\) on write of s3:\/\/b\/k \(4 attempts\): it answered earlier/);
    const connect = Object.assign(new Error('@smithy/node-http-handler - the request socket did not establish a connection with the server within the configured timeout of 10000 ms.'), { name: 'TimeoutError' });
    assert.match(mapS3Error(connect, 's3://b/k', 'read', ctx).message, /did not accept a connection within 10 s/);
    // A reset is not a timeout, though the handler names it TimeoutError too.
    const reset = Object.assign(new Error('socket hang up'), { name: 'TimeoutError', code: 'ECONNRESET' });
    assert.match(mapS3Error(reset, 's3://b/k', 'write', ctx).message, /the connection broke \(ECONNRESET\)/);
    // A request cancelled by the command's signal reports the signal's reason.
    const reason = new UsageError('cancelled by SIGTERM');
    assert.equal(mapS3Error(Object.assign(new Error('Request aborted'), { name: 'AbortError', cause: reason }), 's3://b/k', 'list', ctx), reason);
  });
});

/** An S3Client stand-in whose requests never answer (until aborted); records each command. */
function silentClient() {
  const log: { command: string; signal?: AbortSignal; requestTimeout?: number }[] = [];
  const client = {
    send(command: { constructor: { name: string } }, options?: { abortSignal?: AbortSignal; requestTimeout?: number }) {
      log.push({ command: command.constructor.name, signal: options?.abortSignal, requestTimeout: options?.requestTimeout });
      return new Promise((_, reject) => {
        const s = options?.abortSignal;
        const onAbort = () => reject(Object.assign(new Error('Request aborted'), { name: 'AbortError', cause: s!.reason }));
        if (s?.aborted) onAbort();
        else s?.addEventListener('abort', onAbort, { once: true });
      });
    },
  };
  return { client: client as unknown as S3Client, log };
}

describe('uploader: cancellation and acknowledged bytes', () => {
  it('a CreateMultipartUpload that never answers gets a grace of about 3 s after a cancellation, then the upload rejects', async () => {
    const f = silentClient();
    const controller = new AbortController();
    const body = new Readable({ read() {} });
    body.push(Buffer.alloc(2_500));
    const p = streamToObject(f.client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, body, { partSize: 1_000, queueSize: 2, signal: controller.signal });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(f.log.map((l) => l.command), ['CreateMultipartUploadCommand']);
    const cancelledAt = Date.now();
    controller.abort(new Error('cancelled by SIGTERM'));
    await assert.rejects(p, /cancelled by SIGTERM/);
    const took = Date.now() - cancelledAt;
    assert.ok(took >= 2_500 && took < 6_000, `settled ${took} ms after the cancellation`);
  });

  it('parts carry no first-byte limit (requestTimeout 0: the idle limit bounds the send), and onStored counts only acknowledged parts', async () => {
    const stored: number[] = [];
    const log: { command: string; requestTimeout?: number }[] = [];
    const client = {
      async send(command: { constructor: { name: string }; input: Record<string, unknown> }, options?: { requestTimeout?: number }) {
        const name = command.constructor.name;
        log.push({ command: name, requestTimeout: options?.requestTimeout });
        if (name === 'CreateMultipartUploadCommand') return { UploadId: 'u' };
        if (name === 'UploadPartCommand') return command.input.PartNumber === 3 ? {} : { ETag: `"e${command.input.PartNumber}"` };
        return {};
      },
    } as unknown as S3Client;
    const body = Readable.from([Buffer.alloc(1_000), Buffer.alloc(1_000), Buffer.alloc(1_000), Buffer.alloc(1_000)]);
    await assert.rejects(streamToObject(client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, body, { partSize: 1_000, queueSize: 1, onStored: (n) => stored.push(n) }), /returned no ETag/);
    assert.deepEqual(stored, [1_000, 2_000], 'part 3 came back without an ETag: never counted');
    assert.ok(log.filter((l) => l.command === 'UploadPartCommand').every((l) => l.requestTimeout === 0));
    const small: number[] = [];
    await streamToObject(client, { Bucket: 'b', Key: 'k', ContentType: 'x' }, Readable.from([Buffer.alloc(300)]), { partSize: 1_000, queueSize: 1, onStored: (n) => small.push(n) });
    assert.deepEqual(small, [300]);
  });

  it('CompleteMultipartUpload goes to the patient client with its long first-byte limit', async () => {
    const sent: string[] = [];
    const make = (label: string) =>
      ({
        async send(command: { constructor: { name: string }; input: Record<string, unknown> }, options?: { requestTimeout?: number }) {
          sent.push(`${label}:${command.constructor.name}${options?.requestTimeout !== undefined ? `:${options.requestTimeout}` : ''}`);
          if (command.constructor.name === 'CreateMultipartUploadCommand') return { UploadId: 'u' };
          if (command.constructor.name === 'UploadPartCommand') return { ETag: '"e"' };
          return {};
        },
      }) as unknown as S3Client;
    await streamToObject(make('main'), { Bucket: 'b', Key: 'k', ContentType: 'x' }, Readable.from([Buffer.alloc(1_500)]), { partSize: 1_000, queueSize: 1, complete: { client: make('patient'), requestTimeout: 120_000 } });
    assert.deepEqual(sent, ['main:CreateMultipartUploadCommand', 'main:UploadPartCommand:0', 'main:UploadPartCommand:0', 'patient:CompleteMultipartUploadCommand:120000']);
  });

  it('the progress line calls stored only what the store acknowledged, and shows the rest in flight', async () => {
    const lines: string[] = [];
    const logger: Logger = { info: (m) => lines.push(m), warn: (m) => lines.push(m), group: (_n, fn) => fn() };
    const stop = startProgress({ rawBytes: () => 2_900, storedBytes: () => 0, sentBytes: () => 2_900 }, { label: 'app', logger, intervalMs: 20 });
    await new Promise((r) => setTimeout(r, 120));
    stop();
    assert.ok(lines.length > 0);
    assert.match(lines[0]!, /^app: 2\.9 kB dumped, 0 B stored, 2\.9 kB in flight, /);
  });
});
