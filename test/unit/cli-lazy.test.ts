// Start-up: each command loads only what it uses (docs/performance.md, "Start-up"). The CLI runs
// from its sources in a child process with a module hook that writes down every module Node
// loads (import and require alike); the heavy libraries must not be among them unless the
// command needs them. The bundle keeps the same laziness: esbuild turns each import() and
// require() of a bundled module into a module initialised on first use.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MAX_PARALLEL_DATABASES } from '../../src/limits.ts';
import { manifestFor } from '../manifest-fixture.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-cli-lazy-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const hook = path.join(dir, 'loaded-hook.mjs');
writeFileSync(
  hook,
  `import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
registerHooks({ load(url, context, next) { appendFileSync(process.env.PGB_LOADED_FILE, url + '\\n'); return next(url, context); } });
`,
);

/** Packages no command may load unless it uses them, by what uses them. */
const HEAVY = ['@aws-sdk/', '@smithy/', 'age-encryption', '@noble/', 'prom-client', '@opentelemetry/', '/yaml/', '/pg/', 'execa'];

/** Runs the CLI from its sources; returns its exit code, output and the URLs of the modules it loaded. */
function run(args: string[]): { status: number | null; stdout: string; stderr: string; loaded: string[] } {
  const file = path.join(dir, `loaded-${Math.random().toString(36).slice(2)}.txt`);
  writeFileSync(file, '');
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(hook).href, path.join(root, 'bin/pg-backup.js'), ...args], {
    encoding: 'utf8',
    cwd: dir,
    env: { ...process.env, PGB_CLI_SOURCES: '1', PGB_HEAP_CAP: '0', PGB_LOADED_FILE: file, PG_BACKUP_CONFIG: '', PG_BACKUP_AGE_IDENTITY: '', PG_BACKUP_AGE_IDENTITY_FILE: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, loaded: readFileSync(file, 'utf8').split('\n').filter(Boolean) };
}

/** The packages of `HEAVY` among `loaded` (node_modules paths only). */
function heavy(loaded: string[]): string[] {
  return [...new Set(loaded.filter((u) => u.includes('/node_modules/')).flatMap((u) => HEAVY.filter((h) => u.includes(`/node_modules/${h.replace(/^\//, '')}`))))];
}

describe('start-up loads only what the command uses', () => {
  it('--version and --help load no command implementation and no heavy library, and print as before', () => {
    const version = run(['--version']);
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^\d+\.\d+\.\d+/);
    assert.ok(version.loaded.some((u) => u.endsWith('/src/cli/main.ts')), 'the hook saw the CLI load (the check is not vacuous)');
    const help = run(['dump', '--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, new RegExp(`own pg_dump and upload \\(1-${MAX_PARALLEL_DATABASES}\\)`));
    for (const r of [version, help]) {
      assert.deepEqual(heavy(r.loaded), []);
      assert.deepEqual(r.loaded.filter((u) => /\/src\/commands\/|\/node_modules\/zod\//.test(u)), []);
    }
  });

  it('list on a file:// location loads neither the AWS SDK, age, prom-client, yaml, pg nor execa', () => {
    const bucket = path.join(dir, 'bucket');
    for (const day of ['01', '02']) {
      const stem = `api/production/app/2026/12/${day}/app-202612${day}T020000Z-0a1b2c`;
      mkdirSync(path.join(bucket, path.dirname(stem)), { recursive: true });
      writeFileSync(path.join(bucket, `${stem}.dump.zst`), Buffer.alloc(10));
      writeFileSync(path.join(bucket, `${stem}.manifest.json`), manifestFor(stem, { sizeBytes: 10 }));
    }
    const r = run(['list', '--from', pathToFileURL(bucket).href]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 3, r.stdout); // header and two backups
    assert.ok(r.loaded.some((u) => u.endsWith('/src/commands/list.ts')));
    assert.deepEqual(heavy(r.loaded), []);
  });

  it('an s3:// location is checked when it opens, before the SDK is loaded: the same one line and exit 2', () => {
    const r = run(['list', '--from', 's3://bucket/prefix', '--endpoint', 'not a url']);
    assert.equal(r.status, 2);
    assert.equal(r.stderr, 'pg-backup: invalid S3 endpoint "not a url": give a URL such as https://ACCOUNT.r2.cloudflarestorage.com\n');
    assert.deepEqual(heavy(r.loaded), []);
  });

});
