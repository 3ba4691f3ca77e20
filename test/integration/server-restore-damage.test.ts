// restore --server with a damaged object in the run (issue #25, h10): the archives are downloaded
// ahead of their restores (the first ones while the globals run), so these tests check that the
// checksum still guards every database and the globals. A source cluster of the test's own dumps
// a run of three databases owned by app_owner; one object is then damaged in the bucket, its
// manifest left as it was. A damaged database fails, named, with nothing of it on the target and
// the others restored and checked; damaged globals stop the restore before any database, and
// every download started beside them is stopped and removed (the --work-dir is left empty).
// Both ways a database is restored (from its stored object, from its decompressed archive) run.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { openStorage } from '../../src/storage/index.ts';
import { cli } from '../helpers.ts';
import { dumpRun, ownedItemDatabases, type FixtureRun } from '../infra/globals-fixture.ts';
import { queryEach, startTcpCluster, type TcpCluster } from '../infra/tcp-cluster.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';

const q = queryEach;

/** Flips one byte in the middle of the stored object `key`: its manifest no longer matches it. */
async function damage(to: string, key: string): Promise<void> {
  const storage = openStorage(to);
  const chunks: Buffer[] = [];
  for await (const c of await storage.get(key)) chunks.push(c as Buffer);
  const bytes = Buffer.concat(chunks);
  const at = bytes.length >> 1;
  bytes[at] = bytes[at]! ^ 0xff;
  await storage.put(key, bytes);
}

const SERVICE = 'shop';
const ENV = 'prod';

describe('restore --server with a damaged object', { timeout: 300_000 }, () => {
  let source: TcpCluster;
  let target: TcpCluster;

  before(async () => {
    [source, target] = await Promise.all([startTcpCluster(), startTcpCluster()]);
    // charlie and bravo are the largest: restored first, so their downloads are the ones run beside
    // the globals. charlie's archive (over 8 MiB) is restored from its decompressed file, alpha's
    // from its stored object, decompressed in the CLI's process into pg_restore.
    await ownedItemDatabases(source, { alpha: 40, bravo: 100_000, charlie: 300_000 });
  });
  after(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
  });

  async function freshRun(): Promise<{ to: string; run: FixtureRun }> {
    const to = await tempLocation();
    return { to, run: await dumpRun({ adminUrl: source.adminUrl, urlOf: source.urlOf, databases: ['alpha', 'bravo', 'charlie'], to, service: SERVICE, environment: ENV }) };
  }

  it('a damaged database object fails that database, named, with nothing of it on the target; the others are restored and checked', async () => {
    const { to, run } = await freshRun();
    await damage(to, run.databases.find((d) => d.database === 'bravo')!.objectKey);
    const work = await tempDir('pgb-h10-work-');
    const r = await cli(['restore', '--server', '--from', to, '--service', SERVICE, '--environment', ENV, '--target-url', target.adminUrl, '--work-dir', work, '--json']);
    try {
      assert.equal(r.code, 1, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.equal(result.ok, false);
      assert.deepEqual(result.databases.map((d: { database: string; ok: boolean }) => [d.database, d.ok]), [['alpha', true], ['bravo', false], ['charlie', true]]);
      const bravo = result.databases.find((d: { database: string }) => d.database === 'bravo');
      assert.equal(bravo.created, false);
      assert.match(bravo.problems[0], /^the backup cannot be used: sha256 mismatch: the object hashes to [0-9a-f]{64}, the manifest says [0-9a-f]{64}/);
      assert.deepEqual(result.partial, [], 'nothing is left to drop by hand');
      assert.match(result.reason, /^1 of 3 databases failed: database bravo: the backup cannot be used: sha256 mismatch/);
      assert.match(r.stderr, /bravo: FAILED: the backup cannot be used: sha256 mismatch/);
      const names = (await q<{ datname: string }>(target.adminUrl, "SELECT datname FROM pg_database WHERE datname IN ('alpha', 'bravo', 'charlie') ORDER BY 1")).map((d) => d.datname);
      assert.deepEqual(names, ['alpha', 'charlie'], 'no database bravo was created from the damaged object');
      const [alpha] = await q<{ n: string; owner: string }>(target.urlOf('alpha'), "SELECT count(*)::text AS n, (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'alpha') AS owner FROM items");
      assert.deepEqual(alpha, { n: '40', owner: 'app_owner' });
      assert.match(r.stderr, /alpha: row counts: 1\/1 tables match the manifest/);
      assert.match(r.stderr, /charlie: privileges: owners, grants, default privileges, row-level security policies and database and role settings match/);
      const [charlie] = await q<{ n: string; sum: string }>(target.urlOf('charlie'), 'SELECT count(*)::text AS n, sum(id)::text AS sum FROM items');
      assert.deepEqual(charlie, { n: '300000', sum: '45000150000' });
      assert.deepEqual(await readdir(work), [], 'every downloaded archive was removed');
    } finally {
      await q(target.adminUrl, `DROP DATABASE IF EXISTS alpha;
        DROP DATABASE IF EXISTS charlie;
        DROP ROLE IF EXISTS app_owner`);
    }
  });

  it('damaged globals stop the restore before any database: the downloads run beside them are stopped and removed', async () => {
    const { to, run } = await freshRun();
    const storage = openStorage(to);
    const globals = JSON.parse(await storage.getText(run.globalsManifestKey!)) as { object: { name: string } };
    await damage(to, run.globalsManifestKey!.replace(/[^/]+$/, globals.object.name));
    const work = await tempDir('pgb-h10-work-');
    const r = await cli(['restore', '--server', '--from', to, '--service', SERVICE, '--environment', ENV, '--target-url', target.adminUrl, '--work-dir', work]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the globals \S+ cannot be used: sha256 mismatch: .*; nothing of it ran/);
    assert.deepEqual(await q(target.adminUrl, "SELECT datname FROM pg_database WHERE datname IN ('alpha', 'bravo', 'charlie')"), [], 'no database was restored');
    assert.deepEqual(await q(target.adminUrl, "SELECT rolname FROM pg_roles WHERE rolname = 'app_owner'"), [], 'no role was created');
    assert.deepEqual(await readdir(work), [], 'the downloads started beside the globals were removed');
  });
});
