import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dump, type DumpResult } from '../../src/commands/dump.ts';
import { createDatabase, dbUrl, need, runActionBundle, s3Env, s3Keys, s3Location } from '../helpers.ts';

const storageInputs = () => ({
  endpoint: need('PGB_TEST_S3_ENDPOINT'),
  region: 'us-east-1',
  'aws-access-key-id': need('PGB_TEST_S3_ACCESS_KEY'),
  'aws-secret-access-key': need('PGB_TEST_S3_SECRET_KEY'),
});
const noAwsEnv = { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_ENDPOINT_URL_S3: undefined, AWS_REGION: undefined };
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };

describe('actions/prune, run as the GitHub runner runs it, against PostgreSQL + Ceph RGW', () => {
  it('plans by default, deletes with apply: true, keeps the verified (record: true) backup, and fails on stale dumps', { timeout: 120_000 }, async () => {
    const db = await createDatabase('pruneaction', false);
    const to = s3Location('pruneaction');
    const made: DumpResult[] = [];
    for (const ago of [3, 2, 0]) {
      made.push(await dump({ databaseUrl: dbUrl(db), to, service: 'api', environment: 'prod', logger: quiet, s3: { endpoint: need('PGB_TEST_S3_ENDPOINT'), credentials: { accessKeyId: s3Env().AWS_ACCESS_KEY_ID, secretAccessKey: s3Env().AWS_SECRET_ACCESS_KEY } }, now: () => new Date(Date.now() - ago * 86_400_000 - 60_000) }));
    }
    const verified = await runActionBundle('verify', { from: to, backup: made[0]!.objectKey, level: 'checksum', record: 'true', ...storageInputs() }, noAwsEnv);
    assert.equal(verified.code, 0, verified.stdout);
    assert.equal(verified.outputs['record-uri'], `${to}/${made[0]!.manifestKey.replace('.manifest.json', '.verify.json')}`);
    const before = await s3Keys(to);

    const dry = await runActionBundle('prune', { from: to, 'keep-last': '1', ...storageInputs() }, noAwsEnv);
    assert.equal(dry.code, 0, dry.stdout);
    assert.equal(dry.outputs.applied, 'false');
    assert.equal(dry.outputs.deleted, '1');
    assert.equal(dry.outputs.kept, '2');
    assert.match(dry.summary, /Prune: dry run \(nothing deleted; set apply: true to delete\)/);
    assert.match(dry.summary, /proven: verify \(checksum\) OK/);
    assert.deepEqual((await s3Keys(to)).sort(), before.sort());
    const plan = JSON.parse(dry.outputs.plan!);
    assert.deepEqual(plan.groups[0].backups.map((b: { id: string; action: string }) => [b.id, b.action]), [[made[2]!.manifest.id, 'keep'], [made[1]!.manifest.id, 'delete'], [made[0]!.manifest.id, 'keep']]);

    const applied = await runActionBundle('prune', { from: to, 'keep-last': '1', apply: 'true', ...storageInputs() }, noAwsEnv);
    assert.equal(applied.code, 0, applied.stdout);
    assert.equal(applied.outputs.applied, 'true');
    assert.equal(applied.outputs.deleted, '1');
    assert.ok(!(await s3Keys(to)).some((k) => k.startsWith(made[1]!.manifestKey.replace('.manifest.json', ''))));

    const stale = await runActionBundle('prune', { from: to, 'keep-last': '1', 'max-age': '30s', apply: 'true', ...storageInputs() }, noAwsEnv);
    assert.equal(stale.code, 1, stale.stdout);
    assert.equal(stale.outputs.result, 'failed');
    assert.match(stale.stdout, new RegExp(`::error::prune failed: prune refused for api/prod/${db}: the newest complete backup is .* old`));
    assert.equal((await s3Keys(to)).length, 5);

    const bad = await runActionBundle('prune', { from: to, apply: 'yes', 'keep-last': '1', ...storageInputs() }, noAwsEnv);
    assert.equal(bad.code, 2);
    assert.deepEqual(bad.stdout.split('\n').filter((l) => l.startsWith('::error::')), ['::error::input "apply" must be true or false (got "yes")']);
  });
});
