import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { SEMVER, changelogSection } from '../../scripts/release-notes.ts';
import { root, run } from '../helpers.ts';

const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));

/** Issue 28: a real release to pin — the package, the changelog and the release workflow agree. */
describe('release', () => {
  it('package.json describes a public npm package of the CLI bundle', () => {
    assert.match(pkg.version, SEMVER);
    assert.equal(pkg.private, undefined, 'not private');
    assert.deepEqual(pkg.bin, { 'pg-backup': 'bin/pg-backup.js', 'pg-backup-actions': 'bin/pg-backup.js' });
    assert.deepEqual(pkg.files, ['bin/pg-backup.js', 'dist/cli.js', 'CHANGELOG.md']);
    assert.deepEqual(pkg.engines, { node: '>=24' });
    assert.equal(pkg.dependencies, undefined, 'dist/cli.js bundles every library: an install adds nothing');
    assert.match(pkg.scripts.prepare, /scripts\/build\.ts --cli/, 'npm publish builds dist/cli.js');
    assert.match(pkg.devDependencies.node, /^24\./, 'the repository runs on the Node the engines name');
    assert.ok((statSync(path.join(root, 'bin/pg-backup.js')).mode & 0o111) !== 0, 'the launcher is executable');
  });

  it('CHANGELOG.md has a section for this version, which becomes the release notes', async () => {
    const changelog = readFileSync(path.join(root, 'CHANGELOG.md'), 'utf8');
    assert.match(changelog, /^## \[Unreleased\]$/m);
    assert.match(changelog, new RegExp(`^## \\[${pkg.version.replace(/\./g, '\\.')}\\] - \\d{4}-\\d{2}-\\d{2}$`, 'm'));
    const notes = changelogSection(changelog, pkg.version);
    assert.ok(notes && /### Added/.test(notes), notes);
    const printed = await run(process.execPath, ['scripts/release-notes.ts', `v${pkg.version}`]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal(printed.stdout, `${notes}\n`);
    const missing = await run(process.execPath, ['scripts/release-notes.ts', '99.0.0']);
    assert.equal(missing.code, 2);
    assert.equal(missing.stderr, 'release-notes: CHANGELOG.md has no section "## [99.0.0] - YYYY-MM-DD": add it before releasing\n');
  });

  it('changelogSection takes one section, up to the next one or the link references', () => {
    const text = '# Changelog\n\n## [Unreleased]\n\n## [1.1.0] - 2027-01-02\n\n### Fixed\n\n- a\n\n## [1.0.0] - 2026-12-07\n\n- first\n\n[1.1.0]: https://example.com/compare\n';
    assert.equal(changelogSection(text, '1.1.0'), '### Fixed\n\n- a');
    assert.equal(changelogSection(text, '1.0.0'), '- first');
    assert.equal(changelogSection(text, 'Unreleased'), '');
    assert.equal(changelogSection(text, '1.0'), undefined, 'no prefix match');
    assert.equal(changelogSection(text, '2.0.0'), undefined);
  });

  it('the release workflow checks before it tags, publishes with provenance, and moves vX last', () => {
    const wf = parse(readFileSync(path.join(root, '.github/workflows/release.yml'), 'utf8'));
    assert.deepEqual(wf.on.push.tags, ['v*.*.*']);
    assert.equal(wf.on.workflow_dispatch.inputs.version.required, true);
    assert.deepEqual(wf.permissions, { contents: 'read' });
    const job = wf.jobs.release;
    assert.deepEqual(job.permissions, { contents: 'write', 'id-token': 'write' });
    const steps: { name?: string; run?: string }[] = job.steps;
    const at = (re: RegExp) => {
      const i = steps.findIndex((s) => re.test(s.run ?? ''));
      assert.ok(i >= 0, `a step runs ${re}`);
      return i;
    };
    const checks = [at(/scripts\/release-notes\.ts/), at(/npm run typecheck/), at(/scripts\/build\.ts --check/), at(/npm run test:unit/)];
    const tag = at(/git\/refs" -f ref="refs\/tags\/v\$VERSION"/);
    const publish = at(/npm publish --provenance --access public/);
    const release = at(/gh release create/);
    const move = at(/refs\/tags\/v\$MAJOR/);
    assert.ok(Math.max(...checks) < tag && tag < publish && publish < release && release < move, JSON.stringify({ checks, tag, publish, release, move }));
  });
});
