import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { createDatabase, dbUrl, need, root, run, runActionBundle, s3Get, s3Keys, s3Location } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

const storageInputs = () => ({
  endpoint: need('PGB_TEST_S3_ENDPOINT'),
  region: 'us-east-1',
  'aws-access-key-id': need('PGB_TEST_S3_ACCESS_KEY'),
  'aws-secret-access-key': need('PGB_TEST_S3_SECRET_KEY'),
});
// The runner's environment has no AWS_* variables here: the actions get credentials from inputs.
const noAwsEnv = { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_ENDPOINT_URL_S3: undefined, AWS_REGION: undefined };

describe('the three action bundles, run as the GitHub runner runs them, against PostgreSQL + Ceph RGW', () => {
  it('dump → verify → drill', async () => {
    const db = await createDatabase('actions');
    const to = s3Location('actions');
    const dumped = await runActionBundle('dump', { 'database-url': dbUrl(db), to, service: 'api', environment: 'production', compression: 'zstd:3', verify: 'checksum', ...storageInputs() }, noAwsEnv);
    assert.equal(dumped.code, 0, dumped.stdout + dumped.stderr);
    // Credentials are masked before anything is logged.
    const lines = dumped.stdout.split('\n');
    const firstMask = lines.findIndex((l) => l.startsWith('::add-mask::'));
    assert.equal(firstMask, 0, 'masking comes first');
    assert.ok(lines.includes('::add-mask::pgtestpw'), 'database password masked');
    assert.ok(lines.includes(`::add-mask::${need('PGB_TEST_S3_SECRET_KEY')}`), 'S3 secret masked');
    const firstGroup = lines.findIndex((l) => l === `::group::dump ${db}`);
    assert.ok(firstGroup > lines.lastIndexOf(lines.filter((l) => l.startsWith('::add-mask::')).at(-1)!), 'masks before the first log group');
    assert.ok(!dumped.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::')).join('\n').includes('pgtestpw'));

    const o = dumped.outputs;
    assert.match(o['backup-uri']!, new RegExp(`^${to}/api/production/${db}/\\d{4}/\\d{2}/\\d{2}/${db}-\\d{8}T\\d{6}Z-[0-9a-f]{6}\\.dump\\.zst$`));
    assert.equal(o['manifest-uri'], o['backup-uri']!.replace('.dump.zst', '.manifest.json'));
    assert.equal(`${to}/${o['backup-key']}`, o['backup-uri']);
    assert.match(o.sha256!, /^[0-9a-f]{64}$/);
    assert.ok(Number(o['size-bytes']) > 1000);
    assert.ok(Number(o['duration-ms']) >= 0);
    assert.equal(o['verify-result'], 'ok');
    const manifest = JSON.parse((await s3Get(to, o['backup-key']!.replace('.dump.zst', '.manifest.json'))).toString());
    assert.equal(manifest.object.sha256, o.sha256);
    // The run's id heads the table; the run's globals are its first row (roles, passwords), the database next.
    assert.equal(o['run-id'], /<h3>Backups \(run (run-\d{8}T\d{6}Z-[0-9a-f]{6})\)<\/h3>/.exec(dumped.summary)?.[1]);
    assert.equal(manifest.run.id, o['run-id']);
    assert.match(o['globals-uri']!, new RegExp(`^${to}/api/production/@globals/\\d{4}/\\d{2}/\\d{2}/@globals-\\d{8}T\\d{6}Z-[0-9a-f]{6}\\.sql\\.zst$`));
    assert.equal(o['globals-role-passwords'], 'true');
    assert.ok(dumped.summary.includes(`api/production/${db}`));
    assert.ok(dumped.summary.includes(o.sha256!));

    const verified = await runActionBundle('verify', { from: to, backup: o['backup-key']!, ...storageInputs() }, noAwsEnv);
    assert.equal(verified.code, 0, verified.stdout);
    assert.equal(verified.outputs.result, 'ok');
    assert.equal(verified.outputs.sha256, o.sha256);
    assert.match(verified.summary, /Verify: OK/);

    const drilled = await runActionBundle('drill', { from: to, backup: 'latest', service: 'api', environment: 'production', database: db, ...storageInputs() }, noAwsEnv);
    assert.equal(drilled.code, 0, drilled.stdout);
    assert.equal(drilled.outputs.result, 'ok');
    assert.ok(Number(drilled.outputs['rto-ms']) > 0);
    assert.match(drilled.outputs['drill-log-uri']!, new RegExp(`^${to}/drills/api/production/${db}/\\d{4}-Q[1-4]/.*\\.log$`));
    const logKey = drilled.outputs['drill-log-uri']!.slice(to.length + 1);
    assert.match((await s3Get(to, logKey)).toString().trim(), /restore drill OK$/);
    assert.match(drilled.summary, /Restore drill: OK/);
    for (const phase of ['download', 'restore', 'checks']) assert.ok(drilled.stdout.includes(`::group::${phase}`), `a log group per phase: ${phase}`);
    assert.match(drilled.summary, /customers/);
  });

  it('fails with one ::error:: line and exit 2 on bad input, writing nothing', async () => {
    const to = s3Location('actionbad');
    const r = await runActionBundle('dump', { 'database-url': 'postgresql://u:topsecretpw@127.0.0.1:1/db', to, compression: 'brotli', ...storageInputs() }, noAwsEnv);
    assert.equal(r.code, 2);
    const errors = r.stdout.split('\n').filter((l) => l.startsWith('::error::'));
    assert.deepEqual(errors, ['::error::unknown compression "brotli": use zstd[:1-19], gzip[:1-9] or none']);
    assert.ok(r.stdout.includes('::add-mask::topsecretpw'));
    assert.deepEqual(await s3Keys(to), []);

    const missing = await runActionBundle('verify', { ...storageInputs() }, noAwsEnv);
    assert.equal(missing.code, 2);
    assert.match(missing.stdout, /::error::input "from" (is required|Invalid input)/);
  });

  it('protection inputs: age, SSE-C and Object Lock through dump; verify and drill with the identity and key, all masked', async () => {
    const { generateX25519Identity, identityToRecipient } = await import('age-encryption');
    const { randomBytes } = await import('node:crypto');
    const { CreateBucketCommand, GetObjectRetentionCommand } = await import('@aws-sdk/client-s3');
    const { s3Client } = await import('../helpers.ts');
    const identity = await generateX25519Identity();
    const sseKey = randomBytes(32).toString('base64');
    const bucket = `act-lock-${randomBytes(4).toString('hex')}`;
    const client = s3Client();
    await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
    const db = await createDatabase('actprot');
    const to = `s3://${bucket}/pg`;
    const { fileLocation } = await import('../helpers.ts');
    const mirror = await tempLocation();
    const dumped = await runActionBundle('dump', { 'database-url': dbUrl(db), to, 'age-recipients': await identityToRecipient(identity), sse: 'sse-c', 'sse-c-key': sseKey, 'object-lock': 'governance:1', 'mirror-to': mirror, ...storageInputs() }, noAwsEnv);
    assert.equal(dumped.code, 0, dumped.stdout);
    assert.equal(dumped.outputs['mirror-result'], 'verified');
    assert.ok(dumped.outputs['mirror-uri']!.startsWith(mirror));
    assert.ok(dumped.stdout.includes(`::add-mask::${sseKey}`), 'the SSE-C key is masked');
    const key = dumped.outputs['backup-key']!;
    assert.match(key, /\.dump\.zst\.age$/);
    const retention = await client.send(new GetObjectRetentionCommand({ Bucket: bucket, Key: `pg/${key}` }));
    assert.equal(retention.Retention?.Mode, 'GOVERNANCE');
    client.destroy();
    const verified = await runActionBundle('verify', { from: to, backup: key, 'age-identity': `# key\n${identity}\n`, 'sse-c-key': sseKey, 'issue-on-failure': 'false', ...storageInputs() }, noAwsEnv);
    assert.equal(verified.code, 0, verified.stdout);
    assert.ok(verified.stdout.includes(`::add-mask::${identity}`), 'the identity is masked');
    const drilled = await runActionBundle('drill', { from: to, 'age-identity': identity, 'sse-c-key': sseKey, 'issue-on-failure': 'false', ...storageInputs() }, noAwsEnv);
    assert.equal(drilled.code, 0, drilled.stdout);
    const leaks = [dumped, verified, drilled].map((r) => r.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::')).join('\n'));
    for (const text of leaks) {
      assert.ok(!text.includes(sseKey) && !text.includes(identity), 'no secret in any log line');
    }
  });

  it('verify and drill report a corrupted backup as failed, exit 1', async () => {
    const db = await createDatabase('actioncorrupt');
    const to = s3Location('actioncorrupt');
    const dumped = await runActionBundle('dump', { 'database-url': dbUrl(db), to, ...storageInputs() }, noAwsEnv);
    assert.equal(dumped.code, 0, dumped.stdout);
    const { s3Put } = await import('../helpers.ts');
    await s3Put(to, dumped.outputs['backup-key']!, Buffer.from('not an archive'));
    const verified = await runActionBundle('verify', { from: to, ...storageInputs() }, noAwsEnv);
    assert.equal(verified.code, 1);
    assert.equal(verified.outputs.result, 'failed');
    assert.match(verified.outputs.reason!, /size mismatch/);
    const drilled = await runActionBundle('drill', { from: to, ...storageInputs() }, noAwsEnv);
    assert.equal(drilled.code, 1);
    assert.equal(drilled.outputs.result, 'failed');
    assert.match(drilled.stdout, /::error::restore drill failed: size mismatch/);
  });
});

describe('action metadata', () => {
  for (const name of ['dump', 'verify', 'drill', 'prune']) {
    it(`${name}: runs on node24 from dist/index.js, documents every input and output`, async () => {
      const meta = parse(await readFile(path.join(root, 'actions', name, 'action.yml'), 'utf8'));
      assert.equal(meta.runs.using, 'node24');
      assert.equal(meta.runs.main, 'dist/index.js');
      for (const [input, spec] of Object.entries<{ description?: string; required?: boolean; default?: string }>(meta.inputs)) {
        assert.ok(spec.description, `${name}.${input} has a description`);
        if (!spec.required) assert.ok('default' in spec, `${name}.${input} states its default`);
      }
      for (const [output, spec] of Object.entries<{ description?: string }>(meta.outputs)) assert.ok(spec.description, `${name} output ${output}`);
      // The actions reference (generated by npm run docs) has a section naming every input and output.
      const reference = await readFile(path.join(root, 'docs/reference/actions.md'), 'utf8');
      const section = reference.split(`\n## actions/${name}\n`)[1]?.split(/\n## /)[0] ?? '';
      assert.ok(section, `docs/reference/actions.md has a section "## actions/${name}"`);
      for (const input of Object.keys(meta.inputs)) assert.ok(section.includes(`| \`${input}\` |`), `docs/reference/actions.md documents ${name} input ${input}`);
      for (const output of Object.keys(meta.outputs)) assert.ok(section.includes(`| \`${output}\` |`), `docs/reference/actions.md documents ${name} output ${output}`);
    });
  }
  it('the committed bundles are fresh (npm run build was run and committed)', async () => {
    const r = await run(process.execPath, [path.join(root, 'scripts/build.ts'), '--check']);
    assert.equal(r.code, 0, r.stderr);
  });
});
