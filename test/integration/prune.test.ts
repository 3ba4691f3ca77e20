import assert from 'node:assert/strict';
import { utimes } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { describe, it } from 'node:test';
import { dump, type DumpOptions } from '../../src/commands/dump.ts';
import { prune } from '../../src/commands/prune.ts';
import { openStorage, type Storage } from '../../src/storage/index.ts';
import { cli, createDatabase, dbUrl, s3Env, s3Keys, s3Location, s3Put } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

Object.assign(process.env, s3Env());
const DAY = 86_400_000;
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };

/** Takes a real backup of `db` dated `at` (the dump's clock), returning its ids and keys. */
async function backupAt(db: string, to: string, at: Date, extra: Partial<DumpOptions> = {}) {
  const r = await dump({ databaseUrl: dbUrl(db), to, service: 'api', environment: 'prod', logger: quiet, now: () => at, ...extra });
  return { id: r.manifest.id, objectKey: r.objectKey, manifestKey: r.manifestKey, stem: r.manifestKey.slice(0, -'.manifest.json'.length) };
}

async function keysOf(to: string): Promise<string[]> {
  if (to.startsWith('s3://')) return (await s3Keys(to)).sort();
  const out: string[] = [];
  for await (const o of openStorage(to).list('')) out.push(o.key);
  return out.sort();
}

const at = (iso: string) => new Date(iso);

describe('prune with real dumps', () => {
  for (const driver of ['s3', 'file'] as const) {
    it(`${driver}: GFS + max-age over 10 backups spread over 70 days keeps exactly the expected ones`, { timeout: 180_000 }, async () => {
      const db = await createDatabase('prunegfs', false);
      const to = driver === 's3' ? s3Location('prunegfs') : await tempLocation();
      const dates = ['2026-11-23', '2026-11-22', '2026-11-21', '2026-11-20', '2026-11-17', '2026-11-14', '2026-11-08', '2026-10-19', '2026-10-09', '2026-09-14'];
      const made = new Map<string, Awaited<ReturnType<typeof backupAt>>>();
      for (const d of dates) made.set(d, await backupAt(db, to, at(`${d}T03:00:00Z`), { checksumSidecars: ['md5'], schemaSidecar: d === '2026-11-20' }));
      const before = await keysOf(to);
      assert.equal(before.length, 31, before.join('\n')); // dump, .md5 and manifest each, and one .schema.sql

      const options = { from: to, keepDaily: 3, keepWeekly: 2, keepMonthly: 3, maxAge: '60d', keepProven: 0, logger: quiet, now: () => at('2026-11-23T12:00:00Z') };
      const dry = await prune(options);
      assert.equal(dry.ok, true);
      assert.equal(dry.applied, false);
      assert.deepEqual(await keysOf(to), before, 'a dry run deletes nothing');
      const group = dry.plan.groups[0]!;
      assert.deepEqual(group.backups.map((b) => [b.startedAt.toISOString().slice(0, 10), b.action, b.reasons.join('; ')]), [
        ['2026-11-23', 'keep', 'daily 2026-11-23; weekly 2026-W48; monthly 2026-11'],
        ['2026-11-22', 'keep', 'daily 2026-11-22; weekly 2026-W47'],
        ['2026-11-21', 'keep', 'daily 2026-11-21'],
        ['2026-11-20', 'delete', 'no keep rule selects it'],
        ['2026-11-17', 'delete', 'no keep rule selects it'],
        ['2026-11-14', 'delete', 'no keep rule selects it'],
        ['2026-11-08', 'delete', 'no keep rule selects it'],
        ['2026-10-19', 'keep', 'monthly 2026-10'],
        ['2026-10-09', 'delete', 'no keep rule selects it'],
        ['2026-09-14', 'delete', 'older than max-age 60d (70 d 9 h old)'],
      ]);

      const applied = await prune({ ...options, apply: true });
      assert.equal(applied.ok, true, applied.reason);
      assert.equal(applied.counts.deleted, 6);
      const keptStems = ['2026-11-23', '2026-11-22', '2026-11-21', '2026-10-19'].map((d) => made.get(d)!.stem);
      assert.deepEqual(await keysOf(to), keptStems.flatMap((s) => [`${s}.dump.zst`, `${s}.dump.zst.md5`, `${s}.manifest.json`]).sort());
      // The remaining backups still verify; a second prune has nothing to do.
      const listed = await cli(['list', '--from', to, '--json']);
      assert.equal(JSON.parse(listed.stdout).length, 4);
      const again = await prune({ ...options, apply: true });
      assert.equal(again.counts.deleted, 0);
    });
  }

  it('keep-proven: the newest drilled or recorded-verified backup survives keep-last and max-age', { timeout: 240_000 }, async () => {
    const db = await createDatabase('pruneproven', false);
    const to = s3Location('pruneproven');
    const now = Date.now();
    const oldest = await backupAt(db, to, new Date(now - 20 * DAY));
    const middle = await backupAt(db, to, new Date(now - 10 * DAY));
    const newest = await backupAt(db, to, new Date(now - 3_600_000));
    // A real drill of the oldest (its JSON report lands under drills/), a recorded verify of the middle one.
    const drilled = await cli(['drill', '--from', to, '--backup', oldest.objectKey]);
    assert.equal(drilled.code, 0, drilled.stderr);
    const verified = await cli(['verify', '--from', to, '--backup', middle.objectKey, '--record', '--json']);
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(JSON.parse(verified.stdout).recordUri, `${to}/${middle.stem}.verify.json`);

    const two = await cli(['prune', '--from', to, '--keep-last', '1', '--max-age', '7d', '--keep-proven', '2', '--apply', '--json']);
    assert.equal(two.code, 0, two.stderr);
    const plan = JSON.parse(two.stdout).plan.groups[0].backups;
    assert.deepEqual(plan.map((b: { id: string; action: string }) => [b.id, b.action]), [[newest.id, 'keep'], [middle.id, 'keep'], [oldest.id, 'keep']]);
    assert.match(plan[1].reasons[0], /^proven: verify \(archive\) OK /);
    assert.match(plan[2].reasons[0], /^proven: drill OK /);

    // keep-proven 1: only the newest proven (the verified one) is protected; the drilled one goes.
    const one = await cli(['prune', '--from', to, '--keep-last', '1', '--max-age', '7d', '--apply']);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, new RegExp(`delete .*${oldest.id}  older than max-age 7d`));
    const left = await s3Keys(to);
    assert.ok(!left.some((k) => k.startsWith(oldest.stem)), 'the oldest backup is gone, all of it');
    assert.ok(left.includes(`${middle.stem}.verify.json`) && left.includes(`${middle.stem}.manifest.json`));
    assert.ok(left.some((k) => k.startsWith('drills/api/') || k.startsWith('drills/')), 'drill logs are never pruned');
  });

  it('refuses (exit 1) a group whose newest backup is older than max-age, and still prunes the healthy one', { timeout: 120_000 }, async () => {
    const stale = await createDatabase('prunestale', false);
    const healthy = await createDatabase('prunehealthy', false);
    const to = s3Location('prunestale');
    const now = Date.now();
    for (const days of [3, 4, 5]) await backupAt(stale, to, new Date(now - days * DAY));
    const h = [await backupAt(healthy, to, new Date(now - 2 * DAY)), await backupAt(healthy, to, new Date(now - 3_600_000))];
    const before = await s3Keys(to);
    const r = await cli(['prune', '--from', to, '--keep-last', '1', '--max-age', '2d', '--apply']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`prune failed: prune refused for api/prod/${stale}: the newest complete backup is 3 d 0 h old \\(taken .*\\), over max-age 2d: the dumps are failing, nothing is deleted here`));
    const after = await s3Keys(to);
    assert.equal(after.filter((k) => k.includes(`/${stale}/`)).length, 6, 'nothing of the stale group is deleted');
    assert.deepEqual(after.filter((k) => k.includes(`/${healthy}/`)).sort(), [`${h[1]!.stem}.dump.zst`, `${h[1]!.stem}.manifest.json`].sort());
    assert.equal(before.length - after.length, 2);
  });

  it('cleans incomplete backups past the grace period, reported apart; a directory-format backup goes whole, manifest first', { timeout: 120_000 }, async () => {
    const db = await createDatabase('pruneinc');
    for (const to of [s3Location('pruneinc'), await tempLocation()]) {
      const dir = await backupAt(db, to, new Date(Date.now() - 5 * DAY), { format: 'directory', checksumSidecars: ['sha256'] });
      await backupAt(db, to, new Date(Date.now() - 60_000));
      const orphan = `api/prod/${db}/2026/01/01/${db}-20260101T000000Z-abcdef.dump.zst`;
      if (to.startsWith('s3://')) await s3Put(to, orphan, 'partial');
      else await openStorage(to).put(orphan, 'partial');
      const storage = openStorage(to);
      const deletes: string[] = [];
      const recording: Storage = {
        url: storage.url, uri: (k) => storage.uri(k), keyOf: (u) => storage.keyOf(u), upload: (k, b, o) => storage.upload(k, b, o), put: (k, b) => storage.put(k, b),
        get: (k) => storage.get(k), getText: (k) => storage.getText(k), list: (p) => storage.list(p),
        delete: async (k) => {
          deletes.push(k);
          await storage.delete(k);
        },
      };
      // The orphan was written just now: within the 1-day grace it stays.
      const first = await prune({ from: to, storage: recording, keepLast: 1, apply: true, logger: quiet });
      assert.equal(first.counts.deleted, 1);
      assert.equal(first.counts.incompleteDeleted, 0);
      assert.match(first.plan.groups[0]!.incomplete[0]!.reasons[0]!, /within the grace period 1d/);
      assert.equal(deletes[0], dir.manifestKey, 'the manifest goes first');
      assert.ok(deletes.length > 3 && deletes.slice(1).every((k) => k.startsWith(`${dir.stem}.dir`)), deletes.join('\n'));
      assert.ok(!(await keysOf(to)).some((k) => k.startsWith(dir.stem)));
      // Two days later (or with the file's mtime two days back) it is cleaned.
      if (to.startsWith('file://')) {
        const old = new Date(Date.now() - 2 * DAY);
        await utimes(path.join(fileURLToPath(to), ...orphan.split('/')), old, old);
      }
      const later = await prune({ from: to, keepLast: 1, apply: true, logger: quiet, now: to.startsWith('s3://') ? () => new Date(Date.now() + 2 * DAY) : undefined });
      assert.equal(later.counts.incompleteDeleted, 1);
      assert.match(later.plan.groups[0]!.incomplete[0]!.reasons[0]!, /^incomplete \(no manifest\), last written .* ago, over the grace period 1d/);
      assert.ok(!(await keysOf(to)).includes(orphan));
    }
  });

  it('prints the plan in a dry run and explains bad usage in one line', async () => {
    const to = await tempLocation();
    const none = await cli(['prune', '--from', to]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no retention rule given: use at least one of --keep-last/);
    const bad = await cli(['prune', '--from', to, '--keep-daily', 'seven']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--keep-daily "seven" is not a count/);
    const db = await createDatabase('prunecli', false);
    await backupAt(db, to, new Date(Date.now() - 3 * DAY));
    await backupAt(db, to, new Date(Date.now() - 60_000));
    const r = await cli(['prune', '--from', to, '--keep-last', '1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^ACTION  STARTED \\(UTC\\) +SIZE  BACKUP +WHY\\napi/prod/${db}\\nkeep    .*last 1\\ndelete  .*no keep rule selects it\\n$`));
    assert.match(r.stderr, /dry run: nothing deleted \(add --apply to delete\)/);
    assert.equal((await keysOf(to)).length, 4);
  });
});
