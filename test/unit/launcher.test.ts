// The launcher (bin/pg-backup.js) on a throwaway copy: it runs dist/cli.js only while every
// input recorded in dist/cli.inputs.json is unchanged, else the sources; and it restarts node
// once with a 1 MiB semi-space unless told not to.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-launcher-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const fake = (what: string) => `export async function main() { process.stdout.write(JSON.stringify({ what: ${JSON.stringify(what)}, flags: process.execArgv })); return 0; }\n`;
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
mkdirSync(path.join(dir, 'bin'));
mkdirSync(path.join(dir, 'src/cli'), { recursive: true });
mkdirSync(path.join(dir, 'dist'));
copyFileSync(path.join(root, 'bin/pg-backup.js'), path.join(dir, 'bin/pg-backup.js'));
writeFileSync(path.join(dir, 'src/cli/main.ts'), fake('sources'));
writeFileSync(path.join(dir, 'dist/cli.js'), fake('bundle'));
const input = 'export const x = 1;\n';
writeFileSync(path.join(dir, 'src/x.ts'), input);
const record = (files: Record<string, string>) => writeFileSync(path.join(dir, 'dist/cli.inputs.json'), JSON.stringify({ files }));

function launch(env: Record<string, string> = {}): { what: string; flags: string[] } {
  const r = spawnSync(process.execPath, [path.join(dir, 'bin/pg-backup.js')], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '', ...env } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { what: string; flags: string[] };
}

describe('launcher', () => {
  it('runs the bundle while its inputs are unchanged, the sources otherwise', () => {
    record({ 'src/x.ts': sha(input), 'src/cli/main.ts': sha(fake('sources')) });
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

  it('caps the V8 semi-space at 1 MiB unless told otherwise', () => {
    assert.deepEqual(launch().flags, ['--max-semi-space-size=1']);
    assert.deepEqual(launch({ PGB_HEAP_CAP: '0' }).flags, []);
    assert.deepEqual(launch({ NODE_OPTIONS: '--max-semi-space-size=8' }).flags, []);
  });
});
