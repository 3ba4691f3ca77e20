import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultDrillJobs } from '../../src/commands/drill.ts';
import { bulkRestoreSettings } from '../../src/postgres/cluster.ts';

describe('the throwaway cluster\'s bulk restore settings', () => {
  it('skips WAL with what wal_level=minimal requires, turns autovacuum off, and sizes the parallel index builds from the cores', () => {
    for (const [cores, workers] of [[1, '0'], [2, '1'], [4, '3'], [64, '7']] as const) {
      assert.deepEqual(bulkRestoreSettings({ cores }), {
        wal_level: 'minimal',
        max_wal_senders: '0',
        archive_mode: 'off',
        autovacuum: 'off',
        max_parallel_maintenance_workers: workers,
      });
    }
  });

  it('defaults --jobs to the cores, at least 2 (the WAL-free parallel load) and at most 8', () => {
    assert.deepEqual([1, 2, 3, 8, 9, 128].map((c) => defaultDrillJobs(c)), [2, 2, 3, 8, 8, 8]);
  });
});
