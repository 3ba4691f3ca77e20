// Protection of the backups on Ceph RGW: If-None-Match, Object Lock, server-side encryption
// (SSE-C, SSE-KMS), client-side age encryption, and the off-region mirror.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  GetObjectRetentionCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketPolicyCommand,
} from '@aws-sdk/client-s3';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { OverwriteError } from '../../src/storage/index.ts';
import { FileStorage } from '../../src/storage/file/file.ts';
import { S3Storage } from '../../src/storage/s3/s3.ts';
import { writerBucketPolicy } from '../../src/storage/policies.ts';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, run, s3Client, s3Keys, s3Location, sql } from '../helpers.ts';
import { removeAfterFile, tempLocation } from '../infra/temp.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

async function bucket(label: string, objectLock = false): Promise<string> {
  const name = `${label}-${randomBytes(4).toString('hex')}`;
  const client = s3Client();
  await client.send(new CreateBucketCommand({ Bucket: name, ObjectLockEnabledForBucket: objectLock || undefined }));
  client.destroy();
  return name;
}

async function rgwUser(uid: string, key: string, secret: string): Promise<void> {
  const r = await run('radosgw-admin', ['-c', need('PGB_TEST_RGW_CONF'), 'user', 'create', `--uid=${uid}`, `--display-name=${uid}`, `--access-key=${key}`, `--secret-key=${secret}`]);
  assert.ok(r.code === 0 || /exists/.test(r.stderr), r.stderr);
}

function parse(stdout: string) {
  return JSON.parse(stdout) as { id: string; object: { name: string; sha256: string; sizeBytes: number }; backupUri: string; manifestUri: string; [k: string]: any };
}

describe('no overwrite', () => {
  it('a write with noOverwrite never replaces an existing object (S3 If-None-Match, file link)', async () => {
    const [b, ...rest] = s3Location('inm').replace('s3://', '').split('/');
    const env = { endpoint: need('PGB_TEST_S3_ENDPOINT'), credentials: { accessKeyId: need('PGB_TEST_S3_ACCESS_KEY'), secretAccessKey: need('PGB_TEST_S3_SECRET_KEY') } };
    const s3 = new S3Storage(b!, rest.join('/'), env);
    const file = new FileStorage((await tempLocation()).replace('file://', ''));
    for (const storage of [s3, file]) {
      await storage.put('a/x.manifest.json', 'first', { noOverwrite: true });
      await assert.rejects(storage.put('a/x.manifest.json', 'second', { noOverwrite: true }), OverwriteError);
      assert.equal(await storage.getText('a/x.manifest.json'), 'first');
    }
    await recordFault({ faultId: 'overwrite-refused', fault: 'a second write to an existing manifest key (S3 If-None-Match, file:// link)', outcome: 'refused (OverwriteError); the first object unchanged', exit: 'rejects', left: 'the first object, unchanged', file: import.meta.url });
  });

  it('two dumps started in the same second make two backups', { timeout: 120_000 }, async () => {
    const db = await createDatabase('same-second');
    const to = s3Location('same-second');
    const [a, b] = await Promise.all([cli(['dump', '--to', to, '--json'], { DATABASE_URL: dbUrl(db) }), cli(['dump', '--to', to, '--json'], { DATABASE_URL: dbUrl(db) })]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.notEqual(parse(a.stdout).id, parse(b.stdout).id);
    const listed = await cli(['list', '--from', to, '--json']);
    assert.equal(JSON.parse(listed.stdout).filter((b: { kind: string }) => b.kind === 'database').length, 2);
  });
});

describe('Object Lock', () => {
  it('puts retention on the object (multipart), sidecars and manifest; a locked version cannot be deleted', { timeout: 180_000 }, async () => {
    const db = await createDatabase('lock');
    await addBigTable(db, 14);
    const name = await bucket('locked', true);
    const to = `s3://${name}/pg`;
    const r = await cli(['dump', '--to', to, '--object-lock', 'compliance:2', '--checksum-sidecar', 'sha256', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const manifest = parse(r.stdout);
    assert.ok(manifest.object.sizeBytes > 5 * 1024 * 1024, 'a multipart upload');
    assert.equal(manifest.objectLock.mode, 'COMPLIANCE');
    const client = s3Client();
    const keys = await s3Keys(to);
    assert.equal(keys.length, 5, keys.join(', ')); // object, .sha256, manifest; the run's globals and their manifest, locked too
    for (const key of keys) {
      const ret = await client.send(new GetObjectRetentionCommand({ Bucket: name, Key: `pg/${key}` }));
      assert.equal(ret.Retention?.Mode, 'COMPLIANCE', key);
      const days = (ret.Retention!.RetainUntilDate!.getTime() - Date.now()) / 86_400_000;
      assert.ok(days > 1.9 && days <= 2.01, `${key}: retained ${days} days`);
    }
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: name, Prefix: 'pg/' }));
    for (const v of versions.Versions ?? []) {
      await assert.rejects(client.send(new DeleteObjectCommand({ Bucket: name, Key: v.Key!, VersionId: v.VersionId })), /object lock|AccessDenied/i);
    }
    client.destroy();
    const verified = await cli(['verify', '--from', to]);
    assert.equal(verified.code, 0, verified.stderr);
  });

  it('a write-only writer with s3:PutObjectRetention can dump into a locked bucket', { timeout: 120_000 }, async () => {
    await rgwUser('lockwriter', 'LOCKWRITERKEY', 'LOCKWRITERSECRET');
    const db = await createDatabase('lockwriter');
    await addBigTable(db, 8);
    const name = await bucket('wolock', true);
    const client = s3Client();
    await client.send(new PutBucketPolicyCommand({ Bucket: name, Policy: JSON.stringify(writerBucketPolicy(name, 'arn:aws:iam:::user/lockwriter', ['arn:aws:iam:::user/backup'], { objectLock: true })) }));
    client.destroy();
    const r = await cli(['dump', '--to', `s3://${name}/pg`, '--object-lock', 'governance:1'], { DATABASE_URL: dbUrl(db), AWS_ACCESS_KEY_ID: 'LOCKWRITERKEY', AWS_SECRET_ACCESS_KEY: 'LOCKWRITERSECRET' });
    assert.equal(r.code, 0, r.stderr);
    // The writer cannot bypass governance retention to delete what it wrote.
    const versions = await s3Client().send(new ListObjectVersionsCommand({ Bucket: name }));
    const writer = new S3Storage(name, '', { endpoint: need('PGB_TEST_S3_ENDPOINT'), credentials: { accessKeyId: 'LOCKWRITERKEY', secretAccessKey: 'LOCKWRITERSECRET' } });
    await assert.rejects(
      writer.client.send(new DeleteObjectCommand({ Bucket: name, Key: versions.Versions![0]!.Key!, VersionId: versions.Versions![0]!.VersionId, BypassGovernanceRetention: true })),
      /AccessDenied|object lock/i,
    );
  });

  it('a bucket without Object Lock: exit 2 with the fix, nothing left behind', { timeout: 60_000 }, async () => {
    const db = await createDatabase('nolock');
    const to = s3Location('nolock');
    const r = await cli(['dump', '--to', to, '--object-lock', 'compliance:1'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /refused Object Lock retention .*create it with Object Lock enabled/);
    assert.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('pg-backup:')).length, 1);
    assert.deepEqual(await s3Keys(to), []);
    assert.deepEqual(await openMultipartUploads(to), []);
    await recordFault({ faultId: 'object-lock-on-unlocked-bucket', fault: '--object-lock on a bucket without Object Lock', outcome: 'the first write is refused; one line naming the fix', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('malformed retention is a usage error before any work', async () => {
    for (const bad of ['30', 'forever:30', 'compliance:0', 'governance:-1', 'compliance:99999']) {
      const r = await cli(['dump', '--to', 's3://x-bucket/p', '--object-lock', bad], { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x' });
      assert.equal(r.code, 2, bad);
      assert.match(r.stderr, /invalid Object Lock retention/, bad);
    }
  });
});

describe('server-side encryption', () => {
  it('SSE-C: every object needs the key to be read; verify and drill with it, exit 2 without or with another', { timeout: 180_000 }, async () => {
    const db = await createDatabase('ssec');
    await addBigTable(db, 8);
    const to = s3Location('ssec');
    const key = randomBytes(32).toString('base64');
    const r = await cli(['dump', '--to', to, '--sse', 'sse-c', '--json'], { DATABASE_URL: dbUrl(db), PG_BACKUP_SSE_C_KEY: key });
    assert.equal(r.code, 0, r.stderr);
    const manifest = parse(r.stdout);
    assert.deepEqual(manifest.serverSideEncryption, { type: 'SSE-C' });
    assert.ok(!r.stdout.includes(key) && !r.stderr.includes(key), 'the key is never printed');
    const [b, ...rest] = to.replace('s3://', '').split('/');
    await assert.rejects(s3Client().send(new GetObjectCommand({ Bucket: b, Key: `${rest.join('/')}/${manifest.backupUri.slice(to.length + 1)}` })), /InvalidArgument|Server Side Encryption/i);
    const without = await cli(['verify', '--from', to]);
    assert.equal(without.code, 2, without.stderr);
    assert.match(without.stderr, /encrypted with SSE-C: give its key in PG_BACKUP_SSE_C_KEY/);
    const wrong = await cli(['verify', '--from', to], { PG_BACKUP_SSE_C_KEY: randomBytes(32).toString('base64') });
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.match(wrong.stderr, /does not match/);
    await recordFault({ faultId: 'sse-c-key-missing', fault: 'verify of an SSE-C backup without the key', outcome: 'the store refuses the read; one line naming PG_BACKUP_SSE_C_KEY', exit: without.code, left: 'the backup, unchanged', file: import.meta.url, message: lastLine(without.stderr) });
    await recordFault({ faultId: 'sse-c-key-wrong', fault: 'verify of an SSE-C backup with another key', outcome: 'the store refuses the read; "the SSE-C key does not match"', exit: wrong.code, left: 'the backup, unchanged', file: import.meta.url, message: lastLine(wrong.stderr) });
    const verified = await cli(['verify', '--from', to], { PG_BACKUP_SSE_C_KEY: key });
    assert.equal(verified.code, 0, verified.stderr);
    const drilled = await cli(['drill', '--from', to], { PG_BACKUP_SSE_C_KEY: key });
    assert.equal(drilled.code, 0, drilled.stderr);
    assert.ok(!drilled.stderr.includes(key));
  });

  it('SSE-KMS: objects are stored under the key id; an unknown key fails with exit 2 and nothing left', { timeout: 120_000 }, async () => {
    const db = await createDatabase('ssekms');
    await addBigTable(db, 8);
    const to = s3Location('ssekms');
    const r = await cli(['dump', '--to', to, '--sse', 'aws:kms', '--sse-kms-key-id', 'testkey-1', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const manifest = parse(r.stdout);
    assert.deepEqual(manifest.serverSideEncryption, { type: 'aws:kms', kmsKeyId: 'testkey-1' });
    const [b, ...rest] = to.replace('s3://', '').split('/');
    for (const key of await s3Keys(to)) {
      const head = await s3Client().send(new HeadObjectCommand({ Bucket: b, Key: `${rest.join('/')}/${key}` }));
      assert.equal(head.ServerSideEncryption, 'aws:kms', key);
      assert.equal(head.SSEKMSKeyId, 'testkey-1', key);
    }
    assert.equal((await cli(['verify', '--from', to])).code, 0);
    const bad = s3Location('ssekms-bad');
    const failed = await cli(['dump', '--to', bad, '--sse', 'aws:kms', '--sse-kms-key-id', 'no-such-key'], { DATABASE_URL: dbUrl(db) });
    assert.equal(failed.code, 2, failed.stderr);
    assert.match(failed.stderr, /KMS key .* cannot be used/);
    assert.deepEqual(await s3Keys(bad), []);
    assert.deepEqual(await openMultipartUploads(bad), []);
    await recordFault({ faultId: 'sse-kms-unknown-key', fault: 'dump with --sse aws:kms and a key the KMS does not know', outcome: 'the first write is refused; one line naming --sse-kms-key-id', exit: failed.code, left: await leftBehind(bad), file: import.meta.url, message: lastLine(failed.stderr) });
  });

  it('SSE-S3 on a store that ignores it (Ceph RGW 16) is reported, not silently assumed', { timeout: 60_000 }, async () => {
    const db = await createDatabase('sses3');
    const r = await cli(['dump', '--to', s3Location('sses3'), '--sse', 'AES256', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /did not confirm SSE-S3/);
    assert.deepEqual(parse(r.stdout).serverSideEncryption, { type: 'AES256' });
  });

  it('bad SSE settings are usage errors', async () => {
    const env = { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x' };
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['--sse', 'sse-c'], {}, /needs the key in PG_BACKUP_SSE_C_KEY/],
      [['--sse', 'sse-c'], { PG_BACKUP_SSE_C_KEY: 'c2hvcnQ=' }, /must be 32 bytes in base64/],
      [['--sse', 'rot13'], {}, /unknown server-side encryption/],
      [['--sse-kms-key-id', 'k'], {}, /needs --sse aws:kms/],
    ];
    for (const [args, extra, message] of cases) {
      const r = await cli(['dump', '--to', 's3://x-bucket/p', ...args], { ...env, ...extra });
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, message);
      assert.ok(!r.stderr.includes('c2hvcnQ='), 'a bad key is not echoed');
    }
  });
});

describe('client-side encryption with age', () => {
  async function keyPair() {
    const identity = await generateX25519Identity();
    const file = removeAfterFile(path.join(os.tmpdir(), `age-${randomBytes(4).toString('hex')}.key`));
    await writeFile(file, `# created for a test\n${identity}\n`, { mode: 0o600 });
    return { identity, recipient: await identityToRecipient(identity), file };
  }

  for (const format of ['custom', 'plain', 'directory'] as const) {
    it(`${format}: encrypted before upload; verify, drill and restore need the identity`, { timeout: 180_000 }, async () => {
      const db = await createDatabase(`age_${format}`);
      const { identity, recipient, file } = await keyPair();
      const to = s3Location(`age-${format}`);
      const r = await cli(['dump', '--to', to, '--format', format, '--age-recipient', recipient, '--schema-sidecar', '--json'], { DATABASE_URL: dbUrl(db) });
      assert.equal(r.code, 0, r.stderr);
      const manifest = parse(r.stdout);
      assert.deepEqual(manifest.encryption, { scheme: 'age', recipients: [recipient] });
      const keys = await s3Keys(to);
      assert.ok(keys.filter((k) => !k.endsWith('.manifest.json')).every((k) => k.endsWith('.age')), keys.join(', '));
      const body = await (await import('../helpers.ts')).s3Get(to, keys.find((k) => k.endsWith('.age') && !k.includes('schema'))!);
      assert.ok(body.subarray(0, 21).toString() === 'age-encryption.org/v1', 'an age file');
      assert.ok(!JSON.stringify(manifest).includes('AGE-SECRET-KEY'));

      const checksum = await cli(['verify', '--from', to, '--level', 'checksum']);
      assert.equal(checksum.code, 0, checksum.stderr);
      assert.match(checksum.stderr, /no identity was given: only the stored bytes are checked/);
      const noIdentity = await cli(['verify', '--from', to]);
      assert.equal(noIdentity.code, 2, noIdentity.stderr);
      assert.match(noIdentity.stderr, /encrypted with age .*--age-identity-file or PG_BACKUP_AGE_IDENTITY/);
      const other = await keyPair();
      const wrong = await cli(['verify', '--from', to, '--age-identity-file', other.file]);
      assert.equal(wrong.code, 1, wrong.stderr);
      assert.match(wrong.stderr, /no identity matched/);
      if (format === 'custom') {
        await recordFault({ faultId: 'age-no-identity', fault: 'verify (archive) of an age-encrypted backup without an identity', outcome: 'refused before any download; one line naming --age-identity-file', exit: noIdentity.code, left: 'the backup, unchanged', file: import.meta.url, message: lastLine(noIdentity.stderr) });
        await recordFault({ faultId: 'age-wrong-identity', fault: 'verify of an age-encrypted backup with another identity', outcome: 'decryption fails: "no identity matched"', exit: wrong.code, left: 'the backup, unchanged', file: import.meta.url, message: lastLine(wrong.stderr) });
      }
      const verified = await cli(['verify', '--from', to, '--age-identity-file', file]);
      assert.equal(verified.code, 0, verified.stderr);
      const drilled = await cli(['drill', '--from', to], { PG_BACKUP_AGE_IDENTITY: `${identity}\n` });
      assert.equal(drilled.code, 0, drilled.stderr);
      assert.ok(!drilled.stderr.includes(identity), 'the identity is never printed');
      const target = await createDatabase(`age_${format}_target`, false);
      const restored = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target)], { PG_BACKUP_AGE_IDENTITY_FILE: file });
      assert.equal(restored.code, 0, restored.stderr);
      const [source] = await sql<{ n: string }>(db, 'SELECT count(*)::text AS n FROM orders');
      const [copy] = await sql<{ n: string }>(target, 'SELECT count(*)::text AS n FROM orders');
      assert.equal(copy!.n, source!.n);
    });
  }

  it('a tampered ciphertext with a matching manifest checksum still fails decryption', { timeout: 120_000 }, async () => {
    const db = await createDatabase('age-tamper');
    const { recipient, file } = await keyPair();
    const to = await tempLocation();
    const r = await cli(['dump', '--to', to, '--age-recipient', recipient, '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const manifest = parse(r.stdout);
    const objectPath = new URL(manifest.backupUri).pathname;
    const data = await readFile(objectPath);
    data[data.length - 40] = data[data.length - 40]! ^ 0x01;
    await writeFile(objectPath, data);
    // Re-seal the manifest so only the age authentication can notice.
    const manifestPath = new URL(manifest.manifestUri).pathname;
    const m = JSON.parse(await readFile(manifestPath, 'utf8'));
    m.object.sha256 = (await import('node:crypto')).createHash('sha256').update(data).digest('hex');
    await writeFile(manifestPath, JSON.stringify(m));
    const v = await cli(['verify', '--from', to, '--age-identity-file', file]);
    assert.equal(v.code, 1, v.stderr);
    assert.match(v.stderr, /age decryption failed/);
    await recordFault({ faultId: 'age-tampered-ciphertext', fault: 'one bit flipped in an age-encrypted dump, its manifest checksum rewritten to match', outcome: 'age authentication fails: "age decryption failed"', exit: v.code, left: 'the backup, unchanged', file: import.meta.url, message: lastLine(v.stderr) });
  });

  it('the stored object is a standard age file: age -d | zstd -d | pg_restore reads it', { timeout: 120_000 }, async () => {
    const db = await createDatabase('age-cli');
    const { recipient, file } = await keyPair();
    const to = await tempLocation();
    const r = await cli(['dump', '--to', to, '--age-recipient', recipient, '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const objectPath = new URL(parse(r.stdout).backupUri).pathname;
    const toc = await run('bash', ['-c', `age -d -i "$1" "$2" | zstd -d | pg_restore --list`, 'sh', file, objectPath]);
    assert.equal(toc.code, 0, toc.stderr);
    assert.match(toc.stdout, /TABLE DATA public orders/);
  });

  it('a malformed recipient is a usage error', async () => {
    const r = await cli(['dump', '--to', 's3://x-bucket/p', '--age-recipient', 'age1notakey'], { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /invalid age recipient/);
  });
});

describe('off-region mirror', () => {
  it('copies object, sidecars and manifest to another bucket with its own credentials, and re-checks the copy', { timeout: 180_000 }, async () => {
    await rgwUser('mirror', 'MIRRORKEY', 'MIRRORSECRET');
    const db = await createDatabase('mirror');
    await addBigTable(db, 12);
    const to = s3Location('mirror-primary');
    const mirrorBucket = `dr-${randomBytes(4).toString('hex')}`;
    const mirrorAdmin = new S3Storage(mirrorBucket, '', { endpoint: need('PGB_TEST_S3_ENDPOINT'), credentials: { accessKeyId: 'MIRRORKEY', secretAccessKey: 'MIRRORSECRET' } });
    await mirrorAdmin.client.send(new CreateBucketCommand({ Bucket: mirrorBucket }));
    const mirror = `s3://${mirrorBucket}/pg`;
    const r = await cli(['dump', '--to', to, '--mirror-to', mirror, '--mirror-endpoint', need('PGB_TEST_S3_ENDPOINT'), '--checksum-sidecar', 'md5', '--schema-sidecar', '--json'], {
      DATABASE_URL: dbUrl(db),
      PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID: 'MIRRORKEY',
      PG_BACKUP_MIRROR_AWS_SECRET_ACCESS_KEY: 'MIRRORSECRET',
    });
    assert.equal(r.code, 0, r.stderr);
    const manifest = parse(r.stdout);
    assert.equal(manifest.mirror.ok, true);
    assert.equal(manifest.mirror.verified, true);
    assert.match(r.stderr, /mirror copy at s3:\/\/dr-.*sha256 matches/);
    assert.ok(!r.stderr.includes('MIRRORSECRET'));
    const primaryKeys = await s3Keys(to);
    const mirrorKeys: string[] = [];
    for await (const o of mirrorAdmin.list('pg/')) mirrorKeys.push(o.key.slice('pg/'.length));
    assert.deepEqual(mirrorKeys.sort(), primaryKeys.sort());
    // The mirror is a complete backup location of its own.
    const verified = await cli(['verify', '--from', mirror, '--endpoint', need('PGB_TEST_S3_ENDPOINT')], { AWS_ACCESS_KEY_ID: 'MIRRORKEY', AWS_SECRET_ACCESS_KEY: 'MIRRORSECRET' });
    assert.equal(verified.code, 0, verified.stderr);
  });

  it('a failing mirror never costs the primary backup: the run fails, the primary is complete, the mirror holds no manifest', { timeout: 120_000 }, async () => {
    const db = await createDatabase('mirror-fail');
    await addBigTable(db, 8);
    const to = s3Location('mirror-fail');
    // A bucket that does not exist at the mirror endpoint.
    const r = await cli(['dump', '--to', to, '--mirror-to', 's3://no-such-mirror-bucket/pg', '--mirror-endpoint', need('PGB_TEST_S3_ENDPOINT'), '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /mirror copy to s3:\/\/no-such-mirror-bucket\/.* FAILED/);
    const listed = await cli(['verify', '--from', to]);
    assert.equal(listed.code, 0, listed.stderr);
    await recordFault({ faultId: 'mirror-unreachable', fault: '--mirror-to a bucket that does not exist', outcome: 'the primary backup completes and verifies; the mirror copy is reported FAILED and the run fails', exit: r.code, left: `primary: ${await leftBehind(to)}`, file: import.meta.url, message: r.stderr.split('\n').find((l) => /FAILED/.test(l)) });
  });

  it('a mirror endpoint that accepts connections and never answers is abandoned; the primary backup completes', { timeout: 180_000 }, async () => {
    const net = await import('node:net');
    const held: import('node:net').Socket[] = [];
    const blackHole = net.createServer((socket) => {
      held.push(socket);
      socket.on('error', () => undefined);
      socket.resume(); // read and drop, never answer
    });
    await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
    try {
      const db = await createDatabase('mirror-hang');
      await addBigTable(db, 24);
      const to = s3Location('mirror-hang');
      const started = Date.now();
      const r = await cli(['dump', '--to', to, '--compression', 'none', '--stall-timeout', '10s', '--checksum-sidecar', 'sha256', '--mirror-to', 's3://hung-mirror/pg', '--mirror-endpoint', `http://127.0.0.1:${(blackHole.address() as import('node:net').AddressInfo).port}`, '--json'], {
        DATABASE_URL: dbUrl(db),
        PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID: 'x',
        PG_BACKUP_MIRROR_AWS_SECRET_ACCESS_KEY: 'y',
      });
      const seconds = (Date.now() - started) / 1000;
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /mirror copy to .* FAILED: the mirror (took no data|did not complete)/);
      assert.ok(seconds < 60, `bounded: ${seconds} s`);
      const verified = await cli(['verify', '--from', to]);
      assert.equal(verified.code, 0, verified.stderr);
      assert.deepEqual(await openMultipartUploads(to), []);
      await recordFault({ faultId: 'mirror-hung', fault: '--mirror-to an endpoint that accepts connections and never answers (24 MB dump)', outcome: 'the mirror is abandoned after half the stall timeout; the primary backup completes and verifies; the run fails naming the mirror', exit: r.code, left: `primary: ${await leftBehind(to)}`, file: import.meta.url, message: r.stderr.split('\n').find((l) => /FAILED/.test(l)), durationMs: Date.now() - started });
    } finally {
      for (const s of held) s.destroy();
      blackHole.close();
    }
  });

  it('with age recipients and no identity at hand, --verify archive verifies the checksum and says why', { timeout: 60_000 }, async () => {
    const db = await createDatabase('age-verify');
    const { recipient } = await (async () => {
      const identity = await generateX25519Identity();
      return { recipient: await identityToRecipient(identity) };
    })();
    const r = await cli(['dump', '--to', await tempLocation(), '--age-recipient', recipient, '--verify', 'archive', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /verifying at level checksum instead of archive/);
    assert.equal(parse(r.stdout).verification.level, 'checksum');
    assert.equal(parse(r.stdout).verification.ok, true);
  });

  it('a mirror on the primary location itself is refused', async () => {
    const r = await cli(['dump', '--to', 's3://same-bucket/p', '--mirror-to', 's3://same-bucket/p'], { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /is the backup location itself/);
  });

  it('mirrors to a file:// location too', { timeout: 120_000 }, async () => {
    const db = await createDatabase('mirror-file');
    const mirror = await tempLocation();
    const r = await cli(['dump', '--to', s3Location('mirror-file'), '--mirror-to', mirror, '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(parse(r.stdout).mirror.verified, true);
    const dir = new URL(mirror).pathname;
    const all = await readdir(dir, { recursive: true });
    assert.ok(all.some((f) => String(f).endsWith('.manifest.json')));
  });
});

describe('hygiene: names with quotes, spaces, shell syntax and non-ASCII', () => {
  it('dump, list, verify, drill and restore a database and table named to break shells, under labels with spaces and accents', { timeout: 240_000 }, async () => {
    const marker = path.join(os.tmpdir(), `pgb-pwned-${randomBytes(4).toString('hex')}`);
    const name = `shop "ü" $(touch ${marker}) 'x'; ${randomBytes(2).toString('hex')}`;
    await sql('postgres', `CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    await sql(name, `CREATE SCHEMA "sch ë"; CREATE TABLE "sch ë"."we'ird ""tåble"" \`ls\`" (id int PRIMARY KEY, v text); INSERT INTO "sch ë"."we'ird ""tåble"" \`ls\`" SELECT g, 'r' || g FROM generate_series(1, 321) g;`);
    const url = dbUrl(name);
    for (const to of [s3Location('hygiene'), await tempLocation()]) {
      const r = await cli(['dump', '--to', to, '--service', 'café api', '--environment', 'prod ü', '--format', 'custom', '--schema-sidecar', '--checksum-sidecar', 'sha256', '--json'], { DATABASE_URL: url });
      assert.equal(r.code, 0, r.stderr);
      const manifest = parse(r.stdout);
      assert.equal(manifest.database, name);
      assert.deepEqual(manifest.tables, [{ schema: 'sch ë', table: 'we\'ird "tåble" `ls`', rows: 321 }]);
      const listed = await cli(['list', '--from', to, '--service', 'café api', '--environment', 'prod ü', '--database', name, '--json']);
      assert.equal(JSON.parse(listed.stdout).length, 1, listed.stderr);
      assert.equal((await cli(['verify', '--from', to, '--backup', manifest.backupUri])).code, 0);
      const drilled = await cli(['drill', '--from', to, '--database', name]);
      assert.equal(drilled.code, 0, drilled.stderr);
      assert.match(drilled.stderr, /restore drill OK/);
      const target = await createDatabase('hygiene_target', false);
      const restored = await cli(['restore', '--from', to, '--backup', 'latest', '--database', name, '--target-url', dbUrl(target)]);
      assert.equal(restored.code, 0, restored.stderr);
      const [copy] = await sql<{ n: string }>(target, `SELECT count(*)::text AS n FROM "sch ë"."we'ird ""tåble"" \`ls\`"`);
      assert.equal(copy!.n, '321');
    }
    await assert.rejects(readFile(marker), /ENOENT/, 'no name ever reached a shell');
  });

  it('keys cannot escape the prefix, and file:// cannot write outside its root', async () => {
    const root = (await tempLocation()).replace('file://', '');
    const file = new FileStorage(root);
    for (const key of ['../x', 'a/../../x', '/etc/passwd', 'a//b', 'a/./b', 'a\\b']) {
      await assert.rejects(file.put(key, 'x'), /unsafe storage key/, key);
    }
    for (const label of ['../etc', 'a/b', '']) {
      const r = await cli(['dump', '--to', `file://${root}`, '--service', label], { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x' });
      assert.equal(r.code, 2, label);
    }
    const r = await cli(['dump', '--to', 's3://bucket-x/a/../b'], { DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /invalid prefix/);
    assert.deepEqual(await readdir(root), []);
  });
});

describe('pg-backup mirror (catch-up sync to a DR location)', () => {
  it('copies the backups the target lacks, manifest last, skips what is there, and refuses a source that does not match its manifest', { timeout: 180_000 }, async () => {
    const db = await createDatabase('sync');
    const from = s3Location('sync-src');
    for (const extra of [[], ['--format', 'directory'], ['--checksum-sidecar', 'md5', '--schema-sidecar']]) {
      const r = await cli(['dump', '--to', from, ...extra], { DATABASE_URL: dbUrl(db) });
      assert.equal(r.code, 0, r.stderr);
    }
    const to = await tempLocation();
    const dry = await cli(['mirror', '--from', from, '--to', to, '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    // Three runs: three database backups and their three globals.
    assert.equal(JSON.parse(dry.stdout).copied.length, 6);
    assert.equal(JSON.parse((await cli(['list', '--from', to, '--json'])).stdout).length, 0, 'a dry run copies nothing');
    const synced = await cli(['mirror', '--from', from, '--to', to, '--json']);
    assert.equal(synced.code, 0, synced.stderr);
    assert.equal(JSON.parse(synced.stdout).copied.length, 6);
    const srcKeys = (await s3Keys(from)).sort();
    const dstKeys = (await readdir(new URL(to).pathname, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => path.relative(new URL(to).pathname, path.join(d.parentPath, d.name))).sort();
    assert.deepEqual(dstKeys, srcKeys);
    for (const args of [['verify', '--from', to, '--backup', 'latest'], ['drill', '--from', to]]) {
      const r = await cli(args);
      assert.equal(r.code, 0, r.stderr);
    }
    const again = await cli(['mirror', '--from', from, '--to', to, '--json']);
    assert.equal(JSON.parse(again.stdout).copied.length, 0);
    assert.equal(JSON.parse(again.stdout).present, 6);

    // A copy that stopped before its manifest (objects there, manifest not) is completed.
    const someManifest = dstKeys.find((k) => k.endsWith('.manifest.json'))!;
    const { rm } = await import('node:fs/promises');
    await rm(path.join(new URL(to).pathname, someManifest));
    const resumed = await cli(['mirror', '--from', from, '--to', to, '--json']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.deepEqual(JSON.parse(resumed.stdout).copied, [someManifest]);

    // A corrupted source object is not copied (its upload is aborted) and the run fails.
    const r = await cli(['dump', '--to', from, '--json'], { DATABASE_URL: dbUrl(db) });
    const fresh = parse(r.stdout);
    const key = fresh.backupUri.slice(from.length + 1);
    const { s3Put, s3Get } = await import('../helpers.ts');
    const data = await s3Get(from, key);
    data[100] = data[100]! ^ 0xff;
    await s3Put(from, key, data);
    const bad = await cli(['mirror', '--from', from, '--to', to]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /hashing to .* its manifest says .*: not copied/);
    assert.equal(JSON.parse((await cli(['list', '--from', to, '--json'])).stdout).filter((b: any) => b.kind !== 'globals').length, 3, 'no manifest for the corrupt one');
    await recordFault({ faultId: 'mirror-sync-corrupt-source', fault: 'pg-backup mirror of a backup whose object no longer matches its manifest', outcome: 'that copy aborted before completing, no manifest written; the run fails naming it', exit: bad.code, left: `target: ${await leftBehind(to)}`, file: import.meta.url, message: lastLine(bad.stderr) });
  });
});
