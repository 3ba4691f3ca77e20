// The diff benchmark (`npm run bench -- diff`): a table of BENCH_DIFF_ROWS rows (default 1 M,
// ~110 MB: bigint key, text, numeric, md5 text, timestamptz) dumped with our CLI to a file://
// store, then ~1 % of its rows changed live (a third deleted, a third updated, a third
// inserted). Two comparisons, alternating rounds, medians:
//
//   compare   the comparison phase alone, on the same two databases for both: a copy of the
//             backup's table restored as our diff restores it (pre-data + that table's rows, so
//             no index) and the live table (with its primary key).
//     hand    LC_ALL=C comm -3 <(psql -c "\copy (SELECT … ORDER BY id::text COLLATE "C") to stdout" COPY)
//                              <(psql -c "\copy (… the same …) to stdout" LIVE) | wc -l
//             both sides streaming at once (process substitution), no temp files. comm needs its
//             input in its own byte order, so the hand pipeline sorts the key as C text on both
//             servers; it only lists differing lines (a changed row twice), it does not classify.
//     ours    compareTables() (src/postgres/table-diff.ts) over the same two databases, through
//             psql as the command runs it: keys ordered natively (an integer key), merged and
//             classified into missing / extra / changed (a counting sink: no repair script).
//   full      the whole job, from the stored backup:
//     hand    initdb + start a throwaway server (fsync off), zstd -dq the archive, pg_restore
//             -n public -t items into it, the hand comparison above, stop, rm
//     ours    pg-backup diff --from file://… --backup latest --table public.items --target-url LIVE --json
//             (sha256 against the manifest, cluster start while downloading, pre-data + the
//             table's rows, the row count against the manifest, the comparison, cleanup)
//
// Ours runs from the CLI bundle (bin/pg-backup.js, rebuilt first) for `full`; the peak RSS is our
// Node process's alone (test/infra/report-rss.js), psql and the servers are separate processes.
// `compare`'s ours runs the TypeScript sources (node bench/diff.ts --compare-only …), whose RSS
// includes Node's TypeScript stripper. Uses the PostgreSQL of PGB_TEST_PG_URL when set (e.g. the
// test services, `set -a; . /tmp/services.sh`), else starts the test services.
//   BENCH_ROUNDS=3, BENCH_DIFF_ROWS=1000000
import { q, timePipeline, type Run } from './harness.ts';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

if (process.argv[2] === '--compare-only') {
  // Child mode: the comparison phase of `pg-backup diff` over two databases, counting.
  const { compareTables } = await import('../src/postgres/table-diff.ts');
  const { resolveConnection } = await import('../src/postgres/connection.ts');
  const { findPgBinary } = await import('../src/postgres/binaries.ts');
  const psql = await findPgBinary('psql', 10, 'the diff bench');
  const counts = { missing: 0, extra: 0, changed: 0 };
  const plan = { table: { schema: 'public', table: 'items' }, key: [{ name: 'id', order: 'integer' as const }], values: ['customer', 'amount', 'note', 'updated'] };
  const rows = await compareTables(psql, resolveConnection(process.argv[3]), resolveConnection(process.argv[4]), plan, {
    missing: () => void counts.missing++,
    extra: () => void counts.extra++,
    changed: () => void counts.changed++,
  });
  process.stdout.write(`${JSON.stringify({ ...counts, ...rows })}\n`);
  process.exit(0);
}

const { writeCliBundle } = await import('../scripts/build.ts');
const { startServices } = await import('../test/infra/services.ts');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const rowCount = Number(process.env.BENCH_DIFF_ROWS ?? 1_000_000);
const bin = spawnSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim();

console.log(await writeCliBundle());
const services = process.env.PGB_TEST_PG_URL ? undefined : await startServices({ bucket: 'bench' });
const admin = process.env.PGB_TEST_PG_URL ?? services!.env.PGB_TEST_PG_URL!;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'pgb-bench-diff-'));
chmodSync(scratch, 0o755); // the throwaway clusters' OS user must reach its directory
const suffix = randomBytes(3).toString('hex');
const liveDb = `bench_diff_live_${suffix}`;
const copyDb = `bench_diff_copy_${suffix}`;
const urlOf = (db: string) => admin.replace(/\/[^/?]*(\?|$)/, `/${db}$1`);
const live = urlOf(liveDb);
const copy = urlOf(copyDb);
const store = `file://${path.join(scratch, 'store')}`;


let cleaned = false;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const db of [liveDb, copyDb]) await q(admin, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  rmSync(scratch, { recursive: true, force: true });
  services?.stop();
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void cleanup().then(() => process.exit(130)));

const env = { ...process.env, PG_BACKUP_WORK_DIR: scratch };
const rssFile = path.join(scratch, 'rss');
const pathWithNode = `PATH=${path.join(root, 'node_modules/.bin')}:"$PATH"`;
const withRss = `${pathWithNode} NODE_OPTIONS="--import=${path.join(root, 'test/infra/report-rss.js')}" PGB_RSS_FILE=${rssFile}`;


/** Runs a bash pipeline (pipefail) under /usr/bin/time; `ours` reads our Node process's peak RSS. */
function time(label: string, command: string, ours: boolean): Promise<Run> {
  return timePipeline(label, command, { env, cwd: root, rssFile: ours ? rssFile : undefined });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  console.log(`creating ${rowCount} rows in ${liveDb} …`);
  const t0 = Date.now();
  await q(admin, `CREATE DATABASE ${liveDb}`);
  await q(live, `CREATE TABLE items (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2), note text, updated timestamptz);
    INSERT INTO items SELECT g, 'customer ' || (g % 5000), (g % 100000) / 100.0, md5(g::text) || md5((g * 7)::text), timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, ${rowCount}) g`);
  await q(live, 'VACUUM ANALYZE items');
  const dumped = spawnSync('bash', ['-c', `${pathWithNode} bin/pg-backup.js dump --database-url '${live}' --to ${store} --quiet --json`], { cwd: root, env, encoding: 'utf8' });
  if (dumped.status !== 0) throw new Error(`dump failed: ${dumped.stderr}`);
  const objectFile = fileURLToPath(JSON.parse(dumped.stdout).backupUri as string);
  // ~1 % of the rows: a third deleted, a third changed, a third new.
  const step = 300;
  await q(live, `DELETE FROM items WHERE id % ${step} = 1;
    UPDATE items SET amount = amount + 1, note = 'changed' WHERE id % ${step} = 2;
    INSERT INTO items SELECT g, 'new', 1, NULL, NULL FROM generate_series(${rowCount + 1}, ${rowCount + Math.ceil(rowCount / step)}) g`);
  await q(live, 'VACUUM ANALYZE items');
  // The backup's table as our diff restores it: pre-data, then the table's rows (no index).
  const local = path.join(scratch, 'copy.dump');
  await q(admin, `CREATE DATABASE ${copyDb}`);
  const restored = spawnSync('bash', ['-o', 'pipefail', '-c', `zstd -dq < ${objectFile} > ${local} && ${bin}/pg_restore --no-owner --no-acl --section=pre-data -d '${copy}' ${local} && ${bin}/pg_restore --no-owner --no-acl --data-only -n public -t items -d '${copy}' ${local} && rm ${local}`], { env, encoding: 'utf8' });
  if (restored.status !== 0) throw new Error(`restoring the copy failed: ${restored.stderr}`);
  await q(copy, 'ANALYZE items');
  console.log(`ready in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${(Number((await q(live, "SELECT pg_total_relation_size('items') AS s"))[0]!.s) / 1e6).toFixed(0)} MB live, ${Math.round(rowCount / step) * 3} rows differ`);

  const handQuery = 'SELECT id, customer, amount, note, updated FROM items ORDER BY id::text COLLATE \\"C\\"';
  const handCompare = (left: string, right: string) =>
    `LC_ALL=C comm -3 <(${bin}/psql -X -q -c "\\copy (${handQuery}) to stdout" ${left}) <(${bin}/psql -X -q -c "\\copy (${handQuery}) to stdout" '${right}') | wc -l`;
  const clusterDir = path.join(scratch, 'hand');
  const sock = path.join(clusterDir, 'sock');
  const asPg = (cmd: string) => `runuser -u postgres -- ${cmd}`;
  const handFull = [
    `mkdir -p ${sock} && chown -R postgres: ${clusterDir}`,
    asPg(`${bin}/initdb -D ${clusterDir}/data -U postgres --auth-local=trust --auth-host=reject -E UTF8 --locale=C --no-sync >/dev/null`),
    asPg(`${bin}/pg_ctl -D ${clusterDir}/data -l ${clusterDir}/log -w -o "-c listen_addresses='' -k ${sock} -c fsync=off -c full_page_writes=off -c synchronous_commit=off" start >/dev/null`),
    `zstd -dq < ${objectFile} > ${clusterDir}/a.dump`,
    `${bin}/createdb -h ${sock} -U postgres copy`,
    `${bin}/pg_restore -h ${sock} -U postgres --no-owner --no-acl --exit-on-error -n public -t items -d copy ${clusterDir}/a.dump`,
    handCompare(`-h ${sock} -U postgres -d copy`, live),
  ].join(' && ') + `; rc=$?; ${asPg(`${bin}/pg_ctl -D ${clusterDir}/data -m immediate stop >/dev/null`)}; rm -rf ${clusterDir}; exit $rc`;

  const pipelines: { name: string; command: string; ours: boolean }[] = [
    { name: 'compare hand', command: handCompare(`'${copy}'`, live), ours: false },
    { name: 'compare ours', command: `${withRss} node bench/diff.ts --compare-only '${copy}' '${live}'`, ours: true },
    { name: 'full hand', command: handFull, ours: false },
    // diff exits 1 when the tables differ, as they do here.
    { name: 'full ours', command: `${withRss} bin/pg-backup.js diff --from ${store} --backup latest --table public.items --target-url '${live}' --json --examples 0; test $? -eq 1`, ours: true },
  ];
  const results = new Map<string, Run[]>(pipelines.map((p) => [p.name, []]));
  for (let i = 0; i < rounds; i++) {
    for (const p of pipelines) {
      const r = await time(p.name, p.command, p.ours);
      results.get(p.name)!.push(r);
      const said = p.name.endsWith('hand') ? `${r.stdout.trim()} differing lines` : p.name === 'compare ours' ? r.stdout.trim() : (() => { const j = JSON.parse(r.stdout); return JSON.stringify(j.counts); })();
      console.log(`diff round ${i + 1} ${p.name.padEnd(12)} ${r.seconds.toFixed(2)} s, ${r.cpuSeconds.toFixed(2)} CPU-s${r.rssKiB ? `, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB` : ''}: ${said}`);
    }
  }
  const m = (name: string) => median(results.get(name)!.map((r) => r.seconds));
  const cpu = (name: string) => median(results.get(name)!.map((r) => r.cpuSeconds));
  console.log('');
  console.log(`diff of ${rowCount} rows, ~1 % different (${rounds} rounds, medians):`);
  for (const name of results.keys()) {
    const rss = name.endsWith('ours') ? Math.max(...results.get(name)!.map((r) => r.rssKiB ?? 0)) / 1024 : undefined;
    console.log(`  ${name.padEnd(12)} ${m(name).toFixed(2)} s, ${cpu(name).toFixed(2)} CPU-s${rss !== undefined ? `, peak RSS ${rss.toFixed(0)} MiB` : ''}`);
  }
  console.log(`  compare: ours/hand = ${(m('compare ours') / m('compare hand')).toFixed(2)} (target <= 2.00)`);
  console.log(`  full:    ours/hand = ${(m('full ours') / m('full hand')).toFixed(2)} (target <= 2.00)`);
} finally {
  await cleanup();
}
