import assert from 'node:assert/strict';
import { X509Certificate, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls, { getCACertificates } from 'node:tls';
import { UsageError } from '../../src/errors.ts';
import { caBundle } from '../../src/storage/s3/config.ts';
import { S3Storage, TLS_WRITE_BYTES, mapS3Error } from '../../src/storage/s3/s3.ts';

// Unit level: what body the S3 client's HTTP handler is given for a PutObject, over HTTPS and over
// HTTP; which CAs it trusts (AWS_CA_BUNDLE); the lines for a certificate it refuses. The handler is
// replaced (no packet leaves the process); the same paths run against Ceph RGW over HTTPS (a reset
// mid-part, an untrusted certificate, AWS_CA_BUNDLE) in test/integration/s3-multipart.test.ts.

interface Seen {
  body: unknown;
  chunks: Buffer[];
  headers: Record<string, string>;
}

/**
 * Replaces `storage`'s HTTP handler: each attempt's body is recorded (a stream is read to its end);
 * the first `failures` attempts fail as a reset connection would, the next one answers 200.
 */
function fakeHandler(storage: S3Storage, failures: number): Seen[] {
  const seen: Seen[] = [];
  const handler = storage.client.config.requestHandler as unknown as { handle: (request: { body?: unknown; headers: Record<string, string> }) => Promise<unknown> };
  handler.handle = async (request) => {
    const entry: Seen = { body: request.body, chunks: [], headers: { ...request.headers } };
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

  it('a large body goes without Expect: 100-continue (the SDK would send it through a fresh connection, without keep-alive)', async () => {
    for (const endpoint of ['https://127.0.0.1:9', 'http://127.0.0.1:9']) {
      const storage = new S3Storage('b', '', { endpoint, credentials });
      const seen = fakeHandler(storage, 0);
      await storage.put('obj.bin', randomBytes(3 * 1024 * 1024));
      assert.equal(seen.length, 1);
      assert.ok(!Object.keys(seen[0]!.headers).some((h) => h.toLowerCase() === 'expect'), `${endpoint}: ${JSON.stringify(seen[0]!.headers)}`);
    }
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

/** A syntactically valid PEM block (the content is never parsed here). */
const pem = (n: number) => `-----BEGIN CERTIFICATE-----\nQUJD${n}\n-----END CERTIFICATE-----\n`;

describe('trusted CAs: AWS_CA_BUNDLE', () => {
  it('reads every PEM certificate of the file; unset or empty reads nothing', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-ca-'));
    try {
      const file = path.join(dir, 'ca.pem');
      writeFileSync(file, `# two CAs\n${pem(1)}${pem(2)}`);
      assert.deepEqual(caBundle({ AWS_CA_BUNDLE: ` ${file} ` }), { file, certificates: [pem(1).trim(), pem(2).trim()] });
      assert.equal(caBundle({}), undefined);
      assert.equal(caBundle({ AWS_CA_BUNDLE: ' ' }), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing file, or one without a certificate: a UsageError naming the variable and the file', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-ca-'));
    try {
      const none = path.join(dir, 'none.pem');
      writeFileSync(none, 'hello\n');
      assert.throws(() => caBundle({ AWS_CA_BUNDLE: path.join(dir, 'missing.pem') }), (e: unknown) => e instanceof UsageError && /^AWS_CA_BUNDLE="[^"]+missing\.pem" cannot be read \(ENOENT\)/.test(e.message));
      assert.throws(() => caBundle({ AWS_CA_BUNDLE: none }), (e: unknown) => e instanceof UsageError && /holds no PEM certificate/.test(e.message));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a bundle whose certificate does not parse, or a Node without tls.setDefaultCACertificates: a UsageError when the storage is built, nothing trusted', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-ca-'));
    const saved = process.env.AWS_CA_BUNDLE;
    const setDefault = tls.setDefaultCACertificates;
    try {
      const garbled = path.join(dir, 'garbled.pem');
      writeFileSync(garbled, pem(3));
      const before = getCACertificates('default').length;
      process.env.AWS_CA_BUNDLE = garbled;
      assert.throws(() => new S3Storage('b', '', { endpoint: 'https://127.0.0.1:9', credentials }), (e: unknown) => e instanceof UsageError && /^AWS_CA_BUNDLE="[^"]+garbled\.pem": a certificate in it cannot be read \(.+\): give the CA certificates of the S3 endpoint in PEM form, or unset it$/.test(e.message));
      assert.equal(getCACertificates('default').length, before, 'nothing added');
      const old = path.join(dir, 'old-node.pem');
      writeFileSync(old, pem(4));
      process.env.AWS_CA_BUNDLE = old;
      (tls as { setDefaultCACertificates?: unknown }).setDefaultCACertificates = undefined;
      assert.throws(() => new S3Storage('b', '', { endpoint: 'https://127.0.0.1:9', credentials }), (e: unknown) => e instanceof UsageError && /^AWS_CA_BUNDLE needs Node 24\.5 or later \(this is v[\d.]+\): update Node, or give the file in NODE_EXTRA_CA_CERTS instead$/.test(e.message));
    } finally {
      tls.setDefaultCACertificates = setDefault;
      if (saved === undefined) delete process.env.AWS_CA_BUNDLE;
      else process.env.AWS_CA_BUNDLE = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a storage built with AWS_CA_BUNDLE adds its CAs to the process's trusted ones (Node's own kept), once", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-ca-'));
    const saved = process.env.AWS_CA_BUNDLE;
    try {
      const file = path.join(dir, 'ca.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(dir, 'ca.key'), '-out', file, '-subj', '/CN=pg-backup test CA', '-days', '1'], { stdio: 'ignore' });
      const fingerprints = () => new Set(getCACertificates('default').map((c) => new X509Certificate(c).fingerprint256));
      const ca = new X509Certificate(readFileSync(file)).fingerprint256;
      const before = fingerprints();
      assert.ok(!before.has(ca));
      process.env.AWS_CA_BUNDLE = file;
      new S3Storage('b', '', { endpoint: 'https://127.0.0.1:9', credentials });
      const after = fingerprints();
      assert.ok(after.has(ca), 'the bundle is trusted');
      assert.equal(after.size, before.size + 1);
      assert.ok([...before].every((c) => after.has(c)), "Node's own CAs are kept");
      new S3Storage('b', '', { endpoint: 'https://127.0.0.1:9', credentials });
      assert.equal(getCACertificates('default').length, [...fingerprints()].length, 'added once, no duplicate');
    } finally {
      if (saved === undefined) delete process.env.AWS_CA_BUNDLE;
      else process.env.AWS_CA_BUNDLE = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a certificate the client refuses', () => {
  const refused = (code: string, message = 'refused') => mapS3Error(Object.assign(new Error(message), { code }), 's3://b/k', 'write');
  it('an unknown CA: a UsageError that names AWS_CA_BUNDLE', () => {
    for (const code of ['SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']) {
      const e = refused(code);
      assert.ok(e instanceof UsageError, code);
      assert.equal(e.message, `cannot reach s3://b/k over HTTPS: the endpoint's certificate is not signed by a CA this machine trusts (${code}); if the store's certificate is signed by your own CA, give that CA's certificate (PEM) in AWS_CA_BUNDLE=/path/to/ca.pem`);
    }
  });
  it('an expired certificate, and one for another host: what to do about each', () => {
    assert.match(refused('CERT_HAS_EXPIRED').message, /certificate has expired \(CERT_HAS_EXPIRED\); renew the store's certificate \(or check this machine's clock\)$/);
    assert.match(refused('ERR_TLS_CERT_ALTNAME_INVALID', "Hostname/IP does not match certificate's altnames").message, /certificate is for another host name \(ERR_TLS_CERT_ALTNAME_INVALID\); give AWS_ENDPOINT_URL_S3 the host name the certificate was issued for$/);
    assert.ok(!(refused('ECONNRESET') instanceof UsageError), 'a reset stays a failure, not a usage error');
  });
});
