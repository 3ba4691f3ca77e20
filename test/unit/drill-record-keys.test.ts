import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { drillHistory, drillRecordKeys, writeDrillRecord } from '../../src/commands/drill-report.ts';
import { openStorage } from '../../src/storage/index.ts';

/**
 * Drill records are keyed by the drill's start to the millisecond: two drills of one backup
 * started within the same second (a fast failure, then a retry) keep both records, and the
 * history still reads the seconds-only keys written before.
 */
describe('drill record keys', () => {
  const labels = { service: 'api', environment: 'prod', database: 'app' };
  const id = 'app-20261202T150000Z-abcdef';

  it('differ for two drills started in the same second', () => {
    const a = drillRecordKeys(labels, id, new Date('2026-12-02T15:23:28.100Z'));
    const b = drillRecordKeys(labels, id, new Date('2026-12-02T15:23:28.900Z'));
    assert.notEqual(a.report, b.report);
    assert.match(a.report, /-drill-20261202T152328\.100Z\.json$/);
    assert.match(a.log, /-drill-20261202T152328\.100Z\.log$/);
  });

  it('history keeps both same-second drills, newest first, beside an older seconds-only record', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-drill-keys-'));
    try {
      const storage = openStorage(`file://${dir}`);
      const record = async (startedAt: string, ok: boolean, legacyKey?: string) => {
        const keys = legacyKey ? { report: `${legacyKey}.json`, log: `${legacyKey}.log` } : drillRecordKeys(labels, id, new Date(startedAt));
        await writeDrillRecord(storage, keys, { startedAt, ok, rtoMs: 1000, backupId: id }, ['x']);
      };
      await record('2026-12-02T15:23:27.000Z', true, `drills/api/prod/app/2026-Q4/${id}-drill-20261202T152327Z`);
      await record('2026-12-02T15:23:28.100Z', false);
      await record('2026-12-02T15:23:28.900Z', true);
      const history = await drillHistory(storage, labels, 10);
      assert.deepEqual(history.map((h) => [h.startedAt, h.ok]), [
        ['2026-12-02T15:23:28.900Z', true],
        ['2026-12-02T15:23:28.100Z', false],
        ['2026-12-02T15:23:27.000Z', true],
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
