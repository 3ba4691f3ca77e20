// Start-up cost of the CLI (`npm run bench -- startup`): CPU seconds (user+sys) and peak RSS of
// short commands, which on a small, CPU-bound runner are mostly Node evaluating our bundle.
// Rows, each run once per round, rounds alternating (BENCH_ROUNDS, default 7), medians printed:
//
//   node -e 0              the floor: Node itself
//   --version              bin/pg-backup.js --version (as `npx pg-backup` starts it: a program)
//   list file://           list on a file:// location with 5 backups made here (no server)
//   dump file://           a small database (1 000 rows) dumped to a file:// location  } with
//   dump s3://             the same to the test services' RGW (PGB_TEST_S3_*)         } PGB_TEST_PG_URL
//
// With PGB_BENCH_BEFORE_CLI=<other tree>/bin/pg-backup.js, each pg-backup row also runs that CLI
// (e.g. main's, its bundle built) in the same rounds, and the ratio ours/before is printed.
// CPU and peak RSS come from /usr/bin/time (wait4): CPU includes the command's children (pg_dump,
// zstd: the same for both CLIs); the peak RSS is that of the largest process, our Node process
// here. Everything made (temp dirs, the database, the S3 prefix) is removed at exit. A
// benchmark, not a test; the machine should be otherwise idle, or compare within rounds only.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeCliBundle } from '../scripts/build.ts';
import { openStorage } from '../src/storage/index.ts';
import { manifestFor } from '../test/manifest-fixture.ts';
import { q, storeEnv } from './harness.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
const ours = path.join(root, 'bin/pg-backup.js');
const before = process.env.PGB_BENCH_BEFORE_CLI ? path.resolve(process.env.PGB_BENCH_BEFORE_CLI) : undefined;
const pgUrl = process.env.PGB_TEST_PG_URL;
const s3Endpoint = process.env.PGB_TEST_S3_ENDPOINT;
const s3Bucket = process.env.PGB_TEST_S3_BUCKET;

console.log(await writeCliBundle());
const scratch = mkdtempSync(path.join(os.tmpdir(), 'pgb-bench-startup-'));
const cleanups: (() => Promise<void> | void)[] = [() => rmSync(scratch, { recursive: true, force: true })];
async function cleanUp(): Promise<void> {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch((err: unknown) => console.error(`clean-up: ${(err as Error).message}`));
  cleanups.length = 0;
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void cleanUp().finally(() => process.exit(130)));

// A file:// location with 5 backups of one database, written by hand (schema-valid manifests).
const listed = path.join(scratch, 'listed');
for (let d = 1; d <= 5; d++) {
  const day = String(d).padStart(2, '0');
  const stem = `api/production/app/2026/12/${day}/app-202612${day}T020000Z-0a1b2${d}`;
  mkdirSync(path.join(listed, path.dirname(stem)), { recursive: true });
  writeFileSync(path.join(listed, `${stem}.dump.zst`), Buffer.alloc(1000));
  writeFileSync(path.join(listed, `${stem}.manifest.json`), manifestFor(stem, { sizeBytes: 1000 }));
}

// The environment of every run: Node 24 first on the PATH (the shebang's `env node`), S3 credentials of the test RGW.
const env: NodeJS.ProcessEnv = { ...(s3Endpoint ? storeEnv(s3Endpoint) : process.env), PATH: `${path.join(root, 'node_modules/.bin')}:${process.env.PATH}` };

/** One row: a label and its command per CLI (`cli` is the launcher's path). */
interface Row {
  label: string;
  args: (cli: string) => string[];
}

const rows: Row[] = [
  { label: '--version', args: (cli) => [cli, '--version'] },
  { label: 'list file://', args: (cli) => [cli, 'list', '--from', pathToFileURL(listed).href] },
];

let database: string | undefined;
if (pgUrl) {
  database = `pgb_startup_${randomBytes(3).toString('hex')}`;
  await q(pgUrl, `CREATE DATABASE ${database}`);
  cleanups.push(async () => void (await q(pgUrl, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)));
  const target = new URL(pgUrl);
  target.pathname = `/${database}`;
  const dbUrl = target.href;
  await q(dbUrl, "CREATE TABLE t (id int PRIMARY KEY, body text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
  // Each run writes a new backup: a directory per CLI, emptied at exit.
  rows.push({ label: 'dump file://', args: (cli) => [cli, 'dump', '--quiet', '--database-url', dbUrl, '--to', pathToFileURL(path.join(scratch, `dumps-${cli === ours ? 'ours' : 'before'}`)).href] });
  if (s3Endpoint && s3Bucket) {
    const prefix = `t-startup-bench-${randomBytes(4).toString('hex')}`;
    rows.push({ label: 'dump s3://', args: (cli) => [cli, 'dump', '--quiet', '--database-url', dbUrl, '--to', `s3://${s3Bucket}/${prefix}`] });
    cleanups.push(async () => {
      const storage = openStorage(`s3://${s3Bucket}/${prefix}`, { endpoint: s3Endpoint, credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! } });
      for await (const o of storage.list('')) await storage.delete(o.key);
    });
  } else console.log('PGB_TEST_S3_ENDPOINT / PGB_TEST_S3_BUCKET not set: no dump s3:// row');
} else console.log('PGB_TEST_PG_URL not set: no dump rows (list runs on backups made by hand)');

/** One measured run. */
interface Sample {
  cpuSeconds: number;
  rssMiB: number;
  seconds: number;
}

/** Runs `argv` under /usr/bin/time. @throws Error naming the command when it fails. */
function measure(argv: string[]): Sample {
  const r = spawnSync('/usr/bin/time', ['-f', 'PGB_TIME %U %S %M %e', ...argv], { env, cwd: scratch, encoding: 'utf8' });
  const m = /PGB_TIME ([\d.]+) ([\d.]+) (\d+) ([\d.]+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr.slice(-600)}`);
  return { cpuSeconds: Number(m[1]) + Number(m[2]), rssMiB: Number(m[3]) / 1024, seconds: Number(m[4]) };
}

const series = new Map<string, Sample[]>();
const record = (key: string, s: Sample) => series.set(key, [...(series.get(key) ?? []), s]);
const clis = [{ name: 'ours', path: ours }, ...(before ? [{ name: 'before', path: before }] : [])];
try {
  for (let round = 1; round <= rounds; round++) {
    record('node -e 0', measure([process.execPath, '-e', '0']));
    for (const row of rows) {
      // Alternate which CLI goes first, so neither always runs on a warmer cache.
      for (const cli of round % 2 ? clis : [...clis].reverse()) record(`${row.label} (${cli.name})`, measure(row.args(cli.path)));
    }
    process.stdout.write(`round ${round}/${rounds} done\n`);
  }
} finally {
  await cleanUp();
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
console.log(`\nmedians of ${rounds} alternating rounds (CPU: user+sys of the command and its children; RSS: the largest process's peak)`);
console.log(`${'command'.padEnd(24)} ${'CPU-s'.padStart(6)} ${'(min–max)'.padStart(12)} ${'RSS MiB'.padStart(8)} ${'wall s'.padStart(7)}`);
for (const [key, samples] of series) {
  const cpu = samples.map((s) => s.cpuSeconds);
  console.log(`${key.padEnd(24)} ${median(cpu).toFixed(3).padStart(6)} ${`(${Math.min(...cpu).toFixed(2)}–${Math.max(...cpu).toFixed(2)})`.padStart(12)} ${median(samples.map((s) => s.rssMiB)).toFixed(1).padStart(8)} ${median(samples.map((s) => s.seconds)).toFixed(3).padStart(7)}`);
}
if (before) {
  console.log('\nours / before (medians)');
  for (const row of rows) {
    const a = series.get(`${row.label} (ours)`)!;
    const b = series.get(`${row.label} (before)`)!;
    console.log(`${row.label.padEnd(24)} CPU ${(median(a.map((s) => s.cpuSeconds)) / median(b.map((s) => s.cpuSeconds))).toFixed(2)}×  RSS ${(median(a.map((s) => s.rssMiB)) / median(b.map((s) => s.rssMiB))).toFixed(2)}×`);
  }
}
process.exit(0);
