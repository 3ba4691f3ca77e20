import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { listBackups } from '../../src/backup/catalog.ts';
import { S3Storage } from '../../src/storage/s3/s3.ts';
import { cli, createDatabase, dbUrl, dumpWithCli, need, s3Env, s3Get, s3Keys, s3Location, s3Put, sql } from '../helpers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';

describe('list', () => {
  it('lists complete backups newest first, paginating, and skips dumps without a manifest', async () => {
    const db = await createDatabase('list', false);
    const to = s3Location('list');
    const made = [];
    for (let i = 0; i < 3; i++) {
      made.push(await dumpWithCli(db, to, ['--service', 'svc', '--environment', i === 2 ? 'staging' : 'production']));
      await new Promise((r) => setTimeout(r, 1100)); // distinct seconds in the keys
    }
    // An orphaned dump object (its dump failed before the manifest) must not be listed.
    await s3Put(to, `svc/production/${db}/2030/01/01/${db}-20300101T000000Z-aaaaaa.dump.zst`, 'partial');

    const r = await cli(['list', '--from', to, '--json']);
    assert.equal(r.code, 0, r.stderr);
    // Each dump run also stored its globals: listed as kind globals beside the databases.
    const all = JSON.parse(r.stdout);
    assert.equal(all.filter((b: { kind: string }) => b.kind === 'globals').length, 3);
    const listed = all.filter((b: { kind: string }) => b.kind === 'database');
    assert.deepEqual(listed.map((b: { id: string }) => b.id), made.map((m) => m.manifest.id).reverse());
    assert.equal(listed[0].environment, 'staging');
    assert.ok(listed.every((b: { sizeBytes: number }) => b.sizeBytes > 0));

    const filtered = JSON.parse((await cli(['list', '--from', to, '--service', 'svc', '--environment', 'production', '--json'])).stdout);
    assert.equal(filtered.filter((b: { kind: string }) => b.kind === 'database').length, 2);

    // Pagination through real ListObjectsV2 pages of 2 keys.
    const [bucket, ...prefix] = to.replace('s3://', '').split('/');
    const env = s3Env();
    const storage = new S3Storage(bucket!, prefix.join('/'), {
      endpoint: env.AWS_ENDPOINT_URL_S3,
      credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
      listPageSize: 2,
    });
    const entries = await listBackups(storage);
    assert.deepEqual(entries.map((e) => e.id), all.map((b: { id: string }) => b.id));

    const human = await cli(['list', '--from', to]);
    assert.equal(human.stdout.trim().split('\n').length, 1 + 3 + 3, 'a header, the 3 complete backups and the globals of their 3 runs');
    await recordFault({ faultId: 'corrupt-orphan-object-not-listed', fault: 'a dump object without a manifest (its dump failed before the commit marker)', outcome: '`list` shows only the complete backups', exit: r.code, left: `unchanged: ${await leftBehind(to)}`, file: import.meta.url });
  });
});

describe('verify', () => {
  it('passes an intact backup (s3 and file)', async () => {
    const db = await createDatabase('verify');
    for (const to of [s3Location('verify'), await tempLocation()]) {
      const { manifest } = await dumpWithCli(db, to);
      const r = await cli(['verify', '--from', to, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.equal(result.ok, true);
      assert.equal(result.sha256, manifest.object.sha256);
      assert.match(r.stderr, /pg_restore read the whole archive/);
    }
  });

  const corruptions: [{ faultId: string }, string, (to: string, objectKey: string, manifestKey: string, other: string) => Promise<void>, RegExp][] = [
    [{ faultId: 'corrupt-bit-flip' }, 'a flipped bit', async (to, key) => {
      const bytes = await s3Get(to, key);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x10;
      await s3Put(to, key, bytes);
    }, /sha256 mismatch/],
    [{ faultId: 'corrupt-truncated' }, 'a truncated object', async (to, key) => s3Put(to, key, (await s3Get(to, key)).subarray(0, 5000)), /size mismatch: the object has 5000 bytes/],
    [{ faultId: 'corrupt-zero-byte' }, 'a 0-byte object', async (to, key) => s3Put(to, key, Buffer.alloc(0)), /size mismatch: the object has 0 bytes/],
    [{ faultId: 'corrupt-missing-object' }, 'a missing object', async (to, key) => s3Put(to, key, undefined), /download failed: .* does not exist/],
    [{ faultId: 'corrupt-missing-manifest' }, 'a missing manifest', async (to, _key, manifestKey) => s3Put(to, manifestKey, undefined), /manifest .* is missing: the backup is incomplete/],
    [{ faultId: 'corrupt-manifest-sha256' }, 'a manifest whose sha256 does not match', async (to, _key, manifestKey) => {
      const m = JSON.parse((await s3Get(to, manifestKey)).toString());
      m.object.sha256 = '0'.repeat(64);
      await s3Put(to, manifestKey, JSON.stringify(m));
    }, /sha256 mismatch: the object hashes to [0-9a-f]{64}, the manifest says 0{64}/],
    [{ faultId: 'corrupt-foreign-manifest' }, 'a manifest from another backup', async (to, _key, manifestKey, otherManifestKey) => s3Put(to, manifestKey, await s3Get(to, otherManifestKey)), /belongs to another backup/],
  ];
  for (const [{ faultId }, name, corrupt, expected] of corruptions) {
    it(`fails on ${name} with the reason, exit 1`, async () => {
      const db = await createDatabase('corrupt');
      const to = s3Location('corrupt');
      const other = await dumpWithCli(db, to, ['--service', 'other']);
      const { objectKey, manifestKey } = await dumpWithCli(db, to);
      await corrupt(to, objectKey, manifestKey, other.manifestKey);
      const r = await cli(['verify', '--from', to, '--backup', objectKey]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, expected);
      await recordFault({ faultId, fault: `verify: ${name}`, outcome: 'verify fails with the reason; nothing is changed', exit: r.code, left: `unchanged: ${await leftBehind(to)}`, file: import.meta.url, message: lastLine(r.stderr) });
    });
  }
  it('skips a backup without its manifest when choosing latest', async () => {
    const db = await createDatabase('latest', false);
    const to = s3Location('latest');
    const older = await dumpWithCli(db, to);
    await new Promise((r) => setTimeout(r, 1100));
    const newer = await dumpWithCli(db, to);
    await s3Put(to, newer.manifestKey, undefined);
    const r = await cli(['verify', '--from', to, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).backupId, older.manifest.id);
    await recordFault({ faultId: 'corrupt-latest-skips-incomplete', fault: 'the newest backup lacks its manifest (verify `latest`)', outcome: 'skipped: the older complete backup is verified instead', exit: r.code, left: `unchanged: ${await leftBehind(to)}`, file: import.meta.url });
  });
  it('fails on a truncated archive whose checksum was recomputed (pg_restore reads every block)', async () => {
    const db = await createDatabase('trunc');
    const to = await tempLocation();
    const { objectKey, manifestKey, manifest } = await dumpWithCli(db, to, ['--compression', 'none']);
    const { readFile, writeFile } = await import('node:fs/promises');
    const { createHash } = await import('node:crypto');
    const root = to.replace('file://', '');
    const bytes = (await readFile(path.join(root, objectKey))).subarray(0, Math.floor(manifest.object.sizeBytes * 0.7));
    await writeFile(path.join(root, objectKey), bytes);
    manifest.object.sizeBytes = bytes.length;
    manifest.object.sha256 = createHash('sha256').update(bytes).digest('hex');
    delete manifest.backupUri;
    delete manifest.manifestUri;
    await writeFile(path.join(root, manifestKey), JSON.stringify(manifest));
    const r = await cli(['verify', '--from', to, '--backup', objectKey]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /archive unreadable: pg_restore exited with code 1/);
    await recordFault({ faultId: 'corrupt-truncated-rechecksummed', fault: 'verify: an archive truncated to 70 % with its size and sha256 recomputed in the manifest', outcome: 'the full `pg_restore` read fails (`--list` alone would pass)', exit: r.code, left: `unchanged: ${await leftBehind(to)}`, file: import.meta.url, message: lastLine(r.stderr) });
  });
});

describe('drill', () => {
  it('restores into a throwaway cluster, checks row counts, archives a drill log ending "restore drill OK", and removes the cluster', async () => {
    const db = await createDatabase('drill');
    const to = s3Location('drill');
    const { manifest } = await dumpWithCli(db, to, ['--service', 'api', '--environment', 'production']);
    const workDir = await tempDir('pgb-drillwork-');
    const { chmod } = await import('node:fs/promises');
    await chmod(workDir, 0o777);
    const r = await cli(['drill', '--from', to, '--service', 'api', '--environment', 'production', '--database', db, '--work-dir', workDir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true);
    assert.equal(report.tables.length, 4);
    assert.ok(report.tables.every((t: { ok: boolean; expected: number; actual: number }) => t.ok && t.expected === t.actual));
    assert.ok(report.rtoMs >= report.phases.restoreMs);
    assert.deepEqual(await readdir(workDir), [], 'the throwaway cluster is removed');

    const keys = await s3Keys(to);
    const quarter = `${new Date().getUTCFullYear()}-Q${Math.floor(new Date().getUTCMonth() / 3) + 1}`;
    const logKey = keys.find((k) => k.startsWith(`drills/api/production/${db}/${quarter}/${manifest.id}-drill-`) && k.endsWith('.log'));
    assert.ok(logKey, keys.join('\n'));
    assert.ok(keys.includes(logKey!.replace(/\.log$/, '.json')));
    const log = (await s3Get(to, logKey!)).toString('utf8').trim().split('\n');
    assert.match(log.at(-1)!, /restore drill OK$/);
    assert.equal(report.drillLogUri, `${to}/${logKey}`);
  });

  it('restores into --target-url (a given empty database)', async () => {
    const db = await createDatabase('drilltarget');
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const target = await createDatabase('target', false);
    const r = await cli(['drill', '--from', to, '--target-url', dbUrl(target), '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).target, `postgres@127.0.0.1:${new URL(dbUrl(target)).port}/${target}`);
    assert.equal((await sql<{ n: string }>(target, 'SELECT count(*) AS n FROM customers'))[0]!.n, '2000');
    assert.doesNotMatch(r.stdout + r.stderr, /pgtestpw/);
  });

  it('fails a corrupted backup with the reason, archives the failing log, and still removes the cluster', async () => {
    const db = await createDatabase('drillbad');
    const to = s3Location('drillbad');
    const { objectKey } = await dumpWithCli(db, to);
    const bytes = await s3Get(to, objectKey);
    await s3Put(to, objectKey, bytes.subarray(0, bytes.length - 100));
    const workDir = await tempDir('pgb-drillwork-');
    const { chmod } = await import('node:fs/promises');
    await chmod(workDir, 0o777);
    const r = await cli(['drill', '--from', to, '--work-dir', workDir]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /drill failed: size mismatch/);
    assert.deepEqual(await readdir(workDir), []);
    const logKey = (await s3Keys(to)).find((k) => k.startsWith('drills/') && k.endsWith('.log'))!;
    assert.match((await s3Get(to, logKey)).toString(), /restore drill FAILED: size mismatch/);
    await recordFault({ faultId: 'corrupt-drill-truncated', fault: 'drill: the object lost its last 100 bytes', outcome: 'the drill fails with the reason, archives its FAILED log, removes the cluster', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr) });
  });
});

describe('restore', () => {
  it('restores the latest backup of a service into an existing database', async () => {
    const db = await createDatabase('restore');
    const to = s3Location('restore');
    await dumpWithCli(db, to, ['--service', 'billing', '--environment', 'production']);
    const target = await createDatabase('restored', false);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--service', 'billing', '--environment', 'production', '--database', db, '--target-url', dbUrl(target)]);
    assert.equal(r.code, 0, r.stderr);
    const rows = await sql<{ n: string }>(target, 'SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_items) AS n');
    assert.equal(rows[0]!.n, '20000');
    const nextId = await sql<{ id: string }>(target, "INSERT INTO customers (email, name) VALUES ('new@example.com', 'New') RETURNING id");
    assert.equal(nextId[0]!.id, '2001', 'sequences restored with their values');
  });
  it('refuses a restore without --backup', async () => {
    const r = await cli(['restore', '--from', await tempLocation(), '--target-url', dbUrl('postgres')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /restore needs --backup KEY \(from "pg-backup list"\) or --backup latest/);
  });
});

describe('demo', () => {
  it('runs the whole job on the embedded default', async () => {
    const bucket = await tempLocation();
    const r = await cli(['demo', '--bucket', bucket]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /demo OK: dumped "shop"/);
    assert.match(r.stderr, /restore drill OK/);
    need('PGB_TEST_PG_URL');
  });
});
