import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { openStorage } from '../../src/storage/index.ts';
import { MIN_PART_SIZE, S3Storage } from '../../src/storage/s3/s3.ts';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, runActionBundle, s3Client, s3Env, s3Get, s3Keys, s3Location } from '../helpers.ts';
import { startFaultProxy } from '../infra/fault-proxy.ts';
import { lastLine } from '../reliability.ts';

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

describe('payload signing: unsigned over HTTPS, signed over HTTP', () => {
  /** The S3 driver itself (openStorage builds it at the first request), whose client a test can watch. */
  function driverOf(url: string, s: ConstructorParameters<typeof S3Storage>[2]): S3Storage {
    const [bucket, ...prefix] = url.replace(/^s3:\/\//, '').split('/');
    return new S3Storage(bucket!, prefix.join('/'), s);
  }

  /** The x-amz-content-sha256 of each PutObject/UploadPart `storage` sends, as signed. */
  function captureBodyHashes(storage: S3Storage): string[] {
    const seen: string[] = [];
    (storage.client.middlewareStack as unknown as { add: (m: unknown, o: unknown) => void }).add(
      (next: (a: unknown) => Promise<unknown>, context: { commandName?: string }) => async (args: { request?: { headers?: Record<string, string> } }) => {
        if (context.commandName === 'PutObjectCommand' || context.commandName === 'UploadPartCommand') seen.push(args.request?.headers?.['x-amz-content-sha256'] ?? 'none');
        return next(args);
      },
      { step: 'deserialize', name: 'testCaptureBodyHash' },
    );
    return seen;
  }

  it('over plain HTTP every part carries its SHA-256 in the signature', { timeout: 120_000 }, async () => {
    const to = s3Location('sign-http');
    const storage = driverOf(to, settings());
    const seen = captureBodyHashes(storage);
    const { stream, sha256 } = randomStream(2 * MIN_PART_SIZE + 9);
    await storage.upload('obj.bin', stream);
    assert.equal(seen.length, 3);
    for (const h of seen) assert.match(h, /^[0-9a-f]{64}$/);
    assert.equal(createHash('sha256').update(await s3Get(to, 'obj.bin')).digest('hex'), sha256);
  });

  it('over HTTPS the bodies go as UNSIGNED-PAYLOAD (no second hash of every byte)', { timeout: 120_000 }, async () => {
    // This process does not trust the store's test CA: the request fails at the TLS handshake,
    // after it was signed, which is all this looks at; the dump below proves the store takes it.
    const storage = driverOf(s3Location('sign-https'), { ...settings(), endpoint: need('PGB_TEST_S3_TLS_ENDPOINT') });
    const seen = captureBodyHashes(storage);
    await assert.rejects(storage.put('probe.txt', 'x'));
    assert.ok(seen.length >= 1);
    for (const h of seen) assert.equal(h, 'UNSIGNED-PAYLOAD');
  });

  it('a dump over HTTPS (multipart, unsigned payload) is stored whole: verify checks its SHA-256 over HTTPS', { timeout: 300_000 }, async () => {
    const db = await createDatabase('tlsdump', false);
    await addBigTable(db, 20);
    const to = s3Location('tls-dump');
    const env = { AWS_ENDPOINT_URL_S3: need('PGB_TEST_S3_TLS_ENDPOINT'), NODE_EXTRA_CA_CERTS: need('PGB_TEST_S3_CA_FILE') };
    const dumped = await cli(['dump', '--database-url', dbUrl(db), '--to', to, '--no-globals', '--json'], env);
    assert.equal(dumped.code, 0, dumped.stderr);
    const out = JSON.parse(dumped.stdout);
    assert.ok(out.object.sizeBytes > MIN_PART_SIZE, `a multipart upload (${out.object.sizeBytes} bytes)`);
    const verified = await cli(['verify', '--from', to, '--backup', 'latest', '--level', 'archive'], env);
    assert.equal(verified.code, 0, verified.stderr);
    assert.deepEqual(await openMultipartUploads(to), []);
  });
});

describe('S3 over HTTPS: part bodies, trusted CAs', () => {
  it('a dump over HTTPS whose connections reset mid-part (twice) sends those parts again whole: the backup verifies', { timeout: 300_000 }, async () => {
    // Over HTTPS a part goes in slices of one stream made for each attempt (bounded TLS buffers);
    // a reset mid-part makes the SDK send it again, from the part's buffer, on a new connection.
    const db = await createDatabase('tlsreset', false);
    await addBigTable(db, 20);
    const to = s3Location('tls-reset');
    const proxy = await startFaultProxy(need('PGB_TEST_S3_TLS_ENDPOINT'), { resetAfterBytes: 1_000_000, resets: 2 });
    try {
      assert.match(proxy.endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = { NODE_EXTRA_CA_CERTS: need('PGB_TEST_S3_CA_FILE') };
      const dumped = await cli(['dump', '--database-url', dbUrl(db), '--to', to, '--no-globals', '--json'], { AWS_ENDPOINT_URL_S3: proxy.endpoint, ...ca });
      assert.equal(dumped.code, 0, dumped.stderr);
      // Connections opened together may all be picked for a reset before the count reaches 2.
      assert.ok(proxy.stats.resets >= 2, `connections were reset mid-request (${proxy.stats.resets})`);
      const out = JSON.parse(dumped.stdout);
      assert.ok(out.object.sizeBytes > MIN_PART_SIZE, `a multipart upload (${out.object.sizeBytes} bytes)`);
      const verified = await cli(['verify', '--from', to, '--backup', 'latest', '--level', 'archive'], { AWS_ENDPOINT_URL_S3: need('PGB_TEST_S3_TLS_ENDPOINT'), ...ca });
      assert.equal(verified.code, 0, verified.stderr);
      assert.deepEqual(await openMultipartUploads(to), []);
    } finally {
      await proxy.close();
    }
  });

  // This machine's own variables (a CA bundle for its proxy) are left out: each case sets the trust it tests.
  const noTrust = { AWS_CA_BUNDLE: undefined, NODE_EXTRA_CA_CERTS: undefined };

  it('an HTTPS endpoint whose certificate no trusted CA signed: exit 2, one line naming AWS_CA_BUNDLE, nothing written', { timeout: 120_000 }, async () => {
    const db = await createDatabase('tlsuntrusted', false);
    const to = s3Location('tls-untrusted');
    const started = Date.now();
    const r = await cli(['dump', '--database-url', dbUrl(db), '--to', to, '--no-globals'], { ...noTrust, AWS_ENDPOINT_URL_S3: need('PGB_TEST_S3_TLS_ENDPOINT') });
    assert.equal(r.code, 2, r.stderr);
    assert.match(lastLine(r.stderr), /^pg-backup: cannot reach s3:\/\/\S+ over HTTPS: the endpoint's certificate is not signed by a CA this machine trusts \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\); if the store's certificate is signed by your own CA, give that CA's certificate \(PEM\) in AWS_CA_BUNDLE=\/path\/to\/ca\.pem$/);
    assert.ok(Date.now() - started < 30_000, 'not retried as a network failure');
    assert.deepEqual(await s3Keys(to), []);
    assert.deepEqual(await openMultipartUploads(to), []);
  });

  it("AWS_CA_BUNDLE with the store's CA: a dump, then verify from the CLI and the action, over HTTPS (Node's own CAs still trusted)", { timeout: 300_000 }, async () => {
    const db = await createDatabase('tlsbundle', false);
    await addBigTable(db, 20);
    const to = s3Location('tls-bundle');
    const trust = { ...noTrust, AWS_ENDPOINT_URL_S3: need('PGB_TEST_S3_TLS_ENDPOINT'), AWS_CA_BUNDLE: need('PGB_TEST_S3_CA_FILE') };
    const dumped = await cli(['dump', '--database-url', dbUrl(db), '--to', to, '--no-globals', '--json'], trust);
    assert.equal(dumped.code, 0, dumped.stderr);
    assert.ok(JSON.parse(dumped.stdout).object.sizeBytes > MIN_PART_SIZE, 'a multipart upload');
    const verified = await cli(['verify', '--from', to, '--backup', 'latest', '--level', 'checksum'], trust);
    assert.equal(verified.code, 0, verified.stderr);
    const action = await runActionBundle('verify', { from: to, backup: 'latest', level: 'checksum', 'issue-on-failure': 'false' }, { ...s3Env(), ...trust });
    assert.equal(action.code, 0, action.stdout + action.stderr);
    assert.equal(action.outputs.result, 'ok');
    assert.equal(action.outputs['size-bytes'], String(JSON.parse(dumped.stdout).object.sizeBytes));
  });

  it('AWS_CA_BUNDLE naming a missing file, or a file with no certificate: exit 2, one line, before any request', { timeout: 120_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-cabundle-'));
    try {
      const empty = path.join(dir, 'empty.pem');
      await writeFile(empty, 'not a certificate\n');
      const cases = [
        { file: path.join(dir, 'missing.pem'), line: /^pg-backup: AWS_CA_BUNDLE="[^"]+missing\.pem" cannot be read \(ENOENT\): give the path of a PEM file with the CA certificates of the S3 endpoint, or unset it$/ },
        { file: empty, line: /^pg-backup: AWS_CA_BUNDLE="[^"]+empty\.pem" holds no PEM certificate \(-----BEGIN CERTIFICATE-----\): give the CA certificates of the S3 endpoint in PEM form, or unset it$/ },
      ];
      for (const c of cases) {
        const to = s3Location('tls-badbundle');
        const r = await cli(['list', '--from', to], { ...noTrust, AWS_CA_BUNDLE: c.file });
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
        assert.match(lastLine(r.stderr), c.line);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
