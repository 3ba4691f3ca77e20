import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { root } from '../helpers.ts';

/**
 * The import rules of docs/architecture.md ("Layers"), as .dependency-cruiser.cjs states them:
 * no import circle in src/ (type-only imports included), and lower layers (storage, then
 * backup/postgres) never import higher ones (commands, physical, CLI, actions). Checked by
 * dependency-cruiser over the real sources; a new circle or an upward import fails here, naming it.
 */
describe('import rules', () => {
  it('src/ has no import circle and no upward import', async () => {
    const r = await execa('npx', ['depcruise', 'src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd: root, reject: false });
    assert.equal(r.exitCode, 0, `dependency-cruiser found violations:\n${r.stdout}\n${r.stderr}`);
  });

  it('the rules catch a circle (the check is not vacuous)', async () => {
    // The same rules over a fixture pair that imports each other must fail.
    const r = await execa('npx', ['depcruise', 'test/fixtures/import-circle', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd: root, reject: false });
    assert.notEqual(r.exitCode, 0, 'a circle in the fixture was not reported');
    assert.match(`${r.stdout}${r.stderr}`, /no-circular/);
  });
});
