// Benchmark of `pg-backup restore --server` against the hand scripts a strong engineer would
// write for the same run (`npm run bench -- server-restore` or `node bench/server-restore.ts`, as root: the clusters run as the OS
// user postgres). A source PostgreSQL 15 of its own gets roles with grants, BENCH_SMALL small
// databases (default 20) and one pgbench database of scale BENCH_SCALE (default 20, ~300 MB);
// one run with globals is written into a file:// bucket (test/infra/globals-fixture.ts); then,
// in rounds (BENCH_ROUNDS, default 2) whose order rotates (hand, hand-full, ours; then
// hand-full, ours, hand; …), each into a fresh empty target cluster:
//
//   hand       zstd -dq each object (globals, then every database: xargs -P JOBS); psql -X -f
//              globals.sql (errors ignored: roles that exist); pg_restore --create -d postgres per
//              database, JOBS at once (xargs -P); no checksum, no checks
//   hand-full  hand plus the proof a careful person adds by hand, from the manifests (read before
//              the clock starts, as jq would give them: each object's SHA-256, each database's
//              tables and row counts): `sha256sum -c` of the globals' object before psql runs it;
//              each database, in its xargs slot: `sha256sum -c` of its object, zstd -dq,
//              pg_restore --create, then one psql session in the new database running `SELECT
//              count(*)` of each table the manifest lists, its output compared (`cmp`) with the
//              manifest's row counts. Any failure fails the script. No privileges or sequences
//              check, no refusal of existing databases, no list of what a failure left behind.
//   ours       pg-backup restore --server --jobs JOBS (checksums, the statements of the globals
//              checked, existing roles kept, refusal when a database exists, row counts,
//              sequences and privileges — owners, grants, default privileges, RLS policies,
//              settings — checked per database)
//
// JOBS = BENCH_JOBS (default 2). PGB_BENCH_CLI is ours' launcher (default this tree's
// bin/pg-backup.js); PGB_BENCH_BEFORE_CLI, another tree's (e.g. an older commit's, with its
// dist/cli.js built), adds a fourth kind `before` to the rotation, for a before/after. Prints
// wall seconds per round and, for ours, the peak RSS (/usr/bin/time %M: the process tree's
// largest member), the CPU seconds of the command with its children (/usr/bin/time %U + %S) and
// of the target cluster (its postmaster's reaped backends and running children, /proc), and the
// connections the target served (pg_stat_database.sessions); then the medians, ours/hand and
// ours/hand-full. A benchmark, not a test.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { dumpRun } from '../test/infra/globals-fixture.ts';
import { startTcpCluster, type TcpCluster } from '../test/infra/tcp-cluster.ts';
import { serverCpu } from './harness.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SMALL = Number(process.env.BENCH_SMALL ?? 20);
const SCALE = Number(process.env.BENCH_SCALE ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const JOBS = Number(process.env.BENCH_JOBS ?? 2);
const BIN = '/usr/lib/postgresql/15/bin';
const CLI = process.env.PGB_BENCH_CLI ?? path.join(root, 'bin/pg-backup.js');
// The run is written to a file:// bucket with the test helpers' cli(), which passes S3
// credentials along from PGB_TEST_S3_*: unused here, so placeholders when no services are up.
for (const k of ['PGB_TEST_S3_ACCESS_KEY', 'PGB_TEST_S3_SECRET_KEY', 'PGB_TEST_S3_ENDPOINT']) process.env[k] ??= 'unused-file-bucket';
const BEFORE_CLI = process.env.PGB_BENCH_BEFORE_CLI;

async function sql(url: string, text: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (const s of text.split(/;\s*\n/).map((t) => t.trim()).filter(Boolean)) await c.query(s);
  } finally {
    await c.end();
  }
}

/** Wall seconds, peak RSS (KiB, the process tree's largest member) and CPU seconds (user + system of the command and every child it waited for). */
function timed(cmd: string, args: string[], env: Record<string, string> = {}): { seconds: number; rssKiB: number; cpu: number; ok: boolean; stderr: string } {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '%M %U %S', cmd, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - t0) / 1000;
  const lines = r.stderr.trim().split('\n');
  const [rss, user, sys] = lines.at(-1)!.split(' ').map(Number);
  return { seconds, rssKiB: rss!, cpu: user! + sys!, ok: r.status === 0, stderr: lines.slice(-4).join('\n') };
}

/** Connections the target's backends served so far (`pg_stat_database.sessions`, PostgreSQL 14+), read over one connection of its own. */
async function sessions(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return Number((await c.query<{ n: string }>('SELECT sum(sessions)::text AS n FROM pg_stat_database')).rows[0]!.n);
  } finally {
    await c.end();
  }
}

const source = await startTcpCluster();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'pgb-bench-server-'));
let target: TcpCluster | undefined;
try {
  const to = `file://${path.join(tmp, 'bucket')}`;
  await sql(source.adminUrl, `CREATE ROLE app_owner LOGIN PASSWORD 'pw';\nCREATE ROLE app_reader LOGIN PASSWORD 'pw'`);
  const dbs: string[] = [];
  for (let i = 1; i <= SMALL; i++) {
    const db = `small_${String(i).padStart(2, '0')}`;
    await sql(source.adminUrl, `CREATE DATABASE ${db} OWNER app_owner`);
    await sql(source.urlOf(db), `SET ROLE app_owner;\nCREATE TABLE items (id int PRIMARY KEY, name text);\nINSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g;\nGRANT SELECT ON items TO app_reader`);
    dbs.push(db);
  }
  await sql(source.adminUrl, 'CREATE DATABASE big OWNER app_owner');
  spawnSync(`${BIN}/pgbench`, ['-i', '-q', '-s', String(SCALE), source.urlOf('big')], { stdio: 'inherit' });
  dbs.push('big');
  console.log(`source: ${SMALL} small databases + pgbench scale ${SCALE}; dumping the run…`);
  const run = await dumpRun({ adminUrl: source.adminUrl, urlOf: source.urlOf, databases: dbs, to, service: 'bench', environment: 'prod' });
  // The hand script's inputs: the same objects, as a person would have them after `aws s3 cp --recursive`.
  const bucket = path.join(tmp, 'bucket');
  const objects = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? objects(path.join(dir, e.name)) : [path.join(dir, e.name)]));
  const files = objects(bucket).filter((f) => /\.(dump|sql)\.zst$/.test(f));
  const globalsFile = files.find((f) => f.includes('@globals'))!;
  const dumps = files.filter((f) => f !== globalsFile);
  const script = path.join(tmp, 'hand.sh');
  writeFileSync(script, `#!/bin/bash
set -euo pipefail
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
zstd -dq -c ${JSON.stringify(globalsFile)} > "$work/globals.sql"
psql -X -q -d "$1" -f "$work/globals.sql" >/dev/null 2>&1 || true
printf '%s\\n' ${dumps.map((d) => JSON.stringify(d)).join(' ')} | xargs -P ${JOBS} -I{} sh -c 'f="$2/$(basename "$1" .zst)"; zstd -dq -c "$1" > "$f" && ${BIN}/pg_restore --create --exit-on-error -d "$0" "$f" && rm "$f"' "$1" {} "$work"
`, { mode: 0o755 });
  // hand-full's proof, read from the manifests before the clock starts (what a person gets from jq).
  const proof = path.join(tmp, 'proof');
  mkdirSync(proof);
  const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;
  for (const f of files) {
    const m = JSON.parse(readFileSync(f.replace(/\.(dump|sql)\.zst$/, '.manifest.json'), 'utf8')) as { object: { sha256: string }; database: string; tables?: { schema: string; table: string; rows: number }[] };
    const base = path.join(proof, path.basename(f));
    writeFileSync(`${base}.sha256`, `${m.object.sha256}  ${f}\n`);
    if (f === globalsFile) continue;
    writeFileSync(`${base}.db`, m.database);
    writeFileSync(`${base}.count.sql`, (m.tables ?? []).map((t) => `SELECT count(*) FROM ${ident(t.schema)}.${ident(t.table)};\n`).join(''));
    writeFileSync(`${base}.expected`, (m.tables ?? []).map((t) => `${t.rows}\n`).join(''));
  }
  const fullScript = path.join(tmp, 'hand-full.sh');
  writeFileSync(fullScript, `#!/bin/bash
set -euo pipefail
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
sha256sum -c --quiet --status ${JSON.stringify(path.join(proof, `${path.basename(globalsFile)}.sha256`))}
zstd -dq -c ${JSON.stringify(globalsFile)} > "$work/globals.sql"
psql -X -q -d "$1" -f "$work/globals.sql" >/dev/null 2>&1 || true
printf '%s\\n' ${dumps.map((d) => JSON.stringify(d)).join(' ')} | xargs -P ${JOBS} -I{} sh -c 'p="$3/$(basename "$1")"; f="$2/$(basename "$1" .zst)"; sha256sum -c --quiet --status "$p.sha256" && zstd -dq -c "$1" > "$f" && ${BIN}/pg_restore --create --exit-on-error -d "$0" "$f" && rm "$f" && psql -X -q -At -v ON_ERROR_STOP=1 -d "$(cat "$p.db")" -f "$p.count.sql" | cmp -s - "$p.expected"' "$1" {} "$work" ${JSON.stringify(proof)}
`, { mode: 0o755 });
  const kinds = ['hand', 'hand-full', 'ours', ...(BEFORE_CLI ? (['before'] as const) : [])] as const;
  const results: Record<(typeof kinds)[number], number[]> = { hand: [], 'hand-full': [], ours: [], before: [] };
  const clientCpu: Record<(typeof kinds)[number], number[]> = { hand: [], 'hand-full': [], ours: [], before: [] };
  const targetCpu: Record<(typeof kinds)[number], number[]> = { hand: [], 'hand-full': [], ours: [], before: [] };
  const conns: Record<(typeof kinds)[number], number[]> = { hand: [], 'hand-full': [], ours: [], before: [] };
  let rss = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    for (let i = 0; i < kinds.length; i++) {
      const who = kinds[(i + round - 1) % kinds.length]!;
      target = await startTcpCluster();
      // hand-full's psql reaches each new database by name: the target's socket and port in its environment.
      const env = { PGHOST: path.join(target.dir, 's'), PGPORT: String(target.port), PGUSER: 'postgres' };
      const data = path.join(target.dir, 'data');
      const [cpu0, sessions0] = [serverCpu(data), await sessions(target.adminUrl)];
      const r =
        who === 'hand'
          ? timed('bash', [script, target.adminUrl])
          : who === 'hand-full'
            ? timed('bash', [fullScript, target.adminUrl], env)
            : // As `npx pg-backup` runs it: the program itself, its shebang line finding the project's Node 24 first on the PATH (as bench.ts runs it).
              timed(who === 'before' ? BEFORE_CLI! : CLI, ['restore', '--server', '--from', to, '--service', 'bench', '--environment', 'prod', '--backup', run.runId, '--target-url', target.adminUrl, '--jobs', String(JOBS)], { PATH: `${path.join(root, 'node_modules/.bin')}:${process.env.PATH}` });
      if (!r.ok) throw new Error(`${who} failed: ${r.stderr}`);
      const server = serverCpu(data) - cpu0;
      const connections = (await sessions(target.adminUrl)) - sessions0 - 1; // less the first reading's own
      results[who].push(r.seconds);
      clientCpu[who].push(r.cpu);
      targetCpu[who].push(server);
      conns[who].push(connections);
      if (who === 'ours') rss = Math.max(rss, r.rssKiB);
      console.log(`round ${round} ${who.padEnd(9)} ${r.seconds.toFixed(2)} s, CPU client ${r.cpu.toFixed(2)} s + server ${server.toFixed(2)} s, ${connections} connections${who === 'ours' || who === 'before' ? `, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB` : ''}`);
      await target.stop();
      target = undefined;
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const [hand, full, ours] = [median(results.hand), median(results['hand-full']), median(results.ours)];
  console.log(`median: hand ${hand.toFixed(2)} s, hand-full ${full.toFixed(2)} s, ours ${ours.toFixed(2)} s; ours/hand ${(ours / hand).toFixed(2)}×, ours/hand-full ${(ours / full).toFixed(2)}×; ours peak RSS ${(rss / 1024).toFixed(0)} MiB; jobs ${JOBS}, ${SMALL} small databases + pgbench scale ${SCALE}, ${ROUNDS} rounds; ours = ${CLI}`);
  for (const k of kinds) console.log(`${k.padEnd(9)} medians: wall ${median(results[k]).toFixed(2)} s, CPU client ${median(clientCpu[k]).toFixed(2)} s + server ${median(targetCpu[k]).toFixed(2)} s, ${median(conns[k])} connections`);
  if (BEFORE_CLI) {
    const before = median(results.before);
    console.log(`before: ${before.toFixed(2)} s, before/hand ${(before / hand).toFixed(2)}×, before/hand-full ${(before / full).toFixed(2)}×, ours/before ${(ours / before).toFixed(2)}×; before = ${BEFORE_CLI}`);
  }
} finally {
  await target?.stop();
  await source.stop();
  rmSync(tmp, { recursive: true, force: true });
}
