// `npm run reliability`: runs the fault-injection suite against real services and regenerates
// docs/reliability.md (and its data, docs/reliability.json) from what the tests recorded.
//
// It starts PostgreSQL and Ceph RGW (test/infra/services.ts), runs the fault test files one at a
// time (steadier timings on a small machine) with PGB_RELIABILITY_LOG set, so each fault test
// appends its row (test/reliability.ts) after its assertions passed, and stops the services. It
// writes nothing when a test fails or when a fault test in the sources recorded no row.
// SOAK_CYCLES (default 50) sets the soak's length. `--render-only` re-renders the doc from the
// recorded docs/reliability.json without running anything (after a change to the doc's wording).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { renderReliabilityDoc, type ReliabilityRun } from '../test/infra/reliability-doc.ts';
import { startServices } from '../test/infra/services.ts';
import type { RecordedFault } from '../test/reliability.ts';
import { FAULT_TEST_FILES, faultIdsInSources } from '../test/reliability-files.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
if (process.argv.includes('--render-only')) {
  const recorded = JSON.parse(readFileSync(path.join(root, 'docs/reliability.json'), 'utf8')) as ReliabilityRun;
  writeFileSync(path.join(root, 'docs/reliability.md'), renderReliabilityDoc(recorded));
  console.log(`reliability: re-rendered docs/reliability.md from the run of ${recorded.generatedAt}`);
  process.exit(0);
}
const soakCycles = Number(process.env.SOAK_CYCLES || 50);
const log = path.join(mkdtempSync(path.join(os.tmpdir(), 'pgb-reliability-')), 'rows.jsonl');
writeFileSync(log, '');

const started = Date.now();
const services = await startServices();
process.on('exit', () => services.stop());
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

const code = await new Promise<number>((resolve) => {
  const child = spawn(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=600000', ...FAULT_TEST_FILES], {
    cwd: root,
    env: { ...process.env, ...services.env, PGB_RELIABILITY_LOG: log, SOAK_CYCLES: String(soakCycles) },
    stdio: 'inherit',
  });
  child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0)));
});
if (code !== 0) {
  console.error(`reliability: the fault tests failed (exit ${code}); docs/reliability.md is left as it was`);
  process.exit(1);
}

// The last row per id (a test records once; a retried run would record again).
const byId = new Map<string, RecordedFault>();
for (const line of readFileSync(log, 'utf8').split('\n').filter(Boolean)) {
  const row = JSON.parse(line) as RecordedFault;
  byId.set(row.faultId, row);
}
const expected = faultIdsInSources();
const missing = expected.filter((id) => !byId.has(id));
if (missing.length) {
  console.error(`reliability: no row recorded for ${missing.join(', ')}; docs/reliability.md is left as it was`);
  process.exit(1);
}
const rows = expected.map((id) => byId.get(id)!);

const client = new pg.Client({ connectionString: services.env.PGB_TEST_PG_URL });
await client.connect();
const postgres = (await client.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v.split(' ')[0]!;
await client.end();
const cephLine = spawnSync('radosgw', ['--version'], { encoding: 'utf8' }).stdout.trim();
const cpus = os.cpus();
const run: ReliabilityRun = {
  generatedAt: new Date().toISOString().slice(0, 16) + 'Z',
  machine: {
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    kernel: os.release(),
    node: process.versions.node,
    postgres,
    ceph: /ceph version (\S+)/.exec(cephLine)?.[1] ?? cephLine,
  },
  soakCycles,
  runSeconds: Math.round((Date.now() - started) / 1000),
  rows,
};
// Render first: a renderer error must not leave the data and the doc out of step.
const doc = renderReliabilityDoc(run);
writeFileSync(path.join(root, 'docs/reliability.json'), `${JSON.stringify(run, null, 2)}\n`);
writeFileSync(path.join(root, 'docs/reliability.md'), doc);
console.log(`reliability: ${rows.length} faults recorded; wrote docs/reliability.md and docs/reliability.json`);
