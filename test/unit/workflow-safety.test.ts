import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { actionSources, countChecked, safetyFindings, workflowSources } from '../infra/workflow-files.ts';

/**
 * Issue 24: every workflow we ship or document (.github/workflows, docs/examples, the README's
 * quick start) and every action definition passes values to scripts through `env:`, checks out
 * without persisting the token, and pins third-party actions by commit SHA.
 */
describe('workflow safety', () => {
  const sources = [...workflowSources(), ...actionSources()];

  it('no ${{ }} inside run:, checkouts without persisted credentials, third-party actions pinned by SHA', () => {
    assert.deepEqual(sources.flatMap(safetyFindings), []);
  });

  it('looks at every file, script and reference (the walk is not vacuous)', () => {
    const files = new Set(sources.map((s) => s.file));
    for (const f of ['.github/workflows/ci.yml', '.github/workflows/status.yml', '.github/workflows/backup.yml', 'docs/examples/deploy-with-snapshot.yml', 'docs/examples/private-database.yml', 'README.md#quick-start', 'actions/dump/action.yml']) {
      assert.ok(files.has(f), f);
    }
    const totals = sources.map(countChecked).reduce((a, b) => ({ runs: a.runs + b.runs, uses: a.uses + b.uses }));
    assert.ok(totals.runs >= 8, `run: scripts seen: ${totals.runs}`);
    assert.ok(totals.uses >= 25, `uses: references seen: ${totals.uses}`);
  });

  it('finds each kind of mistake', () => {
    const bad = {
      file: 'bad.yml',
      text: [
        'on: push',
        'jobs:',
        '  call:',
        '    uses: someone/workflows/.github/workflows/x.yml@main',
        '  a:',
        '    runs-on: ubuntu-24.04',
        '    steps:',
        '      - uses: actions/checkout@v5',
        '      - uses: actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09',
        '        with:',
        '          persist-credentials: false',
        '      - uses: actions/setup-node@a0853c24544627f65ddf259abe73b1d18a591444 # v5.0.0',
        '      - run: echo "${{ github.event.pull_request.title }}"',
        '      - env:',
        '          TITLE: ${{ github.event.pull_request.title }}',
        '        run: echo "$TITLE"',
        '      - uses: ./local-action',
        '      - uses: pg-backup-actions/pg-backup-actions/actions/dump@v1',
        '      - uses: pg-backup-actions/pg-backup-actions/actions/dump@main',
      ].join('\n'),
    };
    assert.deepEqual(safetyFindings(bad), [
      'bad.yml job call: someone/workflows/.github/workflows/x.yml@main is not pinned by a full commit SHA',
      'bad.yml job a step 1: actions/checkout without persist-credentials: false',
      'bad.yml job a step 1: actions/checkout@v5 is not pinned by a full commit SHA',
      'bad.yml job a step 2: actions/checkout@fbc6f3992d24b796d5a048ff273f7fcc4a7b6c09 has no "# vX.Y.Z" comment naming its version',
      'bad.yml job a step 4: ${{ }} inside run: (pass it through env:)',
      'bad.yml job a step 8: pg-backup-actions/pg-backup-actions/actions/dump@main is not pinned by a full commit SHA',
    ]);
    const composite = { file: 'action.yml', text: 'runs:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo ${{ inputs.x }}\n' };
    assert.deepEqual(safetyFindings(composite), ['action.yml step 1: ${{ }} inside run: (pass it through env:)']);
  });
});
