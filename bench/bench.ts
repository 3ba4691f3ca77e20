// Benchmarks (`npm run bench [-- dump|verify|drill …]`, or `-- diff`: bench/diff.ts): a ~1 GB database (pgbench plus a table of
// incompressible-ish text) on a throwaway PostgreSQL, Ceph RGW on loopback, and, per mode,
// our command against the hand pipeline a strong engineer would write, alternating rounds in one
// run on the same database and store:
//
//   dump    floor     pg_dump -Fc -Z0 DB | zstd -3 -T0 > /dev/null   (dump + compress, nothing stored)
//           hand      pg_dump -Fc -Z0 DB | zstd -3 -T0 | rclone -q rcat  (hand-tuned, same compression level)
//           aws-cp    pg_dump DB | zstd -3 | aws s3 cp -              (what backup scripts typically run)
//           ours      pg-backup dump --to s3://…                      (defaults: custom, zstd:3)
//   verify  hand      rclone -q cat OBJ | zstd -dq | pg_restore -f /dev/null  (no checksum)
//           hand-full the same proof as ours: the manifest's sha256 (rclone cat | grep), then
//                     rclone -q cat OBJ | tee FIFO | sha256sum, with zstd -dq < FIFO | pg_restore
//                     -f /dev/null beside it, and the two checksums compared
//           ours      pg-backup verify --level archive               (sha256 + full archive read)
//   drill   hand      rclone -q cat OBJ | zstd -dq > FILE; createdb; pg_restore -j2 -d   (into the
//                     already running server: no initdb, no checks)
//           hand-full the same with what a drill script needs for the same proof, one step after
//                     the other: initdb + start (fsync off), download, restore, count(*) of every
//                     table, stop, rm
//           ours      pg-backup drill --jobs 2                        (throwaway cluster, every check)
//
// Ours runs as `npx pg-backup` does: bin/pg-backup.js as a program, from the CLI bundle (rebuilt first). For
// each pipeline: median wall seconds, client CPU-seconds (user+sys of the pipeline's processes,
// from wait4), and for ours the peak RSS of our Node process alone (children are separate
// processes). Prints the ratios against the targets. A benchmark, not a test.
//   BENCH_GB=1 (database size), BENCH_ROUNDS=3, BENCH_KEEP=1 (keep the services running),
//   BENCH_JOBS=<cores> (pg_restore jobs for both drills), BENCH_TLS=1 (the store over HTTPS, its
//   self-signed certificate trusted by every pipeline; also for all-databases).
//   all-databases: a whole-server dump against a hand loop, in bench/all-databases.ts.
//   server-restore: restore --server of a run against the hand script, in bench/server-restore.ts.
//   diff: pg-backup diff of a 1 M-row table against \copy + comm, in bench/diff.ts.
//   startup: the CLI's start-up CPU and peak RSS (--version, list, a small dump), in bench/startup.ts.
//   latency: a dump to a store 2 × BENCH_DELAY_MS away (a delaying proxy), in bench/latency.ts.
// For the drills it also samples the disk used in the work dir (every 250 ms: the archive, and for
// ours the throwaway cluster) and prints the peak; the hand drill's figure adds the restored
// database's size, which lands in the running server's data directory instead.
import { q, storeTransport, timePipeline, type Run } from './harness.ts';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCliBundle } from '../scripts/build.ts';
import { startServices } from '../test/infra/services.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const modes = process.argv.slice(2).filter((a) => !a.startsWith('-'));
// Start-up cost of short commands (`npm run bench -- startup`): bench/startup.ts, no big database.
if (modes.includes('startup')) {
  await import('./startup.ts');
  process.exit(0);
}
// A whole-server dump (`npm run bench -- all-databases`) has its own databases and baseline: bench/all-databases.ts.
if (modes.includes('all-databases')) {
  await import('./all-databases.ts');
  process.exit(0);
}
// A dump to a distant store (`npm run bench -- latency`): bench/latency.ts, through a delaying proxy.
if (modes.includes('latency')) {
  await import('./latency.ts');
  process.exit(0);
}
// A whole-server restore (`npm run bench -- server-restore`): bench/server-restore.ts, its own clusters.
if (modes.includes('server-restore')) {
  await import('./server-restore.ts');
  process.exit(0);
}
const wanted = new Set(modes.length ? modes : ['dump', 'verify', 'drill']);
// `diff` runs on its own table and database (bench/diff.ts).
if (wanted.has('diff')) {
  if (wanted.size > 1) throw new Error('run the diff bench on its own: npm run bench -- diff');
  await import('./diff.ts');
  process.exit(0);
}
for (const m of wanted) if (!['dump', 'verify', 'drill'].includes(m)) throw new Error(`unknown bench mode ${m}: dump, verify, drill, diff, all-databases or server-restore`);
const gb = Number(process.env.BENCH_GB ?? 1);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const jobs = Number(process.env.BENCH_JOBS ?? os.availableParallelism());
const bin = spawnSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim();

console.log(await writeCliBundle());
const services = await startServices({ bucket: 'bench', memstoreBytes: Math.max(6, Math.ceil(gb * 3)) * 1024 ** 3 });
const scratch = mkdtempSync(path.join(os.tmpdir(), 'pgb-bench-'));
chmodSync(scratch, 0o755); // the drill's work dir: the postgres OS user must reach its cluster dir
process.on('exit', () => {
  rmSync(scratch, { recursive: true, force: true });
  if (!process.env.BENCH_KEEP) services.stop();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
const admin = services.env.PGB_TEST_PG_URL!;
const dbUrl = admin.replace(/\/postgres$/, '/bench');
// BENCH_TLS=1: the store over HTTPS, as hosted S3 is reached; by default plain HTTP on loopback.
const transport = storeTransport(services.env);
const env = { ...transport.env, PG_BACKUP_WORK_DIR: scratch };


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


/** Bytes of all regular files under `dir` now (files that vanish while walking count as 0). */
async function bytesUnder(dir: string): Promise<number> {
  let total = 0;
  const names = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  for (const name of names) {
    const st = await lstat(path.join(dir, name)).catch(() => undefined);
    if (st?.isFile()) total += st.size;
  }
  return total;
}

/** Samples {@link bytesUnder}(`dir`) every 250 ms until the returned stop() is called; stop() resolves to the peak. */
function sampleDisk(dir: string): () => Promise<number> {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, await bytesUnder(dir));
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return async () => {
    running = false;
    await loop;
    return peak;
  };
}

const rssFile = path.join(scratch, 'rss');
const node = path.join(root, 'node_modules/.bin/node');
// As `npx pg-backup` runs it: the program itself (its shebang line finds the project's Node 24
// first on the PATH), with the RSS reporter preloaded through NODE_OPTIONS.
const ours = (args: string) => `PATH=${path.join(root, 'node_modules/.bin')}:"$PATH" NODE_OPTIONS="--import=${path.join(root, 'test/infra/report-rss.js')}" PGB_RSS_FILE=${rssFile} bin/pg-backup.js ${args}`;

/** Runs a shell pipeline (pipefail) under /usr/bin/time; `ours` also reads our Node process's peak RSS. */
function time(label: string, command: string, isOurs: boolean): Promise<Run> {
  return timePipeline(label, command, { env, cwd: root, rssFile: isOurs ? rssFile : undefined });
}

type Pipeline = {
  name: string;
  command: (round: number) => string;
  ours?: boolean;
  before?: () => Promise<void>;
  /** Runs after each run: bytes to add to its disk figure (e.g. the hand drill's restored database). */
  after?: () => Promise<number | void>;
  /** Sample the disk used in the work dir while it runs. */
  disk?: boolean;
};

/** Alternates the pipelines for `rounds` rounds, their order rotating each round; prints each run and returns the runs per pipeline. */
async function alternate(mode: string, pipelines: Pipeline[]): Promise<Map<string, Run[]>> {
  const results = new Map<string, Run[]>(pipelines.map((p) => [p.name, []]));
  for (let i = 0; i < rounds; i++) {
    // The order rotates each round, so that no pipeline always runs first after the database was
    // made, or always right after the same other one.
    for (const p of pipelines.map((_, k) => pipelines[(k + i) % pipelines.length]!)) {
      await p.before?.();
      const stopSampling = p.disk ? sampleDisk(scratch) : undefined;
      const r = await time(`${mode} ${p.name}`, p.command(i), p.ours === true).finally(() => stopSampling?.());
      if (stopSampling) r.diskBytes = (await stopSampling()) + ((await p.after?.()) || 0);
      else await p.after?.();
      // RGW frees a purged object's data later, in its garbage collector: now, untimed, so that no
      // pipeline pays in its own time for the one before it.
      spawnSync('radosgw-admin', ['-c', services.env.PGB_TEST_RGW_CONF!, 'gc', 'process', '--include-all'], { stdio: 'ignore' });
      results.get(p.name)!.push(r);
      console.log(`${mode} round ${i + 1} ${p.name.padEnd(9)} ${r.seconds.toFixed(2)} s, ${r.cpuSeconds.toFixed(2)} CPU-s${r.rssKiB ? `, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB` : ''}${r.diskBytes ? `, peak disk ${(r.diskBytes / 1e9).toFixed(2)} GB` : ''}`);
    }
  }
  return results;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary: string[] = [];

/** Prints the medians of each pipeline and the ratio of ours to each named baseline with its target. */
function report(mode: string, results: Map<string, Run[]>, targets: [baseline: string, target: number][]): void {
  const m = (name: string) => median(results.get(name)!.map((r) => r.seconds));
  const cpu = (name: string) => median(results.get(name)!.map((r) => r.cpuSeconds));
  summary.push(`${mode} (${rounds} rounds, medians):`);
  for (const name of results.keys()) {
    const rss = name === 'ours' ? Math.max(...results.get(name)!.map((r) => r.rssKiB ?? 0)) / 1024 : undefined;
    const disk = Math.max(0, ...results.get(name)!.map((r) => r.diskBytes ?? 0));
    summary.push(`  ${name.padEnd(9)} ${m(name).toFixed(2)} s, ${cpu(name).toFixed(2)} CPU-s${rss !== undefined ? `, peak RSS ${rss.toFixed(0)} MiB (target <= 128)` : ''}${disk ? `, peak disk ${(disk / 1e9).toFixed(2)} GB` : ''}`);
  }
  for (const [baseline, target] of targets) summary.push(`  ours/${baseline} = ${(m('ours') / m(baseline)).toFixed(2)} (target <= ${target.toFixed(2)})`);
}

const dumpKey = 'bench/ours';
if (wanted.has('dump')) {
  const results = await alternate('dump', [
    { name: 'floor', command: () => `${bin}/pg_dump -Fc -Z0 '${dbUrl}' | zstd -3 -T0 -q > /dev/null` },
    // The baselines' objects are deleted after each run: the store keeps everything in memory.
    { name: 'hand', command: (i) => `${bin}/pg_dump -Fc -Z0 '${dbUrl}' | zstd -3 -T0 -q | rclone -q rcat s3:bench/hand/${i}.dump.zst`, after: async () => void spawnSync('rclone', ['-q', 'purge', 's3:bench/hand'], { env }) },
    { name: 'aws-cp', command: (i) => `${bin}/pg_dump '${dbUrl}' | zstd -3 -q | aws s3 cp - s3://bench/awscp/${i}.sql.zst --endpoint-url "$AWS_ENDPOINT_URL_S3" ${transport.awsCliArgs} --only-show-errors`, after: async () => void spawnSync('rclone', ['-q', 'purge', 's3:bench/awscp'], { env }) },
    { name: 'ours', command: () => ours(`dump --database-url '${dbUrl}' --to s3://${dumpKey} --quiet`), ours: true },
  ]);
  report('dump', results, [['hand', 1.0], ['aws-cp', 0.8], ['floor', 1.1]]);
} else {
  await time('dump', ours(`dump --database-url '${dbUrl}' --to s3://${dumpKey} --quiet`), true);
}

if (wanted.has('verify') || wanted.has('drill')) {
  const listed = await time('list', `${node} bin/pg-backup.js list --from s3://${dumpKey} --json`, false);
  // The database's backup, not its run's globals (listed too, and written last).
  const objectUri = (JSON.parse(listed.stdout) as { uri?: string; kind?: string }[]).find((b) => b.kind !== 'globals')?.uri;
  if (!objectUri) throw new Error(`cannot find the dump object in: ${listed.stdout.slice(0, 300)}`);
  const object = objectUri.replace(/^s3:\/\//, 's3:');
  console.log(`restore benches read ${objectUri}`);

  if (wanted.has('verify')) {
    const fifo = path.join(scratch, 'verify.fifo');
    const manifestObject = object.replace(/\.dump\.zst$/, '.manifest.json');
    const results = await alternate('verify', [
      { name: 'hand', command: () => `rclone -q cat ${object} | zstd -dq | ${bin}/pg_restore -f /dev/null` },
      {
        // The same proof as ours, as a script would give it: the checksum the manifest records,
        // the object streamed once through sha256sum and into the archive read, then compared.
        name: 'hand-full',
        command: () =>
          [
            'set -e',
            `want=$(rclone -q cat ${manifestObject} | grep -o -m1 '"sha256": *"[0-9a-f]*"' | grep -o '[0-9a-f]\\{64\\}')`,
            `rm -f ${fifo}; mkfifo ${fifo}`,
            `( zstd -dq < ${fifo} | ${bin}/pg_restore -f /dev/null ) & reader=$!`,
            `got=$(rclone -q cat ${object} | tee ${fifo} | sha256sum | cut -c1-64)`,
            'wait $reader',
            `rm -f ${fifo}`,
            '[ -n "$want" ] && [ "$got" = "$want" ]',
          ].join('\n'),
      },
      { name: 'ours', command: () => ours(`verify --from s3://${dumpKey} --backup latest --level archive`), ours: true },
    ]);
    report('verify', results, [['hand', 1.0], ['hand-full', 1.0]]);
  }
  if (wanted.has('drill')) {
    const local = path.join(scratch, 'hand.dump');
    const results = await alternate('drill', [
      {
        name: 'hand',
        before: async () => void (await q(admin, 'DROP DATABASE IF EXISTS hand_drill')),
        disk: true,
        after: async () => Number((await q(admin, `SELECT pg_database_size('hand_drill') AS s`))[0]!.s),
        command: () => `rclone -q cat ${object} | zstd -dq > ${local} && ${bin}/createdb --maintenance-db='${admin}' hand_drill && ${bin}/pg_restore -j ${jobs} --no-owner --no-acl --exit-on-error -d '${admin.replace(/\/postgres$/, '/hand_drill')}' ${local}; rc=$?; rm -f ${local}; exit $rc`,
      },
      {
        // What a hand-written drill script does for the same proof: its own throwaway server
        // (initdb, start with fsync off, as the runbooks do), the download, the restore, an exact
        // row count of every table, then stop and clean up — one step after the other.
        name: 'hand-full',
        disk: true,
        command: () => {
          const dir = path.join(scratch, 'hand-full');
          const sock = path.join(dir, 'sock');
          const asPg = (cmd: string) => `runuser -u postgres -- ${cmd}`;
          return [
            `mkdir -p ${sock} && chown -R postgres: ${dir}`,
            asPg(`${bin}/initdb -D ${dir}/data -U postgres --auth-local=trust --auth-host=reject -E UTF8 --locale=C --no-sync >/dev/null`),
            asPg(`${bin}/pg_ctl -D ${dir}/data -l ${dir}/log -w -o "-c listen_addresses='' -k ${sock} -c fsync=off -c full_page_writes=off -c synchronous_commit=off" start >/dev/null`),
            `rclone -q cat ${object} | zstd -dq > ${dir}/a.dump`,
            `${bin}/createdb -h ${sock} -U postgres drill`,
            `${bin}/pg_restore -h ${sock} -U postgres -j ${jobs} --no-owner --no-acl --exit-on-error -d drill ${dir}/a.dump`,
            `for t in $(${bin}/psql -h ${sock} -U postgres -d drill -Atc "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables"); do ${bin}/psql -h ${sock} -U postgres -d drill -Atc "SELECT count(*) FROM $t" >/dev/null; done`,
          ].join(' && ') + `; rc=$?; ${asPg(`${bin}/pg_ctl -D ${dir}/data -m immediate stop >/dev/null`)}; rm -rf ${dir}; exit $rc`;
        },
      },
      { name: 'ours', command: () => ours(`drill --from s3://${dumpKey} --backup latest --jobs ${jobs} --json`), ours: true, disk: true },
    ]);
    report('drill', results, [['hand', 0.9], ['hand-full', 0.9]]);
    const phases = results.get('ours')!.map((r) => JSON.parse(r.stdout) as { rtoMs?: number; phases?: Record<string, number> });
    summary.push(`  ours' RTO and phases per round (ms): ${phases.map((p) => JSON.stringify({ rtoMs: p.rtoMs, ...p.phases })).join(' ')}`);
    const handMedian = median(results.get('hand')!.map((r) => r.seconds));
    const rtoMedian = median(phases.map((p) => (p.rtoMs ?? NaN) / 1000));
    summary.push(`  ours' RTO (median ${rtoMedian.toFixed(2)} s) / hand = ${(rtoMedian / handMedian).toFixed(2)}`);
    await q(admin, 'DROP DATABASE IF EXISTS hand_drill');
  }
}

console.log('');
console.log(`database ${(Number(size) / 1e9).toFixed(2)} GB`);
for (const line of summary) console.log(line);
