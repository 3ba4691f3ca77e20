// Dump benchmark (`npm run bench`): a ~1 GB database (pgbench plus a table of
// incompressible-ish text) on a throwaway PostgreSQL, Ceph RGW on loopback, and, alternating
// for several rounds:
//   1. floor     pg_dump -Fc -Z0 DB | zstd -3 -T0 > /dev/null     (dump + compress, nothing stored)
//   2. seed-000  pg_dump DB | zstd -3 | aws s3 cp - s3://…          (the runbook pipeline)
//   3. ours      pg-backup dump --to s3://…                         (defaults: custom, zstd:3)
// Ours runs as `npx pg-backup` does: bin/pg-backup.js, from the CLI bundle (rebuilt first).
// Prints medians, the ratios 3/1 and 3/2, and our peak RSS. A benchmark, not a test.
//   BENCH_GB=1 (database size), BENCH_ROUNDS=3, BENCH_KEEP=1 (keep the services running).
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { writeCliBundle } from '../scripts/build.ts';
import { startServices } from '../test/infra/services.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const gb = Number(process.env.BENCH_GB ?? 1);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const bin = spawnSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim();

console.log(await writeCliBundle());
const services = await startServices({ bucket: 'bench', memstoreBytes: Math.max(6, Math.ceil(gb * 2)) * 1024 ** 3 });
process.on('exit', () => {
  if (!process.env.BENCH_KEEP) services.stop();
});
const admin = services.env.PGB_TEST_PG_URL!;
const dbUrl = admin.replace(/\/postgres$/, '/bench');
const env = {
  ...process.env,
  AWS_ACCESS_KEY_ID: 'BACKUPKEY',
  AWS_SECRET_ACCESS_KEY: 'BACKUPSECRET',
  AWS_ENDPOINT_URL_S3: services.env.PGB_TEST_S3_ENDPOINT!,
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_REGION: 'us-east-1',
  AWS_REQUEST_CHECKSUM_CALCULATION: 'when_required',
  AWS_RESPONSE_CHECKSUM_VALIDATION: 'when_required',
  PGPASSWORD: 'pgtestpw',
};

async function q(url: string, sql: string): Promise<pg.QueryResultRow[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query(sql);
    return Array.isArray(r) ? (r.at(-1)?.rows ?? []) : r.rows;
  } finally {
    await c.end();
  }
}

console.log(`creating a ~${gb} GB database (pgbench scale ${Math.round(50 * gb)} + text) …`);
const t0 = Date.now();
await q(admin, 'CREATE DATABASE bench');
const init = spawnSync(path.join(bin, 'pgbench'), ['-i', '-q', '-s', String(Math.round(50 * gb)), dbUrl], { env, stdio: ['ignore', 'ignore', 'ignore'] });
if (init.status !== 0) throw new Error('pgbench -i failed');
// Text that compresses like real rows (hex digests): about a quarter of the size.
await q(dbUrl, `CREATE TABLE notes AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS body FROM generate_series(1, ${Math.round(2_000_000 * gb)}) g`);
await q(dbUrl, 'VACUUM ANALYZE');
const size = (await q(dbUrl, 'SELECT pg_database_size(current_database()) AS s'))[0]!.s as string;
console.log(`database ready: ${(Number(size) / 1e9).toFixed(2)} GB (pg_database_size) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

interface Run {
  seconds: number;
  rssKiB?: number;
}

/** Runs a shell pipeline (pipefail), returning wall seconds; under /usr/bin/time for ours. */
function time(label: string, command: string, measureRss = false): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const argv = measureRss ? ['/usr/bin/time', '-f', 'RSS_KIB=%M', 'bash', '-o', 'pipefail', '-c', command] : ['bash', '-o', 'pipefail', '-c', command];
    const child = spawn(argv[0]!, argv.slice(1), { env, cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${label} failed (${code}): ${stderr.slice(-500)}`));
      const rss = /RSS_KIB=(\d+)/.exec(stderr);
      resolve({ seconds, rssKiB: rss ? Number(rss[1]) : undefined });
    });
  });
}

const node = path.join(root, 'node_modules/.bin/node');
const pipelines: [string, (i: number) => string, boolean][] = [
  ['floor', () => `${bin}/pg_dump -Fc -Z0 '${dbUrl}' | zstd -3 -T0 -q > /dev/null`, false],
  ['seed-000', (i) => `${bin}/pg_dump '${dbUrl}' | zstd -3 -q | aws s3 cp - s3://bench/seed000/${i}.sql.zst --endpoint-url "$AWS_ENDPOINT_URL_S3" --only-show-errors`, false],
  ['ours', () => `${node} bin/pg-backup.js dump --database-url '${dbUrl}' --to s3://bench/ours --quiet`, true],
];
const results = new Map<string, Run[]>(pipelines.map(([name]) => [name, []]));
for (let i = 0; i < rounds; i++) {
  for (const [name, command, rss] of pipelines) {
    const r = await time(name, command(i), rss);
    results.get(name)!.push(r);
    console.log(`round ${i + 1} ${name.padEnd(8)} ${r.seconds.toFixed(2)} s${r.rssKiB ? `, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB` : ''}`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const m = Object.fromEntries([...results].map(([k, v]) => [k, median(v.map((r) => r.seconds))]));
const rss = Math.max(...results.get('ours')!.map((r) => r.rssKiB ?? 0)) / 1024;
console.log('');
console.log(`database ${(Number(size) / 1e9).toFixed(2)} GB, ${rounds} rounds, medians:`);
console.log(`  1 floor    ${m.floor!.toFixed(2)} s`);
console.log(`  2 seed-000 ${m['seed-000']!.toFixed(2)} s`);
console.log(`  3 ours     ${m.ours!.toFixed(2)} s, peak RSS ${rss.toFixed(0)} MiB`);
console.log(`  ratio 3/1 = ${(m.ours! / m.floor!).toFixed(2)} (target <= 1.10)`);
console.log(`  ratio 3/2 = ${(m.ours! / m['seed-000']!).toFixed(2)} (target <= 0.80)`);
console.log(`  peak RSS ${rss.toFixed(0)} MiB (target <= 128 MiB)`);
