// Benchmark of a whole-server dump (`npm run bench -- all-databases`, issue 25): 20 small
// databases (pgbench scale 1 each, ~23 MB) and one of ~BENCH_GB GB (pgbench plus a text table, as
// bench.ts builds it) on a throwaway PostgreSQL, Ceph RGW on loopback, alternating rounds of
//
//   hand   pg_dumpall --globals-only | zstd -3 | rclone rcat, then
//          for db …; pg_dump -Fc -Z0 DB | zstd -3 -T0 | rclone -q rcat   (xargs -P N: same parallelism)
//   ours   pg-backup dump --all-databases --parallel-databases N          (globals, manifests, row counts)
//
//   hand-full  the hand loop plus the proof ours records, as a strong engineer would script it:
//          each archive's SHA-256 (tee >(sha256sum)), the exact row count of every table
//          (one query_to_xml count per table, after the dump, not in its snapshot) and a small
//          JSON record per database uploaded beside it (rclone rcat)
//
// The order rotates each round, and RGW's garbage collector runs (untimed) after each pipeline's
// objects are purged. Prints each run (with the CPU PostgreSQL and the store spent in it), the medians, ours/hand (target <= 1.00), ours/hand-full and
// the peak RSS of our Node process (target <= 128 MiB; children are separate processes). A
// benchmark, not a test.
//   BENCH_GB=1 (the big database), BENCH_ROUNDS=3, BENCH_PARALLEL=2 (databases at once, both
//   sides), BENCH_SMALL=20 (small databases), BENCH_KEEP=1 (keep the services running).
import { q, serverCpu, storeCpu, storeTransport, timePipeline, type Run } from './harness.ts';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCliBundle } from '../scripts/build.ts';
import { startServices } from '../test/infra/services.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const gb = Number(process.env.BENCH_GB ?? 1);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const parallel = Number(process.env.BENCH_PARALLEL ?? 2);
const smallCount = Number(process.env.BENCH_SMALL ?? 20);
const bin = spawnSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim();

console.log(await writeCliBundle());
const services = await startServices({ bucket: 'bench', memstoreBytes: Math.max(6, Math.ceil(gb * 3)) * 1024 ** 3 });
const scratch = mkdtempSync(path.join(os.tmpdir(), 'pgb-bench-all-'));
process.on('exit', () => {
  rmSync(scratch, { recursive: true, force: true });
  if (!process.env.BENCH_KEEP) services.stop();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
const admin = services.env.PGB_TEST_PG_URL!;
// BENCH_TLS=1: the store over HTTPS, as hosted S3 is reached; by default plain HTTP on loopback.
const { tls, env } = storeTransport(services.env);

const urlOf = (db: string) => admin.replace(/\/postgres$/, `/${db}`);

console.log(`creating ${smallCount} small databases (pgbench scale 1) and one of ~${gb} GB …`);
const t0 = Date.now();
for (let i = 1; i <= smallCount; i++) {
  const name = `small_${String(i).padStart(2, '0')}`;
  await q(admin, `CREATE DATABASE ${name}`);
  if (spawnSync(path.join(bin, 'pgbench'), ['-i', '-q', '-s', '1', urlOf(name)], { env, stdio: 'ignore' }).status !== 0) throw new Error(`pgbench -i ${name} failed`);
}
await q(admin, 'CREATE DATABASE big');
if (spawnSync(path.join(bin, 'pgbench'), ['-i', '-q', '-s', String(Math.max(1, Math.round(50 * gb))), urlOf('big')], { env, stdio: 'ignore' }).status !== 0) throw new Error('pgbench -i big failed');
await q(urlOf('big'), `CREATE TABLE notes AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS body FROM generate_series(1, ${Math.round(2_000_000 * gb)}) g`);
await q(urlOf('big'), 'VACUUM ANALYZE');
const total = Number((await q(admin, `SELECT sum(pg_database_size(datname))::text AS s FROM pg_database WHERE datname LIKE 'small_%' OR datname = 'big'`))[0]!.s);
console.log(`databases ready: ${(total / 1e9).toFixed(2)} GB in all (pg_database_size) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

const rssFile = path.join(scratch, 'rss');
const ours = (args: string) => `PATH=${path.join(root, 'node_modules/.bin')}:"$PATH" NODE_OPTIONS="--import=${path.join(root, 'test/infra/report-rss.js')}" PGB_RSS_FILE=${rssFile} bin/pg-backup.js ${args}`;

/** Runs a shell pipeline (pipefail) under /usr/bin/time; for ours also our Node process's peak RSS (as bench.ts measures). */
function time(label: string, command: string, isOurs: boolean): Promise<Run> {
  return timePipeline(label, command, { env, cwd: root, rssFile: isOurs ? rssFile : undefined });
}

// The hand loop: the globals, then every database the server lists (templates left out), N at a time.
const list = `${bin}/psql -X -Atc "SELECT datname FROM pg_database WHERE datallowconn AND datname NOT IN ('template0', 'template1')" '${admin}'`;
const hand = (i: number) =>
  [
    `${bin}/pg_dumpall --globals-only -d '${admin}' | zstd -3 -q | rclone -q rcat s3:bench/hand/${i}/globals.sql.zst`,
    `${list} | xargs -P ${parallel} -I{} bash -o pipefail -c "${bin}/pg_dump -Fc -Z0 '${admin.replace(/\/postgres$/, '')}/{}' | zstd -3 -T0 -q | rclone -q rcat s3:bench/hand/${i}/{}.dump.zst"`,
  ].join(' && ');
// The hand loop with the proof: checksum, exact row counts and a record per database.
const COUNTS = `SELECT coalesce(json_agg(json_build_object('table', format('%I.%I', table_schema, table_name), 'rows', (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text::bigint)), '[]') FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`;
writeFileSync(path.join(scratch, 'one-db.sh'), [
  'set -eo pipefail',
  'db=$1; out=$2; d=$(mktemp -d); trap \'rm -rf "$d"\' EXIT',
  // The checksum reads a FIFO that tee feeds, and is waited for: no race with the record below.
  'mkfifo "$d/f"; sha256sum < "$d/f" | cut -d" " -f1 > "$d/sum" & s=$!',
  `${bin}/pg_dump -Fc -Z0 "${admin.replace(/\/postgres$/, '')}/$db" | zstd -3 -T0 -q | tee "$d/f" | rclone -q rcat "$out/$db.dump.zst"`,
  'wait $s',
  `rows=$(${bin}/psql -X -Atc "${COUNTS.replace(/"/g, '\\"')}" "${admin.replace(/\/postgres$/, '')}/$db")`,
  'printf \'{"database":"%s","sha256":"%s","tables":%s}\\n\' "$db" "$(cat "$d/sum")" "$rows" | rclone -q rcat "$out/$db.manifest.json"',
].join('\n'));
const handFull = (i: number) =>
  [
    `${bin}/pg_dumpall --globals-only -d '${admin}' | zstd -3 -q | rclone -q rcat s3:bench/hand-full/${i}/globals.sql.zst`,
    `${list} | xargs -P ${parallel} -I{} bash ${path.join(scratch, 'one-db.sh')} {} s3:bench/hand-full/${i}`,
  ].join(' && ');
const pipelines = [
  { name: 'hand', command: hand, ours: false, after: () => void spawnSync('rclone', ['-q', 'purge', 's3:bench/hand'], { env }) },
  { name: 'hand-full', command: handFull, ours: false, after: () => void spawnSync('rclone', ['-q', 'purge', 's3:bench/hand-full'], { env }) },
  { name: 'ours', command: (i: number) => ours(`dump --all-databases --parallel-databases ${parallel} --database-url '${admin}' --to s3://bench/ours/${i} --quiet`), ours: true, after: () => void spawnSync('rclone', ['-q', 'purge', 's3:bench/ours'], { env }) },
];
const results = new Map<string, Run[]>(pipelines.map((p) => [p.name, []]));
// The CPU the services spent during each run: PostgreSQL (every backend, the proof's queries
// included) and the object store (RGW and its Ceph daemons). On this 2-core bench both compete
// with the pipeline for the same cores, so a pipeline's wall time follows all three.
const pgData = path.join(path.dirname(services.env.PGB_TEST_RGW_CONF!), '..', 'pg', 'data');
const rgwRun = path.join(path.dirname(services.env.PGB_TEST_RGW_CONF!), 'run');
const serviceCpu = new Map<string, { server: number; store: number }[]>(pipelines.map((p) => [p.name, []]));
// RGW frees a purged object's data later, in its garbage collector: run that now, untimed, so that
// no pipeline pays in its own time for the one before it (and the in-memory store stays small).
const collectGarbage = () => void spawnSync('radosgw-admin', ['-c', services.env.PGB_TEST_RGW_CONF!, 'gc', 'process', '--include-all'], { stdio: 'ignore' });
for (let i = 0; i < rounds; i++) {
  // The order rotates each round (hand, hand-full, ours; then hand-full, ours, hand; …), so that
  // none is always first after the database was created, or always after the same other one.
  for (const p of pipelines.map((_, k) => pipelines[(k + i) % pipelines.length]!)) {
    const [server0, store0] = [serverCpu(pgData), storeCpu(rgwRun)];
    const r = await time(`all-databases ${p.name}`, p.command(i), p.ours);
    const cpu = { server: serverCpu(pgData) - server0, store: storeCpu(rgwRun) - store0 };
    p.after();
    collectGarbage();
    results.get(p.name)!.push(r);
    serviceCpu.get(p.name)!.push(cpu);
    console.log(`all-databases round ${i + 1} ${p.name.padEnd(9)} ${r.seconds.toFixed(2)} s, ${r.cpuSeconds.toFixed(2)} CPU-s (server ${cpu.server.toFixed(2)}, store ${cpu.store.toFixed(2)})${r.rssKiB ? `, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB` : ''}`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const m = (name: string) => median(results.get(name)!.map((r) => r.seconds));
const cpu = (name: string) => median(results.get(name)!.map((r) => r.cpuSeconds));
console.log('');
console.log(`all-databases: ${smallCount} small databases + one of ${gb} GB (${(total / 1e9).toFixed(2)} GB in all), ${parallel} at a time, ${rounds} rounds, store over ${tls ? 'HTTPS' : 'HTTP'}, medians:`);
for (const name of results.keys()) {
  const rss = name === 'ours' ? Math.max(...results.get(name)!.map((r) => r.rssKiB ?? 0)) / 1024 : undefined;
  const svc = serviceCpu.get(name)!;
  console.log(`  ${name.padEnd(9)} ${m(name).toFixed(2)} s, ${cpu(name).toFixed(2)} CPU-s, server ${median(svc.map((c) => c.server)).toFixed(2)}, store ${median(svc.map((c) => c.store)).toFixed(2)}${rss !== undefined ? `, peak RSS ${rss.toFixed(0)} MiB (target <= 128)` : ''}`);
}
console.log(`  ours/hand = ${(m('ours') / m('hand')).toFixed(2)} (target <= 1.00), ours/hand-full = ${(m('ours') / m('hand-full')).toFixed(2)}`);
process.exit(0);
