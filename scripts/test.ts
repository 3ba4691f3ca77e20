// The test command (`npm test`): starts the real services the suite needs — a throwaway
// PostgreSQL cluster (Debian's postgresql package) and a single-node Ceph RGW S3 server
// (Debian's ceph packages, in-memory object store) on loopback — runs every test file under
// test/ with node's test runner, and stops the services. It fails when a service cannot start:
// no test ever passes because its service is missing.
//
// To iterate quickly, start the services once with `node scripts/test.ts --services-only`,
// export the variables it prints, and run `node --test test/...` yourself.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
  const child = spawn(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=300000', ...files], {
    cwd: root,
    env: { ...process.env, ...services.env },
    stdio: 'inherit',
  });
  process.exitCode = await new Promise<number>((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
}
