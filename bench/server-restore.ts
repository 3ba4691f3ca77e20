// Benchmark of `pg-backup restore --server` against the hand script a strong engineer would
// write for the same run (`npm run bench -- server-restore` or `node bench/server-restore.ts`, as root: the clusters run as the OS
// user postgres). A source PostgreSQL 15 of its own gets roles with grants, BENCH_SMALL small
// databases (default 20) and one pgbench database of scale BENCH_SCALE (default 20, ~300 MB);
// one run with globals is written into a file:// bucket (test/infra/globals-fixture.ts); then,
// in alternating rounds (BENCH_ROUNDS, default 2), each into a fresh empty target cluster:
//
//   hand   zstd -dq each object (globals, then every database: xargs -P JOBS); psql -X -f
//          globals.sql (errors ignored: roles that exist); pg_restore --create -d postgres per
//          database, JOBS at once (xargs -P); no checksum, no checks
//   ours   pg-backup restore --server --jobs JOBS (checksums, the statements of the globals
//          checked, existing roles kept, row counts and privileges checked per database)
//
// JOBS = BENCH_JOBS (default 2). Prints wall seconds per round and, for ours, the peak RSS of
// the Node process (/usr/bin/time %M covers the process tree's largest member). A benchmark, not a test.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { dumpRun } from '../test/infra/globals-fixture.ts';
import { startTcpCluster, type TcpCluster } from '../test/infra/tcp-cluster.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SMALL = Number(process.env.BENCH_SMALL ?? 20);
const SCALE = Number(process.env.BENCH_SCALE ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const JOBS = Number(process.env.BENCH_JOBS ?? 2);
const BIN = '/usr/lib/postgresql/15/bin';

async function sql(url: string, text: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (const s of text.split(/;\s*\n/).map((t) => t.trim()).filter(Boolean)) await c.query(s);
  } finally {
    await c.end();
  }
}

function timed(cmd: string, args: string[], env: Record<string, string> = {}): { seconds: number; rssKiB: number; ok: boolean; stderr: string } {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - t0) / 1000;
  const lines = r.stderr.trim().split('\n');
  return { seconds, rssKiB: Number(lines.at(-1)), ok: r.status === 0, stderr: lines.slice(-4).join('\n') };
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
  const results: Record<string, number[]> = { hand: [], ours: [] };
  let rss = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    for (const who of round % 2 ? (['hand', 'ours'] as const) : (['ours', 'hand'] as const)) {
      target = await startTcpCluster();
      const r =
        who === 'hand'
          ? timed('bash', [script, target.adminUrl])
          : timed(path.join(root, 'node_modules/.bin/node'), [path.join(root, 'bin/pg-backup.js'), 'restore', '--server', '--from', to, '--service', 'bench', '--environment', 'prod', '--backup', run.runId, '--target-url', target.adminUrl, '--jobs', String(JOBS)]);
      if (!r.ok) throw new Error(`${who} failed: ${r.stderr}`);
      results[who]!.push(r.seconds);
      if (who === 'ours') rss = Math.max(rss, r.rssKiB);
      console.log(`round ${round} ${who.padEnd(4)} ${r.seconds.toFixed(2)} s${who === 'ours' ? `, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MiB` : ''}`);
      await target.stop();
      target = undefined;
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`median: hand ${median(results.hand!).toFixed(2)} s, ours ${median(results.ours!).toFixed(2)} s (${(median(results.ours!) / median(results.hand!)).toFixed(2)}×), ours peak RSS ${(rss / 1024).toFixed(0)} MiB, jobs ${JOBS}`);
} finally {
  await target?.stop();
  await source.stop();
  rmSync(tmp, { recursive: true, force: true });
}
