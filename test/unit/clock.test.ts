// Judging a record's time (src/backup/clock.ts) and retention with backups stamped in the future
// or misdated (src/backup/retention.ts): never a keeper, never counted against the genuinely
// newest backup, never deleted because of a clock.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_MAX_CLOCK_SKEW_MS, STAMP_MARGIN_MS, judgeTimes, parseKeyStamp, parseMaxClockSkew, type ClockCheck } from '../../src/backup/clock.ts';
import { drillStamp, utcStamp } from '../../src/backup/keys.ts';
import { planRetention, type PlannedBackup, type RetentionPolicy, type StoredBackup } from '../../src/backup/retention.ts';
import { UsageError } from '../../src/errors.ts';

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const now = new Date('2026-12-07T12:00:00Z');
const clock: ClockCheck = { now, maxSkewMs: DEFAULT_MAX_CLOCK_SKEW_MS };
const at = (ms: number) => new Date(now.getTime() + ms);

describe('judging a record\'s time', () => {
  it('a record stamped later than now + the tolerance is FUTURE, whichever stamp says so', () => {
    for (const record of [
      { kind: 'backup', keyStamp: at(11 * MIN) },
      { kind: 'backup', keyStamp: at(-HOUR), at: at(3 * DAY).toISOString() },
      { kind: 'backup', keyStamp: at(-HOUR), at: at(-HOUR).toISOString(), finishedAt: at(2 * HOUR).toISOString() },
      { kind: 'drill report', at: at(365 * DAY) },
      { kind: 'verify record', at: at(10 * MIN + 1).toISOString() },
    ]) {
      const verdict = judgeTimes(clock, record);
      assert.equal(verdict?.time, 'future', JSON.stringify(record));
      assert.match(verdict.problem, /^stamped in the future: .* ahead of this clock \(2026-12-07T12:00:00Z; tolerance 10 min 0 s, --max-clock-skew\): a clock is wrong or the .* was forged; it is not trusted$/);
    }
    assert.match(judgeTimes(clock, { kind: 'backup', keyStamp: at(3 * DAY) })!.problem, /its key says 2026-12-10T12:00:00Z, 3 d 0 h ahead/);
  });

  it('a record within the tolerance, or in the past however far, is believed', () => {
    for (const ms of [10 * MIN - 1000, MIN, 0, -HOUR, -400 * DAY]) {
      assert.equal(judgeTimes(clock, { kind: 'backup', keyStamp: at(ms), at: at(ms + 400).toISOString(), finishedAt: at(ms + 500).toISOString() }), undefined, String(ms));
    }
    // The tolerance is the option's: 1 min makes 2 min ahead FUTURE.
    assert.equal(judgeTimes({ now, maxSkewMs: MIN }, { kind: 'backup', keyStamp: at(2 * MIN) })?.time, 'future');
  });

  it('a key stamp and a startedAt more than the margin apart are MISDATED; the key made from startedAt never is', () => {
    const started = at(-HOUR + 789); // 789 ms into its second: the key stamp drops the milliseconds
    const keyStamp = parseKeyStamp(utcStamp(started))!;
    assert.equal(judgeTimes(clock, { kind: 'backup', keyStamp, at: started.toISOString() }), undefined);
    const drillKey = parseKeyStamp(drillStamp(started))!;
    assert.equal(judgeTimes(clock, { kind: 'drill report', keyStamp: drillKey, at: started.toISOString() }), undefined);
    for (const apart of [STAMP_MARGIN_MS + 1, -STAMP_MARGIN_MS - 1, -DAY, 5 * MIN]) {
      const verdict = judgeTimes(clock, { kind: 'backup', keyStamp, at: new Date(keyStamp.getTime() + apart).toISOString() });
      assert.equal(verdict?.time, 'misdated', String(apart));
      assert.match(verdict.problem, /^misdated: its key is stamped .*, its startedAt says .* apart; the key is made from startedAt\): one of them was changed; it is not trusted$/);
    }
    assert.equal(judgeTimes(clock, { kind: 'backup', keyStamp, at: keyStamp.toISOString(), finishedAt: at(-2 * HOUR).toISOString() })?.time, 'misdated');
  });

  it('FUTURE wins over MISDATED', () => {
    assert.equal(judgeTimes(clock, { kind: 'backup', keyStamp: at(-DAY), at: at(DAY).toISOString() })?.time, 'future');
  });

  it('--max-clock-skew: 10 min by default, a duration longer than 0 otherwise', () => {
    assert.equal(parseMaxClockSkew(undefined), 10 * MIN);
    assert.equal(parseMaxClockSkew(''), 10 * MIN);
    assert.equal(parseMaxClockSkew('90s'), 90_000);
    assert.equal(parseMaxClockSkew('1h'), HOUR);
    assert.throws(() => parseMaxClockSkew('0s'), (e: unknown) => e instanceof UsageError && /--max-clock-skew "0s" must be longer than 0/.test(e.message));
    assert.throws(() => parseMaxClockSkew('soon'), (e: unknown) => e instanceof UsageError && /--max-clock-skew "soon" is not a duration/.test(e.message));
  });

  it('key stamps: backups to the second, drill reports to the millisecond, anything else undefined', () => {
    assert.equal(parseKeyStamp('20261207T120000Z')?.toISOString(), '2026-12-07T12:00:00.000Z');
    assert.equal(parseKeyStamp('20261207T120000.123Z')?.toISOString(), '2026-12-07T12:00:00.123Z');
    assert.equal(parseKeyStamp('2026-12-07T12:00:00Z'), undefined);
    assert.equal(parseKeyStamp('20261307T120000Z')?.getUTCMonth(), 0); // Date.UTC rolls over; the key regex never yields month 13
  });
});

let seq = 0;
function backup(startedAt: Date, extra: Partial<StoredBackup> = {}): StoredBackup {
  const iso = startedAt.toISOString();
  const id = `app-${utcStamp(startedAt)}-${(seq++).toString(16).padStart(6, '0')}`;
  const stem = `api/prod/app/${iso.slice(0, 4)}/${iso.slice(5, 7)}/${iso.slice(8, 10)}/${id}`;
  return { service: 'api', environment: 'prod', database: 'app', id, stem, startedAt, complete: true, keys: [`${stem}.dump.zst`, `${stem}.manifest.json`], sizeBytes: 100, lastModified: new Date(startedAt.getTime() + MIN), ...extra };
}
const fate = (plan: ReturnType<typeof planRetention>) => new Map(plan.groups.flatMap((g) => [...g.backups, ...g.incomplete]).map((b) => [b.id, b]));

describe('retention with records stamped in the future or misdated', () => {
  it('keep-last 1: the genuinely newest backup is kept, the future one is kept for inspection and takes no slot', () => {
    const older = backup(at(-2 * DAY));
    const newest = backup(at(-DAY));
    const future = backup(at(30 * DAY)); // not checked (status undefined): judged by its key here
    const plan = planRetention([older, newest, future], { keepLast: 1, keepProven: 0 }, now);
    const f = fate(plan);
    assert.deepEqual(f.get(newest.id)!.reasons, ['last 1']);
    assert.equal(f.get(older.id)!.action, 'delete');
    assert.equal(f.get(future.id)!.action, 'keep');
    assert.equal(f.get(future.id)!.status, 'future');
    assert.equal(f.get(future.id)!.untrustedTime, 'future');
    assert.match(f.get(future.id)!.reasons[0]!, /^FUTURE \(stamped in the future: its key says .*\), never counted as a keeper; kept for inspection: stamped in the future$/);
  });

  it('a future backup fills no daily slot, is not proven, and does not save a group whose real backups are past max-age', () => {
    const days = [1, 2, 3].map((d) => backup(at(-d * DAY)));
    const future = backup(at(2 * DAY), { proof: 'drill OK 2026-12-09T00:00:00Z' });
    const plan = planRetention([...days, future], { keepDaily: 2, keepProven: 1 }, now);
    const f = fate(plan);
    assert.deepEqual(days.map((b) => f.get(b.id)!.action), ['keep', 'keep', 'delete']);
    assert.ok(!f.get(future.id)!.reasons.some((r) => /^(daily|proven)/.test(r)));
    // max-age: the newest believed backup is what counts; the future one keeps the group refused.
    const stale = planRetention([backup(at(-40 * DAY)), backup(at(DAY))], { keepLast: 1, maxAgeMs: 30 * DAY }, now);
    assert.match(stale.groups[0]!.refused!, /^the newest restorable backup is 40 d 0 h old/);
    assert.ok(stale.groups[0]!.backups.every((b) => b.action === 'keep'));
    assert.match(stale.groups[0]!.backups[0]!.reasons[0]!, /kept for inspection: stamped in the future/);
  });

  it('a MISDATED backup (its status from the check) is kept for inspection, never a keeper, whatever its age', () => {
    const old = backup(at(-90 * DAY), { status: 'misdated', problem: 'misdated: its key is stamped …' });
    const real = backup(at(-DAY));
    const plan = planRetention([old, real], { keepLast: 1, maxAgeMs: 30 * DAY, keepProven: 0 }, now);
    const f = fate(plan);
    assert.deepEqual(f.get(real.id)!.reasons, ['last 1']);
    assert.equal(f.get(old.id)!.action, 'keep');
    assert.match(f.get(old.id)!.reasons[0]!, /^MISDATED \(misdated: .*\), never counted as a keeper; kept for inspection: its stamps disagree$/);
  });

  it('a group whose only complete backups are in the future is refused: nothing is restorable as far as the tool knows', () => {
    const plan = planRetention([backup(at(DAY)), backup(at(2 * DAY))], { keepLast: 1 }, now);
    assert.match(plan.groups[0]!.refused!, /^no restorable backup in this group: all 2 complete backup\(s\) are not restorable \(the newest is future: stamped in the future/);
  });

  it('an incomplete backup stamped in the future is kept for inspection, not "within the grace period"', () => {
    const incomplete = backup(at(5 * DAY), { complete: false, keys: ['x'], lastModified: at(-3 * DAY) });
    const plan = planRetention([backup(at(-DAY)), incomplete], { keepLast: 1 }, now);
    assert.match(fate(plan).get(incomplete.id)!.reasons[0]!, /^FUTURE .*never counted as a keeper \(incomplete\); kept for inspection: stamped in the future$/);
  });

  it('property: adding backups stamped in the future or misdated changes no other backup\'s fate, and none of them is deleted', () => {
    const policies = fc.record({
      keepLast: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
      keepDaily: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
      keepWeekly: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
      maxAgeMs: fc.option(fc.integer({ min: 1, max: 40 }).map((d) => d * DAY), { nil: undefined }),
      keepProven: fc.integer({ min: 0, max: 2 }),
    }).filter((p) => Boolean(p.keepLast || p.keepDaily || p.keepWeekly || p.maxAgeMs));
    fc.assert(
      fc.property(
        policies,
        fc.array(fc.record({ hoursAgo: fc.integer({ min: 0, max: 60 * 24 }), proven: fc.boolean() }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.record({ hoursAhead: fc.integer({ min: 1, max: 5000 }), misdated: fc.boolean(), proven: fc.boolean() }), { minLength: 1, maxLength: 4 }),
        (policy: RetentionPolicy, real, forged) => {
          const genuine = real.map((r) => backup(at(-r.hoursAgo * HOUR), r.proven ? { proof: 'verify OK' } : {}));
          const bad = forged.map((f) =>
            f.misdated
              ? backup(at(-f.hoursAhead * MIN), { status: 'misdated', problem: 'misdated', ...(f.proven ? { proof: 'drill OK' } : {}) })
              : backup(at(f.hoursAhead * HOUR + 11 * MIN), f.proven ? { proof: 'drill OK' } : {}),
          );
          const alone = fate(planRetention(genuine, policy, now));
          const mixed = fate(planRetention([...genuine, ...bad], policy, now));
          for (const b of genuine) {
            const [x, y] = [alone.get(b.id)!, mixed.get(b.id)!];
            assert.deepEqual([y.action, y.reasons], [x.action, x.reasons], b.id);
          }
          for (const b of bad) {
            const p: PlannedBackup = mixed.get(b.id)!;
            assert.equal(p.action, 'keep');
            assert.ok(p.untrustedTime, 'flagged');
            assert.match(p.reasons.join(';'), /kept for inspection/);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
