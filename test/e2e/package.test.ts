import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { root, run } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';

/**
 * The npm package as a user gets it, with no dependency of its own (dist/cli.js bundles them): `npm pack` (which builds dist/cli.js through `prepare`, as
 * `npm publish` does), the tarball installed into an empty directory (dependencies from the npm
 * cache when they are there, else the registry), then both commands it installs and the demo,
 * run from that directory with none of the repository's sources in reach.
 */
describe('npm package pg-backup-actions', () => {
  it('packs the CLI bundle alone, installs into an empty directory, and runs pg-backup and the demo from there', async (t) => {
    const work = await mkdtemp(path.join(os.tmpdir(), 'pgb-package-'));
    t.after(() => rm(work, { recursive: true, force: true }));
    // npm and the installed bin's `env node` find the repository's Node 24 first, as `npx` would.
    const env = { PATH: `${path.join(root, 'node_modules/.bin')}:${process.env.PATH}`, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
    const packDir = path.join(work, 'pack');
    const installDir = path.join(work, 'install');
    await Promise.all([packDir, installDir].map((d) => mkdir(d)));

    const packed = await run('npm', ['pack', '--json', '--pack-destination', packDir], { env });
    assert.equal(packed.code, 0, packed.stderr);
    // prepare's own lines come first on stdout; the JSON report is the rest.
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.search(/^\[/m))) as { name: string; version: string; filename: string; files: { path: string }[] }[];
    const pkg = (await import('../../package.json', { with: { type: 'json' } })).default;
    assert.equal(info!.name, 'pg-backup-actions');
    assert.equal(info!.version, pkg.version);
    const files = info!.files.map((f) => f.path).sort();
    assert.deepEqual(files, ['CHANGELOG.md', 'LICENSE', 'README.md', 'bin/pg-backup.js', 'dist/cli.js', 'package.json']);
    assert.deepEqual(await readdir(packDir), [info!.filename]);

    await writeFile(path.join(installDir, 'package.json'), '{ "private": true }\n');
    const installed = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', path.join(packDir, info!.filename)], { env, cwd: installDir });
    assert.equal(installed.code, 0, installed.stderr);
    assert.doesNotMatch(installed.stderr, /EBADENGINE/, 'Node 24 satisfies every engine');
    // The bundle holds every library: the package installs nothing else (0.6 MB, not 73 MB of dependencies).
    assert.deepEqual((await readdir(path.join(installDir, 'node_modules'))).filter((n) => !n.startsWith('.')), ['pg-backup-actions']);

    const bin = (name: string) => path.join(installDir, 'node_modules/.bin', name);
    for (const name of ['pg-backup', 'pg-backup-actions']) {
      const version = await run(bin(name), ['--version'], { env, cwd: installDir });
      assert.equal(version.code, 0, version.stderr);
      assert.equal(version.stdout.trim(), pkg.version, name);
    }

    const { mark, env: markEnv } = leftoverMark();
    const demo = await run(bin('pg-backup'), ['demo'], { env: { ...env, ...markEnv, PGB_TRACE_LAUNCHER: '1', DATABASE_URL: undefined }, cwd: installDir });
    assert.equal(demo.code, 0, `${demo.stdout}\n${demo.stderr}`);
    assert.match(demo.stderr, /running dist\/cli\.js/, 'the packaged bundle runs (no sources to fall back to)');
    assert.match(demo.stdout, /demo OK: dumped "shop" to file:\/\/.*\/demo-bucket\//);
    assert.match(demo.stdout, /restore drill OK/);
    assert.deepEqual(await markedProcesses(mark), [], 'the demo leaves no process behind');
  });
});
