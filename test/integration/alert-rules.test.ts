// The shipped Prometheus alert rules (docs/alerts/) pass promtool's checks and their unit tests,
// and name only metrics pg-backup exports.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { METRICS } from '../../src/notify/metrics.ts';
import { root, run } from '../helpers.ts';

const dir = path.join(root, 'docs/alerts');

describe('alert rules (docs/alerts)', () => {
  it('promtool check rules: valid, no duplicate rules', { timeout: 30_000 }, async () => {
    const r = await run('promtool', ['check', 'rules', 'pg-backup.rules.yml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS: 7 rules found/);
  });

  it('promtool test rules: every alert fires when it should and not before', { timeout: 30_000 }, async () => {
    const r = await run('promtool', ['test', 'rules', 'pg-backup.rules.test.yml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS/);
  });

  it('every alert is unit-tested and uses only exported metric names', async () => {
    const rules = await readFile(path.join(dir, 'pg-backup.rules.yml'), 'utf8');
    const tests = await readFile(path.join(dir, 'pg-backup.rules.test.yml'), 'utf8');
    const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]!);
    assert.deepEqual([...new Set(alerts)].sort(), ['BackupFailing', 'BackupOverdue', 'DrillFailed', 'DrillRTOOverBudget', 'WALArchiveStale']);
    for (const alert of alerts) assert.match(tests, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${alert} has a test where it fires`);
    for (const name of new Set([...rules.matchAll(/\bpg_backup_[a-z_]+/g)].map((m) => m[0]))) assert.ok(name in METRICS, `${name} is a metric pg-backup exports`);
  });
});
