// The launcher (bin/pg-backup.js) on a throwaway copy: it runs dist/cli.js only while every
// input recorded in dist/cli.inputs.json is unchanged, else the sources; and it runs node with a
// 1 MiB semi-space and glibc's MALLOC_ARENA_MAX=2 unless told not to: from its shebang line when
// started as a program (`npx`), by restarting node once when started as `node bin/pg-backup.js`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-launcher-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The fake CLI reports how it was started: node's flags, MALLOC_ARENA_MAX in the environment
// the process started with (/proc/self/environ: what glibc read), and in the one its children
// would inherit.
const fake = (what: string) => `import { readFileSync } from 'node:fs';
export async function main() {
  const started = readFileSync('/proc/self/environ', 'latin1').split('\\0').find((v) => v.startsWith('MALLOC_ARENA_MAX='));
  const cache = (await import('node:module')).default.getCompileCacheDir?.() ?? null;
  process.stdout.write(JSON.stringify({ what: ${JSON.stringify(what)}, flags: process.execArgv, arena: started ? started.slice(17) : null, childArena: process.env.MALLOC_ARENA_MAX ?? null, cache }));
  return 0;
}
`;
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
mkdirSync(path.join(dir, 'bin'));
mkdirSync(path.join(dir, 'src/cli'), { recursive: true });
mkdirSync(path.join(dir, 'dist'));
copyFileSync(path.join(root, 'bin/pg-backup.js'), path.join(dir, 'bin/pg-backup.js'));
chmodSync(path.join(dir, 'bin/pg-backup.js'), 0o755);
writeFileSync(path.join(dir, 'src/cli/main.ts'), fake('sources'));
writeFileSync(path.join(dir, 'dist/cli.js'), fake('bundle'));
const input = 'export const x = 1;\n';
writeFileSync(path.join(dir, 'src/x.ts'), input);
const record = (files: Record<string, string>) => writeFileSync(path.join(dir, 'dist/cli.inputs.json'), JSON.stringify({ files }));
const fresh = () => record({ 'src/x.ts': sha(input), 'src/cli/main.ts': sha(fake('sources')) });

type Launch = { what: string; flags: string[]; arena: string | null; childArena: string | null; cache: string | null; restarted: boolean };

/**
 * Runs the copied launcher as `node bin/pg-backup.js`, or with `asProgram` as a program (its
 * shebang line, finding this Node first on the PATH, as `npx` does). `restarted`: whether it
 * replaced itself to change node's flags.
 */
function launch(env: Record<string, string> = {}, asProgram = false, args: string[] = []): Launch {
  const script = path.join(dir, 'bin/pg-backup.js');
  const { MALLOC_ARENA_MAX: _ours, ...inherited } = process.env;
  const base = { ...inherited, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH}`, NODE_OPTIONS: '', PGB_TRACE_LAUNCHER: '1', ...env };
  const r = asProgram ? spawnSync(script, args, { encoding: 'utf8', env: base }) : spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', env: base });
  assert.equal(r.status, 0, r.stderr);
  return { ...(JSON.parse(r.stdout) as Omit<Launch, 'restarted'>), restarted: /restarting node/.test(r.stderr) };
}

/** How the launcher started node, without the compile cache (checked on its own). */
const startup = ({ cache: _cache, ...rest }: Launch) => rest;

describe('launcher', () => {
  it('runs the bundle while its inputs are unchanged, the sources otherwise', () => {
    fresh();
    assert.equal(launch().what, 'bundle');
    assert.equal(launch({ PGB_CLI_SOURCES: '1' }).what, 'sources');
    writeFileSync(path.join(dir, 'src/x.ts'), 'export const x = 2;\n');
    assert.equal(launch().what, 'sources', 'a changed input makes the bundle stale');
    writeFileSync(path.join(dir, 'src/x.ts'), input);
    assert.equal(launch().what, 'bundle');
    record({ 'src/x.ts': sha(input), 'src/gone.ts': sha('') });
    assert.equal(launch().what, 'sources', 'a missing input makes the bundle stale');
    writeFileSync(path.join(dir, 'dist/cli.inputs.json'), '{"files": {"src/x.ts"');
    assert.equal(launch().what, 'sources', 'a torn record is not fresh');
    record({});
    assert.equal(launch().what, 'sources', 'an empty record is not fresh');
    rmSync(path.join(dir, 'dist/cli.inputs.json'));
    assert.equal(launch().what, 'sources');
  });

  it('caps the V8 semi-space at 1 MiB and glibc at 2 malloc arenas unless told otherwise; children do not inherit the arena setting', () => {
    fresh();
    assert.deepEqual(startup(launch()), { what: 'bundle', flags: ['--max-semi-space-size=1'], arena: '2', childArena: null, restarted: true });
    assert.deepEqual(startup(launch({ PGB_HEAP_CAP: '0' })), { what: 'bundle', flags: [], arena: null, childArena: null, restarted: false });
    assert.deepEqual(startup(launch({ NODE_OPTIONS: '--max-semi-space-size=8' })), { what: 'bundle', flags: [], arena: null, childArena: null, restarted: false });
    // A caller's own MALLOC_ARENA_MAX is kept, for the process and its children.
    assert.deepEqual(startup(launch({ MALLOC_ARENA_MAX: '4' })), { what: 'bundle', flags: ['--max-semi-space-size=1'], arena: '4', childArena: '4', restarted: true });
  });

  it('started as a program, takes both from its shebang line without restarting node', () => {
    fresh();
    assert.deepEqual(startup(launch({}, true)), { what: 'bundle', flags: ['--max-semi-space-size=1'], arena: '2', childArena: null, restarted: false });
    // Told otherwise, it restarts once without them.
    assert.deepEqual(startup(launch({ PGB_HEAP_CAP: '0' }, true)), { what: 'bundle', flags: [], arena: null, childArena: null, restarted: true });
    assert.deepEqual(startup(launch({ NODE_OPTIONS: '--max-semi-space-size=8' }, true)), { what: 'bundle', flags: [], arena: null, childArena: null, restarted: true });
  });

  it('lets dump read the compile cache only when the build warmed it for this very bundle and Node; every other command uses it', () => {
    fresh();
    const cacheDir = path.join(dir, 'dist/compile-cache');
    mkdirSync(cacheDir, { recursive: true });
    const mark = (over: Record<string, string>) =>
      writeFileSync(path.join(cacheDir, 'warm.json'), JSON.stringify({ node: process.version, arch: process.arch, v8: process.versions.v8, bundleSha256: sha(fake('bundle')), cacheDir, ...over }));
    mark({});
    assert.notEqual(launch({}, false, ['dump']).cache, null, 'warmed for this bundle and Node: dump reads the cache');
    assert.notEqual(launch({}, false, ['list']).cache, null);
    mark({ bundleSha256: sha('another bundle') });
    assert.equal(launch({}, false, ['dump']).cache, null, 'warmed for another bundle: dump must not touch the cache (it would write)');
    assert.notEqual(launch({}, false, ['list']).cache, null, 'other commands may write the cache');
    mark({ node: 'v0.0.1' });
    assert.equal(launch({}, false, ['dump']).cache, null, 'warmed by another Node');
    mark({ cacheDir: path.join(dir, 'gone') });
    assert.equal(launch({}, false, ['dump']).cache, null, 'a cache directory that is gone');
    rmSync(path.join(cacheDir, 'warm.json'));
    assert.equal(launch({}, false, ['dump']).cache, null, 'never warmed');
  });
});
