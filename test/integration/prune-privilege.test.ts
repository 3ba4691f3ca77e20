import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { CreateBucketCommand, DeleteObjectCommand, GetBucketLifecycleConfigurationCommand, GetObjectCommand, ListObjectVersionsCommand, PutBucketLifecycleConfigurationCommand, PutBucketPolicyCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { dump, type DumpResult } from '../../src/commands/dump.ts';
import { prunerStatements, recoveryStatements, writerBucketPolicy } from '../../src/storage/policies.ts';
import { cli, createDatabase, dbUrl, need, run, s3Client, s3Keys } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

const DAY = 86_400_000;
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };
const keys = { writer: ['WRITERKEY', 'WRITERSECRET'], pruner: ['PRUNERKEY', 'PRUNERSECRET'], reader: ['READERKEY', 'READERSECRET'] } as const;
const envOf = (user: keyof typeof keys) => ({ AWS_ACCESS_KEY_ID: keys[user][0], AWS_SECRET_ACCESS_KEY: keys[user][1] });

/** A Ceph RGW user (idempotent), as test/integration/least-privilege.test.ts creates the writer. */
async function rgwUser(user: keyof typeof keys): Promise<void> {
  const created = await run('radosgw-admin', ['-c', need('PGB_TEST_RGW_CONF'), 'user', 'create', `--uid=${user}`, `--display-name=${user}`, `--access-key=${keys[user][0]}`, `--secret-key=${keys[user][1]}`]);
  assert.ok(created.code === 0 || /exists/.test(created.stderr), created.stderr);
}

function clientAs(user: keyof typeof keys): S3Client {
  return new S3Client({ endpoint: need('PGB_TEST_S3_ENDPOINT'), region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: keys[user][0], secretAccessKey: keys[user][1] } });
}

/**
 * A bucket whose policy gives the writer Put only, `reader` List + Get, the pruner List + Get +
 * Delete, and the owner (`backup`) the break-glass recovery statement.
 */
async function threeRoleBucket(): Promise<{ bucket: string; to: string }> {
  for (const u of ['writer', 'pruner', 'reader'] as const) await rgwUser(u);
  const bucket = `pr-${randomBytes(4).toString('hex')}`;
  const policy = writerBucketPolicy(bucket, 'arn:aws:iam:::user/writer', ['arn:aws:iam:::user/backup', 'arn:aws:iam:::user/reader']);
  policy.Statement.push(...(prunerStatements(bucket, 'arn:aws:iam:::user/pruner') as typeof policy.Statement));
  policy.Statement.push(...(recoveryStatements(bucket, 'arn:aws:iam:::user/backup') as typeof policy.Statement));
  const client = s3Client();
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  await client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(policy) }));
  client.destroy();
  return { bucket, to: `s3://${bucket}/pg` };
}

describe('pruner least privilege on Ceph RGW', () => {
  it('the pruner (List, Get, Delete) prunes; the writer cannot delete; the pruner cannot write; a read-only verify --record only warns', { timeout: 180_000 }, async () => {
    const db = await createDatabase('pruner', false);
    const { bucket, to } = await threeRoleBucket();
    const writerS3 = { credentials: { accessKeyId: keys.writer[0], secretAccessKey: keys.writer[1] }, endpoint: need('PGB_TEST_S3_ENDPOINT') };
    const made: DumpResult[] = [];
    for (const ago of [3 * DAY, 2 * DAY, 3_600_000]) {
      made.push(await dump({ databaseUrl: dbUrl(db), to, service: 'api', environment: 'prod', s3: writerS3, logger: quiet, now: () => new Date(Date.now() - ago) }));
    }

    // The writer can neither prune nor delete an object itself.
    const writerPrune = await cli(['prune', '--from', to, '--keep-last', '1', '--apply'], envOf('writer'));
    assert.equal(writerPrune.code, 2, writerPrune.stderr);
    assert.match(writerPrune.stderr, /access denied to list .*s3:ListBucket/);
    const writer = clientAs('writer');
    await assert.rejects(writer.send(new DeleteObjectCommand({ Bucket: bucket, Key: `pg/${made[0]!.manifestKey}` })), (e: Error) => e.name === 'AccessDenied');
    writer.destroy();

    // The pruner cannot write anything.
    const pruner = clientAs('pruner');
    await assert.rejects(pruner.send(new PutObjectCommand({ Bucket: bucket, Key: `pg/${made[0]!.manifestKey}`, Body: '{}' })), (e: Error) => e.name === 'AccessDenied');
    pruner.destroy();

    // A reader's verify --record cannot write its record: a warning, the verdict stands.
    const verified = await cli(['verify', '--from', to, '--level', 'checksum', '--record'], envOf('reader'));
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stderr, /warning: verification not recorded \(the verdict stands\): access denied to write .*\.verify\.json: the credentials lack the s3:PutObject permission there; grant s3:PutObject on \*\/\*\.verify\.json to the verifier, or drop --record/);

    const pruned = await cli(['prune', '--from', to, '--keep-last', '1', '--keep-proven', '0', '--apply'], envOf('pruner'));
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.deepEqual((await s3Keys(to)).sort(), [made[2]!.objectKey, made[2]!.manifestKey].sort());
  });
});

describe('versioning on Ceph RGW', () => {
  it('a clobbered manifest and a prune leave the old versions: the pruner cannot delete a version, an admin brings a pruned backup back', { timeout: 180_000 }, async () => {
    const db = await createDatabase('versioned', false);
    const { bucket, to } = await threeRoleBucket();
    const admin = s3Client();
    await admin.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    const writerS3 = { credentials: { accessKeyId: keys.writer[0], secretAccessKey: keys.writer[1] }, endpoint: need('PGB_TEST_S3_ENDPOINT') };
    const made: DumpResult[] = [];
    for (const ago of [2 * DAY, DAY, 3_600_000]) {
      made.push(await dump({ databaseUrl: dbUrl(db), to, service: 'api', environment: 'prod', s3: writerS3, logger: quiet, now: () => new Date(Date.now() - ago) }));
    }
    const versionsOf = async (key: string) => {
      const page = await admin.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: `pg/${key}` }));
      return { versions: (page.Versions ?? []).filter((v) => v.Key === `pg/${key}`), markers: (page.DeleteMarkers ?? []).filter((m) => m.Key === `pg/${key}`) };
    };

    // Leaked writer credentials clobber a manifest (If-None-Match is not honoured by every store):
    // the tool refuses the clobbered manifest, and the written version is still there.
    const writer = clientAs('writer');
    await writer.send(new PutObjectCommand({ Bucket: bucket, Key: `pg/${made[0]!.manifestKey}`, Body: '{}' }));
    writer.destroy();
    const clobbered = await versionsOf(made[0]!.manifestKey);
    assert.equal(clobbered.versions.length, 2);
    const original = clobbered.versions.find((v) => !v.IsLatest)!;
    const body = await (await admin.send(new GetObjectCommand({ Bucket: bucket, Key: `pg/${made[0]!.manifestKey}`, VersionId: original.VersionId }))).Body!.transformToString();
    assert.equal(JSON.parse(body).id, made[0]!.manifest.id);
    const refused = await cli(['verify', '--from', to, '--backup', made[0]!.manifestKey, '--level', 'checksum'], envOf('reader'));
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /manifest .* is invalid/);

    // A prune on a versioned bucket only adds delete markers; the pruner (no
    // s3:DeleteObjectVersion) cannot remove the versions behind them.
    const pruned = await cli(['prune', '--from', to, '--keep-last', '1', '--keep-proven', '0', '--apply'], envOf('pruner'));
    assert.equal(pruned.code, 0, pruned.stderr);
    const after = await cli(['list', '--from', to, '--json'], envOf('reader'));
    assert.deepEqual((JSON.parse(after.stdout) as { manifestKey: string }[]).map((b) => b.manifestKey), [made[2]!.manifestKey]);
    const gone = await versionsOf(made[1]!.objectKey);
    assert.equal(gone.markers.length, 1, 'the prune left a delete marker');
    assert.equal(gone.versions.length, 1, 'and the object version behind it');
    assert.equal(gone.versions[0]!.Size, made[1]!.manifest.object.sizeBytes);
    const pruner = clientAs('pruner');
    await assert.rejects(pruner.send(new DeleteObjectCommand({ Bucket: bucket, Key: gone.versions[0]!.Key!, VersionId: gone.versions[0]!.VersionId })), (e: Error) => e.name === 'AccessDenied');
    pruner.destroy();

    // An admin restores the pruned backup by removing its delete markers (object first,
    // manifest last): it is listed again and verifies.
    for (const key of [made[1]!.objectKey, made[1]!.manifestKey]) {
      for (const m of (await versionsOf(key)).markers) await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: m.Key!, VersionId: m.VersionId }));
    }
    const relisted = await cli(['list', '--from', to, '--json'], envOf('reader'));
    assert.deepEqual((JSON.parse(relisted.stdout) as { manifestKey: string }[]).map((b) => b.manifestKey), [made[2]!.manifestKey, made[1]!.manifestKey]);
    const back = await cli(['verify', '--from', to, '--backup', made[1]!.manifestKey, '--level', 'archive'], envOf('reader'));
    assert.equal(back.code, 0, back.stderr);
    admin.destroy();
  });
});

describe('lifecycle on Ceph RGW', () => {
  it('prints the rule, puts it beside other rules, reads it back, and is idempotent', { timeout: 60_000 }, async () => {
    const bucket = `lc-${randomBytes(4).toString('hex')}`;
    const client = s3Client();
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    const foreign = { ID: 'someone-else', Status: 'Enabled' as const, Filter: { Prefix: 'logs/' }, Expiration: { Days: 3 } };
    await client.send(new PutBucketLifecycleConfigurationCommand({ Bucket: bucket, LifecycleConfiguration: { Rules: [foreign] } }));
    const to = `s3://${bucket}/pg`;
    const expected = {
      ID: 'pg-backup-retention pg/api/',
      Status: 'Enabled',
      Filter: { Prefix: 'pg/api/' },
      Expiration: { Days: 36 },
      NoncurrentVersionExpiration: { NoncurrentDays: 7 },
      AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 },
    };
    const printed = await cli(['lifecycle', '--to', to, '--service', 'api', '--max-age', '35d12h']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.deepEqual(JSON.parse(printed.stdout), { Rules: [expected] });

    for (let i = 0; i < 2; i++) {
      const applied = await cli(['lifecycle', '--apply', '--to', to, '--service', 'api', '--max-age', '35d12h']);
      assert.equal(applied.code, 0, applied.stderr);
      assert.match(applied.stderr, /lifecycle rule "pg-backup-retention pg\/api\/" put on s3:\/\/lc-.*: expire after 36 d, noncurrent versions after 7 d, incomplete multipart uploads after 7 d; 1 other rule\(s\) kept/);
      const read = await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket }));
      const rules = (read.Rules ?? []).sort((a, b) => (a.ID! < b.ID! ? -1 : 1));
      assert.equal(rules.length, 2);
      assert.deepEqual(JSON.parse(JSON.stringify(rules[0])), expected);
      assert.equal(rules[1]!.ID, 'someone-else');
      assert.equal(rules[1]!.Expiration?.Days, 3);
    }
    client.destroy();

    await rgwUser('pruner');
    const denied = await cli(['lifecycle', '--apply', '--to', to, '--max-age', '30d'], envOf('pruner'));
    assert.equal(denied.code, 2, denied.stderr);
    assert.match(denied.stderr, /access denied to the lifecycle configuration of s3:\/\/lc-.*: the credentials need s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration/);
    const file = await cli(['lifecycle', '--to', await tempLocation(), '--max-age', '30d']);
    assert.equal(file.code, 2);
    assert.match(file.stderr, /lifecycle rules are an S3 feature/);
  });
});
