// The test command (`npm test`): starts the real services the suite needs — a throwaway
// PostgreSQL cluster (Debian's postgresql package) and a single-node Ceph RGW S3 server
// (Debian's ceph packages, in-memory object store) on loopback — runs every test file under
// test/ with node's test runner, and stops the services. It fails when a service cannot start:
// no test ever passes because its service is missing.
//
// To iterate quickly, start the services once with `node scripts/test.ts --services-only`,
// export the variables it prints, and run `node --test test/...` yourself.
//
// Tests clean up after themselves: each test file runs with a temp directory of its own
// (test/infra/test-tmpdir.ts, under one root for the run) as its TMPDIR, and after the runner
// exits every entry still in one fails the run, named with the file that left it and its size
// (the services' own directory lies outside that root and is removed by services.stop()).
// PGB_KEEP_TEST_TMP=1 keeps the root for a look; otherwise it is removed.
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testTmpLeftovers } from '../test/infra/leftovers.ts';
import { startServices } from '../test/infra/services.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const servicesOnly = process.argv.includes('--services-only');
const patterns = process.argv.slice(2).filter((a) => !a.startsWith('--'));

const started = Date.now();
const services = await startServices();
process.on('exit', () => {
  if (!servicesOnly) services.stop();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
console.log(`services up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
if (servicesOnly) {
  for (const [k, v] of Object.entries(services.env)) console.log(`export ${k}=${v}`);
  process.exitCode = 0;
} else {
  const files = patterns.length ? patterns : ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'];
  const tmpRoot = await mkdtemp(path.join(os.tmpdir(), 'pgb-t-')); // short: socket paths under it stay short
  await chmod(tmpRoot, 0o755);
  // Directories made straight in /tmp (a hard-coded path such as the cluster's short socket
  // directory) cannot be traced to a file; new ones are reported, without failing the run,
  // since another process on the machine may have made them.
  const systemTmp = '/tmp';
  const ours = /^(pgb-|pg-backup-)/;
  const tmpBefore = new Set(await readdir(systemTmp).catch(() => [] as string[]));
  const child = spawn(process.execPath, ['--import', path.join(root, 'test/infra/test-tmpdir.ts'), '--test', '--test-concurrency=2', '--test-timeout=300000', ...files], {
    cwd: root,
    env: { ...process.env, ...services.env, PGB_TEST_TMP_ROOT: tmpRoot },
    stdio: 'inherit',
  });
  const code = await new Promise<number>((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
  process.exitCode = code;

  const left = await testTmpLeftovers(tmpRoot);
  if (left.length) {
    const mib = (b: number) => (b < 1024 ** 2 ? `${Math.ceil(b / 1024)} KiB` : `${(b / 1024 ** 2).toFixed(1)} MiB`);
    const byFile = new Map<string, typeof left>();
    for (const l of left) byFile.set(l.file, [...(byFile.get(l.file) ?? []), l]);
    console.error(`\ntest leftovers: ${left.length} temp entr${left.length === 1 ? 'y' : 'ies'} (${mib(left.reduce((n, l) => n + l.bytes, 0))}) left in the test files' own temp directories under ${tmpRoot} — each test must remove what it makes (t.after / finally):`);
    for (const [file, entries] of byFile) {
      console.error(`  ${file}: ${entries.map((e) => `${path.basename(e.path)} (${mib(e.bytes)})`).join(', ')}`);
    }
    if (process.exitCode === 0) process.exitCode = 1;
  }
  const strays = (await readdir(systemTmp).catch(() => [] as string[])).filter((n) => ours.test(n) && !tmpBefore.has(n) && path.join(systemTmp, n) !== tmpRoot && path.join(systemTmp, n) !== services.work);
  if (strays.length) console.error(`note: new in ${systemTmp} since the run started (not counted: not traceable to a test file, another process may have made them): ${strays.join(', ')}`);
  if (process.env.PGB_KEEP_TEST_TMP === '1') console.error(`kept the test temp root ${tmpRoot}`);
  else await rm(tmpRoot, { recursive: true, force: true });
}
