import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { CreateBucketCommand, PutBucketPolicyCommand } from '@aws-sdk/client-s3';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, run, s3Client, s3Keys } from '../helpers.ts';
import { tempFakePgBin } from '../infra/temp.ts';
import { writeOnlyBucket } from '../infra/write-only-bucket.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';
import { writerBucketPolicy } from '../../src/storage/policies.ts';

/**
 * The dump path needs only PutObject / AbortMultipartUpload / ListMultipartUploadParts (seed 003's
 * writer). On Ceph RGW, as on AWS, a bucket policy grants that to a second user and explicitly
 * denies it every read, list and delete (an object's writer owns it, so the Deny is needed).
 */

describe('least privilege on Ceph RGW', () => {
  it('dumps with write-only credentials (multipart), which can neither list nor read it back', { timeout: 120_000 }, async () => {
    const db = await createDatabase('writer');
    await addBigTable(db, 20);
    const { to, writer } = await writeOnlyBucket();
    const dumped = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: dbUrl(db), ...writer });
    assert.equal(dumped.code, 0, dumped.stderr);
    assert.ok(JSON.parse(dumped.stdout).object.sizeBytes > 5 * 1024 * 1024, 'a multipart upload');
    for (const args of [['list', '--from', to], ['verify', '--from', to]]) {
      const denied = await cli(args, writer);
      assert.equal(denied.code, 2, denied.stderr);
      assert.match(denied.stderr, /access denied to list .*s3:ListBucket/);
    }
    // The owner (reader) verifies it.
    const verified = await cli(['verify', '--from', to]);
    assert.equal(verified.code, 0, verified.stderr);
  });

  it('a failing dump with write-only credentials still aborts its multipart upload', { timeout: 120_000 }, async () => {
    const db = await createDatabase('writerfail', false);
    const { to, writer } = await writeOnlyBucket();
    const bin = await tempFakePgBin('head -c 20000000 /dev/urandom; echo "pg_dump: error: boom" >&2; exit 1');
    const r = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db), PG_BIN_DIR: bin, ...writer });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /pg_dump exited with code 1: pg_dump: error: boom/);
    // The run's globals, stored first, are complete; of the failed database nothing is left.
    assert.deepEqual((await s3Keys(to)).filter((k) => !k.includes('/@globals/')), []);
    assert.deepEqual(await openMultipartUploads(to), []);
    await recordFault({ faultId: 'pg-dump-fails-write-only-credentials', fault: 'pg_dump fails after 20 MB, the dump holding write-only credentials (no List/Get/Delete)', outcome: 'the multipart upload is still aborted', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr) });
  });
});

describe('read-only credentials', () => {
  it('a reader (List + Get, Put only under drills/) lists, verifies, drills and restores; it cannot dump or delete', { timeout: 180_000 }, async () => {
    const conf = need('PGB_TEST_RGW_CONF');
    const created = await run('radosgw-admin', ['-c', conf, 'user', 'create', '--uid=reader', '--display-name=reader', '--access-key=READERKEY', '--secret-key=READERSECRET']);
    assert.ok(created.code === 0 || /exists/.test(created.stderr), created.stderr);
    const bucket = `ro-${randomBytes(4).toString('hex')}`;
    const client = s3Client();
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    await client.send(
      new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(writerBucketPolicy(bucket, 'arn:aws:iam:::user/writer', ['arn:aws:iam:::user/backup', 'arn:aws:iam:::user/reader'], { drillLogPrefix: 'pg' })) }),
    );
    client.destroy();
    const db = await createDatabase('reader');
    const to = `s3://${bucket}/pg`;
    const dumped = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db) });
    assert.equal(dumped.code, 0, dumped.stderr);
    const reader = { AWS_ACCESS_KEY_ID: 'READERKEY', AWS_SECRET_ACCESS_KEY: 'READERSECRET' };
    const listed = await cli(['list', '--from', to, '--json'], reader);
    assert.equal(JSON.parse(listed.stdout).filter((b: { kind: string }) => b.kind === 'database').length, 1, listed.stderr);
    const verified = await cli(['verify', '--from', to, '--level', 'schema'], reader);
    assert.equal(verified.code, 0, verified.stderr);
    const drilled = await cli(['drill', '--from', to], reader);
    assert.equal(drilled.code, 0, drilled.stderr);
    assert.ok((await s3Keys(to)).some((k) => k.startsWith('drills/')), 'the drill log was written');
    const target = await createDatabase('reader_target', false);
    const restored = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target)], reader);
    assert.equal(restored.code, 0, restored.stderr);
    // A reader can neither write a backup nor delete one.
    const before = await s3Keys(to);
    const denied = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db), ...reader });
    assert.equal(denied.code, 2, denied.stderr);
    assert.match(denied.stderr, /access denied to write/);
    const pruned = await cli(['prune', '--from', to, '--keep-last', '0', '--max-age', '1s', '--apply'], reader);
    assert.notEqual(pruned.code, 0);
    assert.deepEqual(await s3Keys(to), before);
  });
});
