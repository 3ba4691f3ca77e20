import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { groupOf, renderReliabilityDoc, type ReliabilityRun } from '../infra/reliability-doc.ts';
import { root } from '../helpers.ts';
import { faultIdsInSources } from '../reliability-files.ts';

/**
 * docs/reliability.md cannot fall out of step with the fault tests: it must be exactly what
 * `npm run reliability` renders from docs/reliability.json, whose rows must be one per fault id
 * the test sources declare (`faultId: '…'`), in the same order. Adding, renaming or removing a
 * fault test without regenerating the doc fails here.
 */
describe('docs/reliability.md', () => {
  const data = JSON.parse(readFileSync(path.join(root, 'docs/reliability.json'), 'utf8')) as ReliabilityRun;
  const doc = readFileSync(path.join(root, 'docs/reliability.md'), 'utf8');

  it('has a recorded row for every fault test, and none for a test that no longer exists', () => {
    const declared = faultIdsInSources();
    const recorded = data.rows.map((r) => r.faultId);
    const missing = declared.filter((id) => !recorded.includes(id));
    const stale = recorded.filter((id) => !declared.includes(id));
    assert.deepEqual({ missing, stale }, { missing: [], stale: [] }, 'run `npm run reliability` to regenerate the doc');
    assert.deepEqual(recorded, declared, 'rows in source order: run `npm run reliability`');
  });

  it('names every recorded fault, in a known section, with the test file that recorded it', () => {
    for (const row of data.rows) {
      groupOf(row.faultId);
      assert.ok(doc.includes(`\`${row.faultId}\``), `${row.faultId} is missing from docs/reliability.md`);
      const file = path.join(root, 'test', row.file);
      assert.ok(existsSync(file), `${row.file} does not exist`);
      assert.ok(readFileSync(file, 'utf8').includes(`faultId: '${row.faultId}'`), `${row.file} does not declare ${row.faultId}`);
    }
  });

  it('is exactly what the recorded run renders (not edited by hand)', () => {
    assert.equal(doc, renderReliabilityDoc(data), 'docs/reliability.md differs from its data: run `npm run reliability`, do not edit it');
  });

  it('comes from a full run: the machine facts and the soak figures are present', () => {
    assert.ok(data.machine.cores > 0 && data.machine.postgres && data.machine.ceph);
    const soak = data.rows.find((r) => r.faultId === 'soak');
    assert.ok(soak?.figures, 'the soak recorded its figures');
    assert.equal((soak.figures as { perCycle: unknown[] }).perCycle.length, data.soakCycles);
  });
});
