// The test command (`npm test`): starts the real services the suite needs — a throwaway
// PostgreSQL cluster (Debian's postgresql package) and a single-node Ceph RGW S3 server
// (Debian's ceph packages, in-memory object store) on loopback — runs every test file under
// test/ with node's test runner, and stops the services. It fails when a service cannot start:
// no test ever passes because its service is missing.
//
// To iterate quickly, start the services once with `node scripts/test.ts --services-only`,
// export the variables it prints, and run `node --test test/...` yourself.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const servicesOnly = process.argv.includes('--services-only');
const patterns = process.argv.slice(2).filter((a) => !a.startsWith('--'));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function sh(script: string, env: Record<string, string>): void {
  const r = spawnSync('bash', [path.join(root, script)], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`${script} failed (exit ${r.status}): the test services could not start`);
}

const work = mkdtempSync(path.join(os.tmpdir(), 'pgb-test-'));
chmodSync(work, 0o755); // the postgres OS user must reach its cluster directory
const rgwDir = path.join(work, 'rgw');
const pgDir = path.join(work, 'pg');

function stopServices(): void {
  try {
    for (const f of readdirSync(path.join(rgwDir, 'run')).filter((n) => n.endsWith('.pid'))) {
      const pid = Number(readFileSync(path.join(rgwDir, 'run', f), 'utf8'));
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  } catch {
    /* never started */
  }
  try {
    const pid = Number(readFileSync(path.join(pgDir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(pid, 'SIGQUIT');
  } catch {
    /* never started */
  }
  if (!servicesOnly) rmSync(work, { recursive: true, force: true });
}

const started = Date.now();
const rgwPort = await freePort();
const monPort = await freePort();
const pgPort = await freePort();
process.on('exit', () => {
  if (!servicesOnly) stopServices();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

console.log(`starting Ceph RGW on 127.0.0.1:${rgwPort} and PostgreSQL on 127.0.0.1:${pgPort} under ${work}`);
sh('test/infra/pg-up.sh', { D: pgDir, PG_PORT: String(pgPort) });
sh('test/infra/rgw-up.sh', { D: rgwDir, RGW_PORT: String(rgwPort), MON_PORT: String(monPort), MEMSTORE_BYTES: String(6 * 1024 ** 3) });

const endpoint = `http://127.0.0.1:${rgwPort}`;
const bucket = 'pgb-test';
const s3 = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'BACKUPKEY', secretAccessKey: 'BACKUPSECRET' } });
await s3.send(new CreateBucketCommand({ Bucket: bucket }));
s3.destroy();
console.log(`services up in ${((Date.now() - started) / 1000).toFixed(1)} s`);

const env: Record<string, string> = {
  PGB_TEST_S3_ENDPOINT: endpoint,
  PGB_TEST_S3_BUCKET: bucket,
  PGB_TEST_S3_ACCESS_KEY: 'BACKUPKEY',
  PGB_TEST_S3_SECRET_KEY: 'BACKUPSECRET',
  PGB_TEST_PG_URL: `postgresql://postgres:pgtestpw@127.0.0.1:${pgPort}/postgres`,
  PGB_TEST_RGW_CONF: path.join(rgwDir, 'ceph.conf'),
};
if (servicesOnly) {
  for (const [k, v] of Object.entries(env)) console.log(`export ${k}=${v}`);
  process.exit(0);
}

const files = patterns.length ? patterns : ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'];
const child = spawn(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=300000', ...files], {
  cwd: root,
  env: { ...process.env, ...env },
  stdio: 'inherit',
});
const code: number = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
process.exit(code);
