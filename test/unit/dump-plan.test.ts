import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DumpPlanSchema, forDatabase, planDump, type DumpPlanInput } from '../../src/commands/dump-plan.ts';
import { UsageError } from '../../src/errors.ts';
import { resolveConnection } from '../../src/postgres/connection.ts';

const logger = { info: () => undefined, warn: () => undefined, group: <T>(_: string, fn: () => Promise<T>) => fn() } as unknown as DumpPlanInput['logger'];

describe('the dump plan', () => {
  let dir: string;
  let to: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-plan-'));
    to = `file://${dir}`;
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('is built once from the options, checked by its schema, and frozen all the way down', async () => {
    const conn = resolveConnection('postgresql://app:secret@db.example:5432/orders', {});
    const plan = await planDump({ to, logger, schemas: ['public'], checksumSidecars: ['md5'], stallTimeout: '30s', s3: { region: 'eu-west-1' } }, conn);
    assert.ok(DumpPlanSchema.safeParse(plan).success);
    for (const part of [plan, plan.selection, plan.selection.schemas, plan.pgDumpArgs, plan.hashes, plan.manifest, plan.compression, plan.connection, plan.s3]) {
      assert.ok(Object.isFrozen(part), `frozen: ${JSON.stringify(part)}`);
    }
    assert.throws(() => {
      (plan as { format: string }).format = 'plain';
    }, TypeError);
    assert.throws(() => (plan.pgDumpArgs as string[]).push('--data-only'), TypeError);
    assert.equal(plan.format, 'custom');
    assert.equal(plan.objectSuffix, '.dump.zst');
    assert.deepEqual(plan.hashes, ['sha256', 'md5']);
    assert.deepEqual(plan.pgDumpArgs, ['--schema=public', '--strict-names', '--lock-wait-timeout=60s']);
    assert.equal(plan.stallTimeoutMs, 30_000);
    assert.equal(plan.mirrorStallMs, 15_000);
    assert.deepEqual(plan.manifest.options, { schemas: ['public'] });
    assert.equal(plan.connection?.database, 'orders');
  });

  it('leaves the caller\'s own objects (options, settings, lists) as they were', async () => {
    const schemas = ['public'];
    const s3 = { region: 'eu-west-1', credentials: { accessKeyId: 'AKIA', secretAccessKey: 'x' } };
    const options: DumpPlanInput = { to, logger, schemas, s3 };
    await planDump(options);
    assert.ok(!Object.isFrozen(options) && !Object.isFrozen(schemas) && !Object.isFrozen(s3) && !Object.isFrozen(s3.credentials) && !Object.isFrozen(logger));
  });

  it('derives every suffix once: plain + gzip + age, directory files', async () => {
    const recipient = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p';
    const plain = await planDump({ to, logger, format: 'plain', compression: 'gzip:9', ageRecipients: [recipient] });
    assert.equal(plain.objectSuffix, '.sql.gz.age');
    assert.equal(plain.encryptionSuffix, '.age');
    assert.deepEqual(plain.encryptTo, [recipient]);
    const directory = await planDump({ to, logger, format: 'directory', jobs: 4 });
    assert.equal(directory.objectSuffix, '.dir');
    assert.equal(directory.fileSuffix, '.zst');
    assert.equal(directory.jobs, 4);
  });

  it('is shared by the databases of a run: one storage, a frozen plan per database', async () => {
    const shared = await planDump({ to, logger });
    const a = forDatabase(shared, resolveConnection('postgresql://app@db/a', {}));
    const b = forDatabase(shared, resolveConnection('postgresql://app@db/b', {}));
    assert.equal(a.storage, shared.storage);
    assert.equal(b.storage, shared.storage);
    assert.deepEqual([a.connection?.database, b.connection?.database], ['a', 'b']);
    assert.equal(shared.connection, undefined);
    assert.ok(Object.isFrozen(a) && Object.isFrozen(b.connection));
  });

  for (const [name, options, expected] of [
    ['an unknown verify level', { verify: 'deep' }, /unknown verify level "deep"/],
    ['--jobs without the directory format', { jobs: 2 }, /--jobs 2 needs --format directory/],
    ['a bad stall timeout', { stallTimeout: 'soon' }, /--stall-timeout/],
    ['an unknown checksum sidecar', { checksumSidecars: ['crc'] }, /unknown checksum sidecar "crc"/],
    ['a mirror that is the backup location', { mirrorTo: 'SAME' }, /is the backup location itself/],
  ] as const) {
    it(`refuses ${name} with a UsageError before anything else`, async () => {
      const input = { to, logger, ...options, ...('mirrorTo' in options ? { mirrorTo: to } : {}) } as unknown as DumpPlanInput;
      await assert.rejects(planDump(input), (err: Error) => err instanceof UsageError && expected.test(err.message));
    });
  }
});
