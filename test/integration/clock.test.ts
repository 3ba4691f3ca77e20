// A clock cannot lie (issue 24, item 3), on real dumps in Ceph RGW and file:// stores: a backup
// stamped in the future (a runner whose clock is ahead, or an object from a bucket writer) is
// never latest, never fresh, never a keeper and never deleted; a backup whose key stamp and
// manifest disagree is MISDATED and not latest; a drill report stamped in the future with ok:true
// hides no real failed drill; a dump on a machine whose clock is off warns, and refuses with
// --max-clock-skew before anything is written.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, type TestContext } from 'node:test';
import { backupKeys, drillFolder, drillStamp } from '../../src/backup/keys.ts';
import { dump, type DumpResult } from '../../src/commands/dump.ts';
import { prune } from '../../src/commands/prune.ts';
import { verify } from '../../src/commands/verify.ts';
import { UsageError } from '../../src/errors.ts';
import { openStorage } from '../../src/storage/index.ts';
import { cli, createDatabase, dbUrl, fileLocation, openMultipartUploads, s3Env, s3Keys, s3Location, sql } from '../helpers.ts';
import { WRITER_CREDENTIALS, writeOnlyBucket } from '../infra/write-only-bucket.ts';

Object.assign(process.env, s3Env());
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };
const ago = (ms: number) => new Date(Date.now() - ms);

/** A fresh file:// location, removed after the test. */
async function tempLocation(t: TestContext): Promise<string> {
  const to = await fileLocation();
  t.after(() => rm(fileURLToPath(to), { recursive: true, force: true }));
  return to;
}

/** A small real database (one table of 200 rows). */
async function smallDb(label: string): Promise<string> {
  const db = await createDatabase(label, false);
  await sql(db, 'CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200) g;');
  return db;
}

/** A real backup of `db` stamped `msAgo` back. */
function backupAt(db: string, to: string, msAgo: number): Promise<DumpResult> {
  return dump({ databaseUrl: dbUrl(db), to, logger: quiet, now: () => ago(msAgo) });
}

/**
 * A copy of a real backup under a key stamped `stampedAt`, as a runner whose clock is off (or a
 * bucket writer) would leave it: the same dump bytes (its sha256 still matches), a manifest with
 * the new id and `startedAt` = `manifestAt` (default: the key's stamp, so the two agree).
 */
async function forgedCopy(to: string, real: DumpResult, stampedAt: Date, manifestAt: Date = stampedAt): Promise<{ id: string; objectKey: string; manifestKey: string }> {
  const storage = openStorage(to);
  const m = real.manifest;
  const keys = backupKeys(m, stampedAt, '.dump.zst');
  const chunks: Buffer[] = [];
  for await (const c of await storage.get(real.objectKey)) chunks.push(c as Buffer);
  await storage.put(keys.objectKey, Buffer.concat(chunks));
  const manifest = { ...m, id: keys.id, startedAt: manifestAt.toISOString(), finishedAt: new Date(manifestAt.getTime() + 1000).toISOString(), object: { ...m.object, name: keys.objectKey.split('/').pop()! } };
  await storage.put(keys.manifestKey, JSON.stringify(manifest, null, 2));
  return { id: keys.id, objectKey: keys.objectKey, manifestKey: keys.manifestKey };
}

/** Every key under a location. */
async function keysOf(to: string): Promise<string[]> {
  if (to.startsWith('s3://')) return (await s3Keys(to)).sort();
  const out: string[] = [];
  for await (const o of openStorage(to).list('')) out.push(o.key);
  return out.sort();
}

describe('a backup stamped in the future', () => {
  for (const driver of ['s3', 'file'] as const) {
    it(`${driver}: is listed FUTURE, never latest (verify, ${driver === 's3' ? 'drill' : 'restore'}), never fresh, named by status (exit 1), kept by prune for inspection`, { timeout: 240_000 }, async (t) => {
      const db = await smallDb(`future${driver}`);
      const to = driver === 's3' ? s3Location('future') : await tempLocation(t);
      const older = await backupAt(db, to, 3 * DAY);
      const newest = await backupAt(db, to, 2 * DAY);
      // Three days ahead: the copy a runner with a wrong clock would write (its bytes restore fine).
      const future = await forgedCopy(to, newest, new Date(Date.now() + 3 * DAY));

      // list: marked, in text and JSON.
      const listed = await cli(['list', '--from', to, '--json']);
      assert.equal(listed.code, 0, listed.stderr);
      const rows = JSON.parse(listed.stdout) as { id: string; status: string; problem?: string }[];
      assert.deepEqual(rows.map((r) => [r.id, r.status]), [[future.id, 'future'], [newest.manifest.id, 'ok'], [older.manifest.id, 'ok']]);
      assert.match(rows[0]!.problem!, /^stamped in the future: its key says \S+, (3 d 0 h|71 h 59 min) ahead of this clock .*--max-clock-skew\): a clock is wrong or the backup was forged; it is not trusted$/);
      const human = await cli(['list', '--from', to]);
      assert.match(human.stdout.split('\n')[1]!, / FUTURE /);
      assert.match(human.stderr, /1 of them is stamped in the future or misdated: never "latest"/);

      // verify --max-age: the genuine newest is 2 days old: not fooled by the one "from the future".
      const fresh = await cli(['verify', '--from', to, '--level', 'none', '--max-age', '30h']);
      assert.equal(fresh.code, 1, fresh.stderr);
      assert.match(fresh.stderr, /the newest backup of default\/default\/\S+ is 48 h \d+ min old .*over --max-age 30h: backups are overdue/);
      assert.match(fresh.stderr, /not counted: .* is stamped in the future/);
      // latest is the genuine newest.
      const checked = await verify({ from: to, level: 'checksum', logger: quiet });
      assert.equal(checked.ok, true, checked.reason);
      assert.equal(checked.manifest!.id, newest.manifest.id);
      if (driver === 's3') {
        const drilled = await cli(['drill', '--from', to, '--json']);
        assert.equal(drilled.code, 0, drilled.stderr);
        assert.equal(JSON.parse(drilled.stdout).backupId, newest.manifest.id);
        assert.match(drilled.stderr, /"latest" passes over \S+: stamped in the future/);
      } else {
        const target = await createDatabase('futurerestore', false);
        const restored = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), '--json']);
        assert.equal(restored.code, 0, restored.stderr);
        assert.match(JSON.parse(restored.stdout).backupUri, new RegExp(`${newest.manifest.id}\\.dump\\.zst$`));
        assert.deepEqual(await sql(target, 'SELECT count(*)::int AS n FROM t'), [{ n: 200 }]);
      }

      // status: exit 1, the future backup named; the newest shown is the genuine one.
      const status = await cli(['status', '--from', to, '--max-age', '30d', '--json']);
      assert.equal(status.code, 1, status.stderr);
      const fleet = JSON.parse(status.stdout);
      assert.equal(fleet.ok, false);
      const d = fleet.databases[0];
      assert.equal(d.state, 'untrusted');
      assert.equal(d.newest.id, newest.manifest.id);
      assert.deepEqual(d.untrusted.map((u: { kind: string; key: string; time: string }) => [u.kind, u.key, u.time]), [['backup', future.manifestKey, 'future']]);
      assert.equal(d.backups.complete, 2);
      const views = await mkdtemp(path.join(os.tmpdir(), 'pgb-clock-views-'));
      t.after(() => rm(views, { recursive: true, force: true }));
      const table = await cli(['status', '--from', to, '--max-age', '30d', '--html', path.join(views, 'index.html'), '--markdown', path.join(views, 'status.md')]);
      assert.equal(table.code, 1);
      assert.match(table.stdout, /^FUTURE +default\/default\//m);
      assert.match(table.stdout, /: FUTURE backup \S+\.manifest\.json: stamped in the future/);
      assert.match(table.stdout, /1 with records stamped in the future or misdated/);
      const page = await readFile(path.join(views, 'index.html'), 'utf8');
      assert.match(page, /<span class="badge badge-untrusted">FUTURE<\/span>/);
      assert.match(page, /<li>FUTURE backup \S+: stamped in the future: its key says/);
      const md = await readFile(path.join(views, 'status.md'), 'utf8');
      assert.match(md, /^\| 🟣 FUTURE \| default\/default\//m);
      assert.match(md, /\*\*default\/default\/\S+\*\*: FUTURE backup \S+: stamped in the future/);

      // prune --keep-last 1 --apply: the genuine newest is the keeper, the older one goes, the future one stays.
      const pruned = await cli(['prune', '--from', to, '--keep-last', '1', '--keep-proven', '0', '--apply']);
      assert.equal(pruned.code, 0, pruned.stderr);
      assert.match(pruned.stdout, new RegExp(`keep .*/${newest.manifest.id}  last 1$`, 'm'));
      assert.match(pruned.stdout, new RegExp(`keep .*/${future.id}  FUTURE \\(stamped in the future: .*\\), never counted as a keeper; kept for inspection: stamped in the future$`, 'm'));
      assert.match(pruned.stderr, /is FUTURE \(stamped in the future: .*\): never counted as a keeper, never deleted; kept for inspection/);
      const left = (await keysOf(to)).filter((k) => !k.startsWith('drills/')); // the s3 drill's log and report stay
      assert.deepEqual(left, [future.objectKey, future.manifestKey, newest.objectKey, newest.manifestKey].sort());
    });
  }

  it('file: without a real backup newer than max-age, the future one does not save the group from being refused, and a tighter --max-clock-skew catches a smaller lead', { timeout: 120_000 }, async (t) => {
    const db = await smallDb('futurestale');
    const to = await tempLocation(t);
    const old = await backupAt(db, to, 40 * DAY);
    const ahead = await forgedCopy(to, old, new Date(Date.now() + 30 * 60_000)); // 30 min ahead
    // Within a 1 h tolerance it is believed (and is the newest): prune keeps it as last 1.
    const lenient = await prune({ from: to, keepLast: 1, maxAge: '30d', maxClockSkew: '1h', logger: quiet });
    assert.equal(lenient.ok, true, lenient.reason);
    assert.deepEqual(lenient.plan.groups[0]!.backups.map((b) => [b.id, b.action]), [[ahead.id, 'keep'], [old.manifest.id, 'delete']]);
    // With the default 10 min it is FUTURE: the real newest is 40 days old, the group is refused, nothing is deleted.
    const strict = await prune({ from: to, keepLast: 1, maxAge: '30d', apply: true, logger: quiet });
    assert.equal(strict.ok, false);
    assert.match(strict.reason!, /^prune refused for default\/default\/\S+: the newest restorable backup is 40 d 0 h old/);
    assert.equal(strict.counts.untrustedTime, 1);
    assert.equal((await keysOf(to)).length, 4);
  });
});

describe('a backup whose key stamp and manifest disagree', () => {
  it('s3: is listed MISDATED, never latest, and named by status (exit 1)', { timeout: 120_000 }, async (t) => {
    const db = await smallDb('misdated');
    const to = s3Location('misdated');
    const real = await backupAt(db, to, 2 * HOUR);
    // Its key says 1 hour ago (newer than the real one), its manifest says 3 hours ago.
    const misdated = await forgedCopy(to, real, ago(HOUR), ago(3 * HOUR));
    const listed = await cli(['list', '--from', to, '--json']);
    const rows = JSON.parse(listed.stdout) as { id: string; status: string; problem?: string }[];
    assert.deepEqual(rows.map((r) => [r.id, r.status]), [[misdated.id, 'misdated'], [real.manifest.id, 'ok']]);
    assert.match(rows[0]!.problem!, /^misdated: its key is stamped \S+, its startedAt says \S+ \((2 h 0|1 h 59) min apart; the key is made from startedAt\): one of them was changed; it is not trusted$/);
    const checked = await verify({ from: to, level: 'none', maxAge: '30h', logger: quiet });
    assert.equal(checked.ok, true, checked.reason);
    assert.equal(checked.manifest!.id, real.manifest.id);
    const status = await cli(['status', '--from', to, '--json']);
    assert.equal(status.code, 1, status.stderr);
    const d = JSON.parse(status.stdout).databases[0];
    assert.equal(d.newest.id, real.manifest.id);
    assert.deepEqual(d.untrusted.map((u: { time: string; key: string }) => [u.time, u.key]), [['misdated', misdated.manifestKey]]);
    assert.match(d.problems.join('\n'), /MISDATED backup s3:\/\/\S+: misdated: its key is stamped/);
  });
});

describe('a drill report stamped in the future', () => {
  it('s3: with ok:true it hides no real failed drill: status exits 1 naming both, prune does not call the backup proven', { timeout: 240_000 }, async (t) => {
    const db = await smallDb('futuredrill');
    const to = s3Location('futuredrill');
    const backup = await backupAt(db, to, HOUR);
    // A real failed drill: its RTO cannot fit a budget of 1 ms.
    const failed = await cli(['drill', '--from', to, '--max-rto', '1ms', '--json']);
    assert.equal(failed.code, 1, failed.stderr);
    assert.equal(JSON.parse(failed.stdout).ok, false);
    // A report "from the future" saying the same backup passed.
    const labels = { service: 'default', environment: 'default', database: db };
    const at = new Date(Date.now() + 2 * DAY);
    const forgedKey = `${drillFolder(labels, at)}${backup.manifest.id}-drill-${drillStamp(at)}.json`;
    await openStorage(to).put(forgedKey, JSON.stringify({ ok: true, backupId: backup.manifest.id, startedAt: at.toISOString(), rtoMs: 1000, problems: [] }));

    const status = await cli(['status', '--from', to, '--json']);
    assert.equal(status.code, 1, status.stderr);
    const d = JSON.parse(status.stdout).databases[0];
    assert.equal(d.state, 'failed');
    assert.equal(d.lastDrill.ok, false);
    assert.equal(d.backups.proven, 0);
    assert.deepEqual(d.untrusted.map((u: { kind: string; key: string; time: string }) => [u.kind, u.key, u.time]), [['drill report', forgedKey, 'future']]);
    assert.match(d.problems.join('\n'), /last drill failed/);

    const plan = await cli(['prune', '--from', to, '--max-age', '30d', '--keep-proven', '1']);
    assert.equal(plan.code, 0, plan.stderr);
    assert.doesNotMatch(plan.stdout, /proven:/);
    assert.match(plan.stderr, /ignoring the drill report \S+: stamped in the future: its key says \S+, 4\d h \d+ min ahead of this clock/);
  });
});

describe('dump checks this machine\'s clock against the store\'s', () => {
  it('RGW: a clock 2 h ahead warns (the backup is written); with --max-clock-skew the dump refuses with both times and writes nothing; a right clock passes', { timeout: 120_000 }, async (t) => {
    const db = await smallDb('skew');
    const ahead = () => new Date(Date.now() + 2 * HOUR);
    const warned: string[] = [];
    const warnTo = s3Location('skewwarn');
    const written = await dump({ databaseUrl: dbUrl(db), to: warnTo, now: ahead, logger: { ...quiet, warn: (m: string) => void warned.push(m) } });
    assert.ok((await s3Keys(warnTo)).includes(written.manifestKey));
    assert.ok(warned.some((w) => /^this machine's clock says \S+, the store s3:\/\/\S+ says \S+ \(its Date header\): 2 h 0 min ahead, over 10 min 0 s \(--max-clock-skew\): the backup is stamped with this machine's time, so readers take it as FUTURE/.test(w)), warned.join('\n'));

    const refuseTo = s3Location('skewrefuse');
    await assert.rejects(dump({ databaseUrl: dbUrl(db), to: refuseTo, now: ahead, maxClockSkew: '10m', logger: quiet }), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      const times = [...err.message.matchAll(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z/g)].map((m) => Date.parse(m[0]));
      assert.equal(times.length, 2, err.message);
      assert.ok(Math.abs(times[0]! - times[1]! - 2 * HOUR) < 60_000, err.message);
      assert.match(err.message, /: refusing to stamp a backup with this time, nothing was written; set the clock right \(NTP/);
      return true;
    });
    assert.deepEqual(await s3Keys(refuseTo), []);
    assert.deepEqual(await openMultipartUploads(refuseTo), []);

    // The CLI, with this machine's real clock: the clocks agree, the dump goes through.
    const ok = await cli(['dump', '--to', s3Location('skewok'), '--max-clock-skew', '1m'], { DATABASE_URL: dbUrl(db) });
    assert.equal(ok.code, 0, ok.stderr);
    assert.doesNotMatch(ok.stderr, /clock/);
  });

  it('RGW with write-only credentials: the store\'s clock comes from the Date header of a refused request (403), and the dump still refuses', { timeout: 120_000 }, async () => {
    // The writer of test/integration/least-privilege.test.ts: PutObject only, every read and list denied.
    const { to } = await writeOnlyBucket();
    const db = await smallDb('skewwriter');
    const writer = { credentials: WRITER_CREDENTIALS };
    await assert.rejects(dump({ databaseUrl: dbUrl(db), to, s3: writer, now: () => new Date(Date.now() - 3 * HOUR), maxClockSkew: '10m', logger: quiet }), /: (3 h 0|2 h 59) min behind, over 10 min 0 s \(--max-clock-skew\): refusing to stamp a backup/);
    assert.deepEqual(await s3Keys(to), []);
    // With the right clock the same credentials dump.
    const r = await dump({ databaseUrl: dbUrl(db), to, s3: writer, maxClockSkew: '10m', logger: quiet });
    assert.ok((await s3Keys(to)).includes(r.manifestKey));
  });

  it('file://: the store shares this machine\'s clock: nothing to compare, no warning, no refusal', { timeout: 60_000 }, async (t) => {
    const db = await smallDb('skewfile');
    const warned: string[] = [];
    const to = await tempLocation(t);
    const r = await dump({ databaseUrl: dbUrl(db), to, now: () => new Date(Date.now() + 2 * HOUR), maxClockSkew: '10m', logger: { ...quiet, warn: (m: string) => void warned.push(m) } });
    assert.ok(r.manifest.id);
    assert.deepEqual(warned, []);
  });

  it('a --max-clock-skew that is not a duration is a usage error before anything is written', async (t) => {
    const to = await tempLocation(t);
    const r = await cli(['dump', '--to', to, '--max-clock-skew', 'soon'], { DATABASE_URL: dbUrl('postgres') });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--max-clock-skew "soon" is not a duration/);
    assert.deepEqual(await keysOf(to), []);
  });
});
