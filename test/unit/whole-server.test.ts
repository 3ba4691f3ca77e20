// Pure parts of whole-server runs (issue 25): --exclude-database patterns as pg_dump reads them,
// and retention of a run's globals (kept while a kept database backup of the run exists).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { databasePatternRegExp } from '../../src/commands/dump-many.ts';
import { planRetention, type StoredBackup } from '../../src/backup/retention.ts';
import { UsageError } from '../../src/errors.ts';

describe('--exclude-database patterns', () => {
  const matches = (pattern: string, names: string[]) => names.filter((n) => databasePatternRegExp(pattern).test(n));
  it('* and ? are wildcards over the whole name; other characters are literal', () => {
    const names = ['scratch', 'scratch_1', 'scratch_12', 'app', 'my_scratch', 'a+b', 'a.b'];
    assert.deepEqual(matches('scratch*', names), ['scratch', 'scratch_1', 'scratch_12']);
    assert.deepEqual(matches('scratch_?', names), ['scratch_1']);
    assert.deepEqual(matches('*scratch', names), ['scratch', 'my_scratch']);
    assert.deepEqual(matches('a+b', names), ['a+b']);
    assert.deepEqual(matches('"a.b"', names), ['a.b']);
  });
  it('unquoted letters match lower case, quoted ones as written (and * is literal inside quotes)', () => {
    const names = ['Sales', 'sales', 'SALES*', 'sales_eu'];
    assert.deepEqual(matches('SALES', names), ['sales']);
    assert.deepEqual(matches('"Sales"', names), ['Sales']);
    assert.deepEqual(matches('"SALES*"', names), ['SALES*']);
    assert.deepEqual(matches('Sales*', names), ['sales', 'sales_eu']);
  });
  it('refuses a dotted name, an unbalanced quote and an empty pattern (UsageError)', () => {
    for (const bad of ['db.x', '"abc', '  ']) assert.throws(() => databasePatternRegExp(bad), UsageError, bad);
  });
});

describe('retention of a run\'s globals', () => {
  const now = new Date('2026-12-10T00:00:00Z');
  const stored = (database: string, at: string, runId: string | undefined, extra: Partial<StoredBackup> = {}): StoredBackup => {
    const d = new Date(at);
    const stamp = d.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
    const id = `${database}-${stamp}-${runId?.slice(-6) ?? 'aaaaaa'}`;
    const stem = `svc/prod/${database}/${at.slice(0, 4)}/${at.slice(5, 7)}/${at.slice(8, 10)}/${id}`;
    return { service: 'svc', environment: 'prod', database, id, stem, startedAt: d, complete: true, keys: [`${stem}.manifest.json`], sizeBytes: 10, lastModified: d, runId, ...extra };
  };
  it('keeps the globals of every run a kept database backup belongs to, deletes the others, and never counts them by a keep rule', () => {
    const backups = [
      stored('app', '2026-12-01T03:00:00Z', 'run-20261201T030000Z-111111'),
      stored('@globals', '2026-12-01T03:00:00Z', 'run-20261201T030000Z-111111'),
      stored('app', '2026-12-05T03:00:00Z', 'run-20261205T030000Z-222222'),
      stored('old', '2026-12-05T03:00:00Z', 'run-20261205T030000Z-222222'),
      stored('@globals', '2026-12-05T03:00:00Z', 'run-20261205T030000Z-222222'),
      stored('app', '2026-12-08T03:00:00Z', 'run-20261208T030000Z-333333'),
      stored('@globals', '2026-12-08T03:00:00Z', 'run-20261208T030000Z-333333'),
      // The newest run's globals, its databases still dumping (within the grace period).
      stored('@globals', '2026-12-09T23:00:00Z', 'run-20261209T230000Z-444444'),
    ];
    const plan = planRetention(backups, { keepLast: 1 }, now);
    const globals = plan.groups.find((g) => g.database === '@globals')!;
    const fate = Object.fromEntries(globals.backups.map((b) => [b.runId, b.action]));
    assert.deepEqual(fate, {
      'run-20261209T230000Z-444444': 'keep', // within the grace period
      'run-20261208T030000Z-333333': 'keep', // app's last 1
      'run-20261205T030000Z-222222': 'keep', // old's last 1 (a database gone since)
      'run-20261201T030000Z-111111': 'delete',
    });
    assert.match(globals.backups.find((b) => b.runId === 'run-20261201T030000Z-111111')!.reasons[0]!, /no kept database backup of run-20261201T030000Z-111111/);
    // The databases' groups are planned as if no globals existed: app keeps its newest alone.
    const app = plan.groups.find((g) => g.database === 'app')!;
    assert.deepEqual(app.backups.map((b) => b.action), ['keep', 'delete', 'delete']);
    assert.equal(globals.refused, undefined);
  });
  it('a database literally named "@globals" (stored as %40globals) is a database, not globals', () => {
    const b = stored('@globals', '2026-12-01T03:00:00Z', undefined);
    const asDatabase = { ...b, stem: b.stem.replace('/@globals/', '/%40globals/') };
    const plan = planRetention([asDatabase], { keepLast: 1 }, now);
    assert.deepEqual(plan.groups[0]!.backups.map((x) => x.reasons[0]), ['last 1']);
  });
});
