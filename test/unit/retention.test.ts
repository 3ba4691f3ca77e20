import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { deletionOrder, isoWeekOf, parseBackupObjectKey, planRetention, type RetentionPolicy, type StoredBackup } from '../../src/backup/retention.ts';
import { prune, policyFrom } from '../../src/commands/prune.ts';
import { UsageError } from '../../src/errors.ts';
import { FileStorage } from '../../src/storage/file/file.ts';
import type { Storage } from '../../src/storage/index.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { manifestFor } from '../manifest-fixture.ts';

const DAY = 86_400_000;
const now = new Date('2026-11-23T12:00:00Z');
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };

let seq = 0;
function backup(at: string | Date, extra: Partial<StoredBackup> = {}): StoredBackup {
  const startedAt = new Date(at);
  const iso = startedAt.toISOString();
  const id = `app-${iso.replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}-${(seq++).toString(16).padStart(6, '0')}`;
  const stem = `api/prod/app/${iso.slice(0, 4)}/${iso.slice(5, 7)}/${iso.slice(8, 10)}/${id}`;
  return {
    service: 'api', environment: 'prod', database: 'app', id, stem, startedAt, complete: true,
    keys: [`${stem}.dump.zst`, `${stem}.manifest.json`], sizeBytes: 100, lastModified: new Date(startedAt.getTime() + 60_000), ...extra,
  };
}
const kept = (plan: ReturnType<typeof planRetention>) => plan.groups.flatMap((g) => [...g.backups, ...g.incomplete]).filter((b) => b.action === 'keep').map((b) => b.id);
const deleted = (plan: ReturnType<typeof planRetention>) => plan.groups.flatMap((g) => [...g.backups, ...g.incomplete]).filter((b) => b.action === 'delete').map((b) => b.id);

describe('retention rules', () => {
  it('GFS: keeps the newest of each of the last N days, ISO weeks and months that have a backup', () => {
    // Two backups a day for 70 days, at 03:00 and 15:00 UTC.
    const all: StoredBackup[] = [];
    for (let d = 0; d < 70; d++) for (const h of [3, 15]) all.push(backup(new Date(Date.UTC(2026, 10, 23 - d, h))));
    // Planned after the day's last dump (a backup stamped after `now` would be FUTURE: clock.test.ts).
    const plan = planRetention(all, { keepDaily: 3, keepWeekly: 2, keepMonthly: 3, keepProven: 0 }, new Date('2026-11-23T16:00:00Z'));
    const keptStarts = plan.groups[0]!.backups.filter((b) => b.action === 'keep').map((b) => b.startedAt.toISOString());
    assert.deepEqual(keptStarts, [
      '2026-11-23T15:00:00.000Z', // daily 23, weekly W48, monthly 11 (the newest)
      '2026-11-22T15:00:00.000Z', // daily 22, weekly W47 (Sunday)
      '2026-11-21T15:00:00.000Z', // daily 21
      '2026-10-31T15:00:00.000Z', // monthly 10
      '2026-09-30T15:00:00.000Z', // monthly 09
    ]);
    const newest = plan.groups[0]!.backups[0]!;
    assert.deepEqual(newest.reasons, ['daily 2026-11-23', 'weekly 2026-W48', 'monthly 2026-11']);
    assert.equal(plan.groups[0]!.backups.filter((b) => b.action === 'delete').length, 135);
  });

  it('ISO weeks start on Monday and belong to the year of their Thursday', () => {
    assert.equal(isoWeekOf(new Date('2026-11-22T23:59:59Z')), '2026-W47'); // Sunday
    assert.equal(isoWeekOf(new Date('2026-11-23T00:00:00Z')), '2026-W48'); // Monday
    assert.equal(isoWeekOf(new Date('2027-01-01T00:00:00Z')), '2026-W53');
    assert.equal(isoWeekOf(new Date('2024-12-30T00:00:00Z')), '2025-W01');
  });

  it('max-age caps the keep rules but never the newest proven backup', () => {
    const old = backup(new Date(now.getTime() - 40 * DAY), { proof: 'drill OK 2026-10-15T00:00:00Z' });
    const older = backup(new Date(now.getTime() - 50 * DAY), { proof: 'drill OK 2026-10-05T00:00:00Z' });
    const recent = backup(new Date(now.getTime() - DAY));
    const plan = planRetention([older, old, recent], { keepLast: 10, maxAgeMs: 30 * DAY }, now);
    assert.deepEqual(kept(plan), [recent.id, old.id]);
    assert.deepEqual(deleted(plan), [older.id]);
    assert.match(plan.groups[0]!.backups[1]!.reasons[0]!, /^proven: drill OK/);
    assert.match(plan.groups[0]!.backups[2]!.reasons[0]!, /^older than max-age 30d \(50 d 0 h old\)/);
  });

  it('refuses a group whose newest backup is older than max-age, and one whose dumps only leave incomplete backups', () => {
    const stale = [backup(new Date(now.getTime() - 3 * DAY)), backup(new Date(now.getTime() - 9 * DAY)), backup(new Date(now.getTime() - 10 * DAY), { complete: false, keys: ['x'] })];
    const plan = planRetention(stale, { keepLast: 1, maxAgeMs: 2 * DAY }, now);
    assert.match(plan.groups[0]!.refused!, /newest complete backup is 3 d 0 h old .* over max-age 2d: the dumps are failing/);
    assert.deepEqual(deleted(plan), []);
    const onlyIncomplete = planRetention([backup(new Date(now.getTime() - 5 * DAY), { complete: false, lastModified: new Date(now.getTime() - 5 * DAY) })], { keepLast: 1 }, now);
    assert.match(onlyIncomplete.groups[0]!.refused!, /no complete backup/);
    assert.deepEqual(deleted(onlyIncomplete), []);
    // The first dump of a new database, still uploading: not refused, nothing deleted.
    const firstDump = planRetention([backup(new Date(now.getTime() - 3_600_000), { complete: false, lastModified: new Date(now.getTime() - 60_000) })], { keepLast: 1 }, now);
    assert.equal(firstDump.groups[0]!.refused, undefined);
    assert.deepEqual(deleted(firstDump), []);
  });

  it('deletes incomplete backups only after the grace period, judged by their newest object', () => {
    const complete = backup(new Date(now.getTime() - 60_000));
    const abandoned = backup(new Date(now.getTime() - 3 * DAY), { complete: false, lastModified: new Date(now.getTime() - 3 * DAY) });
    const uploading = backup(new Date(now.getTime() - 3 * DAY), { complete: false, lastModified: new Date(now.getTime() - 3_600_000) });
    const plan = planRetention([complete, abandoned, uploading], { keepLast: 1, incompleteGraceMs: DAY }, now);
    assert.deepEqual(deleted(plan), [abandoned.id]);
    assert.match(plan.groups[0]!.incomplete.find((b) => b.id === uploading.id)!.reasons[0]!, /within the grace period/);
  });

  it('applies rules per service/environment/database', () => {
    const a = [backup('2026-11-20T00:00:00Z'), backup('2026-11-21T00:00:00Z')];
    const b = [backup('2026-11-10T00:00:00Z', { database: 'other' }), backup('2026-11-11T00:00:00Z', { database: 'other' })];
    const plan = planRetention([...a, ...b], { keepLast: 1, keepProven: 0 }, now);
    assert.equal(plan.groups.length, 2);
    assert.deepEqual(kept(plan).sort(), [a[1]!.id, b[1]!.id].sort());
  });

  it('rejects a policy that keeps nothing, and malformed counts', () => {
    assert.throws(() => planRetention([], {}, now), (e: unknown) => e instanceof UsageError && /no retention rule given/.test(e.message));
    assert.throws(() => policyFrom({ keepLast: '-1' }), (e: unknown) => e instanceof UsageError && /--keep-last "-1" is not a count/.test(e.message));
    assert.throws(() => policyFrom({ maxAge: 'soon' }), UsageError);
    assert.deepEqual(policyFrom({ keepDaily: '7', maxAge: '30d' }), { keepLast: undefined, keepDaily: 7, keepWeekly: undefined, keepMonthly: undefined, maxAgeMs: 30 * DAY, keepProven: 1, incompleteGraceMs: DAY, maxClockSkewMs: 600_000 });
  });

  it('parses every object key of the layout, and nothing else', () => {
    const stem = 'api/prod/app/2026/11/23/app-20261123T030000Z-abc123';
    for (const suffix of ['.dump.zst', '.manifest.json', '.dump.zst.md5', '.schema.sql', '.verify.json', '.dir/toc.dat.zst', '.dir/3001.dat.zst']) {
      const p = parseBackupObjectKey(stem + suffix);
      assert.equal(p?.stem, stem, suffix);
      assert.equal(p?.startedAt.toISOString(), '2026-11-23T03:00:00.000Z');
    }
    for (const other of ['drills/api/prod/app/2026-Q4/app-20261123T030000Z-abc123-drill-20261123T040000Z.json', 'api/prod/app/notes.txt', `${stem}.dir/sub/x`, 'api/prod/app/2026/11/23/app-20261123T030000Z-abc123']) {
      assert.equal(parseBackupObjectKey(other), undefined, other);
    }
  });

  it('deletes the manifest first', () => {
    assert.deepEqual(deletionOrder(['a.dir/1.dat.zst', 'a.dump.zst.md5', 'a.manifest.json', 'a.dir/toc.dat.zst']), ['a.manifest.json', 'a.dir/1.dat.zst', 'a.dump.zst.md5', 'a.dir/toc.dat.zst']);
  });
});

/** Random backups over 400 days in two groups, some proven, some incomplete. */
const backupsArb = fc
  .array(
    fc.record({
      // Up to 10 min ahead: clock noise within the default --max-clock-skew (beyond it: clock.test.ts).
      offsetMin: fc.integer({ min: -10, max: 400 * 24 * 60 }),
      group: fc.constantFrom('app', 'other'),
      proven: fc.boolean(),
      complete: fc.boolean(),
      idleMin: fc.integer({ min: 0, max: 3 * 24 * 60 }),
    }),
    { maxLength: 60 },
  )
  .map((specs) =>
    specs.map((s) => {
      const startedAt = new Date(now.getTime() - s.offsetMin * 60_000);
      return backup(startedAt, { database: s.group, complete: s.complete || s.proven, proof: s.proven ? 'drill OK' : undefined, lastModified: new Date(Math.max(startedAt.getTime(), now.getTime() - s.idleMin * 60_000)) });
    }),
  );
const policyArb: fc.Arbitrary<RetentionPolicy> = fc
  .record({
    keepLast: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }),
    keepDaily: fc.option(fc.integer({ min: 0, max: 10 }), { nil: undefined }),
    keepWeekly: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }),
    keepMonthly: fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined }),
    maxAgeMs: fc.option(fc.integer({ min: 1, max: 500 }).map((d) => d * DAY), { nil: undefined }),
    keepProven: fc.integer({ min: 0, max: 3 }),
    incompleteGraceMs: fc.integer({ min: 1, max: 48 }).map((h) => h * 3_600_000),
  })
  .filter((p) => Boolean(p.keepLast || p.keepDaily || p.keepWeekly || p.keepMonthly || p.maxAgeMs));

describe('retention properties', () => {
  it('every backup is planned exactly once', () => {
    fc.assert(fc.property(backupsArb, policyArb, (backups, policy) => {
      const plan = planRetention(backups, policy, now);
      const ids = plan.groups.flatMap((g) => [...g.backups, ...g.incomplete]).map((b) => b.id);
      assert.deepEqual([...ids].sort(), backups.map((b) => b.id).sort());
    }));
  });

  it('never deletes the newest keep-proven proven backups of a group', () => {
    fc.assert(fc.property(backupsArb, policyArb, (backups, policy) => {
      const plan = planRetention(backups, policy, now);
      for (const g of plan.groups) {
        const proven = g.backups.filter((b) => b.proof).slice(0, policy.keepProven);
        for (const b of proven) assert.equal(b.action, 'keep');
      }
    }));
  });

  it('never deletes the newest complete backup of a group, nor anything in a stale group', () => {
    fc.assert(fc.property(backupsArb, policyArb, (backups, policy) => {
      const plan = planRetention(backups, policy, now);
      for (const g of plan.groups) {
        if (g.backups[0]) assert.equal(g.backups[0].action, 'keep');
        const newest = g.backups[0];
        const idle = (b: StoredBackup) => now.getTime() - Math.max(b.lastModified.getTime(), b.startedAt.getTime());
        const stale = newest ? policy.maxAgeMs !== undefined && now.getTime() - newest.startedAt.getTime() > policy.maxAgeMs : g.incomplete.some((b) => idle(b) > policy.incompleteGraceMs!);
        assert.equal(Boolean(g.refused), stale);
        if (stale) assert.ok([...g.backups, ...g.incomplete].every((b) => b.action === 'keep'));
      }
    }));
  });

  it('is idempotent: pruning what the plan keeps deletes nothing more', () => {
    fc.assert(fc.property(backupsArb, policyArb, (backups, policy) => {
      const first = planRetention(backups, policy, now);
      const survivors = new Set(kept(first));
      const second = planRetention(backups.filter((b) => survivors.has(b.id)), policy, now);
      assert.deepEqual(deleted(second), []);
    }));
  });

  it('keeps the newest N with keep-last N, and more rules keep a superset', () => {
    fc.assert(fc.property(backupsArb, policyArb, fc.integer({ min: 1, max: 5 }), (backups, policy, extra) => {
      const base = { ...policy, maxAgeMs: undefined, keepLast: Math.max(1, policy.keepLast ?? 0) };
      const plan = planRetention(backups, base, now);
      for (const g of plan.groups) if (!g.refused) for (const b of g.backups.slice(0, base.keepLast)) assert.equal(b.action, 'keep');
      const wider = planRetention(backups, { ...base, keepLast: base.keepLast + extra, keepDaily: (base.keepDaily ?? 0) + extra }, now);
      const widerKept = new Set(kept(wider));
      for (const id of kept(plan)) assert.ok(widerKept.has(id));
    }));
  });
});

describe('prune execution', () => {
  it('deletes each backup manifest first, oldest backup first, and never touches drill logs', async (t) => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'pgb-prune-unit-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const inner = new FileStorage(root);
    const stems = ['api/prod/app/2026/11/01/app-20261101T000000Z-aaaaaa', 'api/prod/app/2026/11/02/app-20261102T000000Z-bbbbbb', 'api/prod/app/2026/11/23/app-20261123T000000Z-cccccc'];
    for (const stem of stems) {
      await inner.put(`${stem}.dir/toc.dat.zst`, 'x');
      await inner.put(`${stem}.dir/3001.dat.zst`, 'x');
      await inner.put(`${stem}.dir.sha256`, 'x');
      await inner.put(`${stem}.manifest.json`, manifestFor(stem, { files: { 'toc.dat': 1, '3001.dat': 1 } }));
    }
    await inner.put('drills/api/prod/app/2026-Q4/app-20261101T000000Z-aaaaaa-drill-20261101T010000Z.json', JSON.stringify({ ok: false, backupId: 'app-20261101T000000Z-aaaaaa', startedAt: '2026-11-01T01:00:00Z' }));
    const deletes: string[] = [];
    const recording: Storage = {
      url: inner.url,
      uri: (k) => inner.uri(k),
      keyOf: (u) => inner.keyOf(u),
      upload: (k, b, o) => inner.upload(k, b, o),
      put: (k, b) => inner.put(k, b),
      get: (k) => inner.get(k),
      getText: (k) => inner.getText(k),
      list: (p) => inner.list(p),
      delete: async (key) => {
        deletes.push(key);
        await inner.delete(key);
      },
    };
    const result = await prune({ from: inner.url, storage: recording, keepLast: 1, apply: true, logger: quiet, now: () => now });
    assert.equal(result.ok, true);
    assert.equal(result.counts.deleted, 2);
    assert.equal(deletes.length, 8);
    assert.equal(deletes[0], `${stems[0]}.manifest.json`);
    assert.ok(deletes.slice(1, 4).every((k) => k.startsWith(stems[0]!)));
    assert.equal(deletes[4], `${stems[1]}.manifest.json`);
    const left: string[] = [];
    for await (const o of inner.list('')) left.push(o.key);
    assert.deepEqual(left.sort(), [`${stems[2]}.dir.sha256`, `${stems[2]}.dir/3001.dat.zst`, `${stems[2]}.dir/toc.dat.zst`, `${stems[2]}.manifest.json`, 'drills/api/prod/app/2026-Q4/app-20261101T000000Z-aaaaaa-drill-20261101T010000Z.json'].sort());
  });

  it('a dry run deletes nothing', async (t) => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'pgb-prune-unit-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const inner = new FileStorage(root);
    for (const d of ['01', '02']) {
      const stem = `api/prod/app/2026/11/${d}/app-202611${d}T000000Z-aaaaaa`;
      await inner.put(`${stem}.dump.zst`, 'xyz');
      await inner.put(`${stem}.manifest.json`, manifestFor(stem, { sizeBytes: 3 }));
    }
    const result = await prune({ from: inner.url, keepLast: 1, logger: quiet, now: () => now });
    assert.equal(result.applied, false);
    assert.equal(result.counts.deleted, 1);
    let n = 0;
    for await (const _ of inner.list('')) n++;
    assert.equal(n, 4);
  });
});
