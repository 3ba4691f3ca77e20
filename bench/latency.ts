// Benchmark of a dump to a distant store (`npm run bench -- latency`): every byte between the
// pipeline and Ceph RGW goes through a TCP proxy on loopback that delays it by BENCH_DELAY_MS
// (default 25) in each direction, so a round trip costs twice that, as to a bucket in another
// region. No bandwidth limit, no loss and no TCP slow start on the real links (both legs are
// loopback): the figures show what round trips cost, a lower bound of what a real distance
// adds. Over HTTPS by default (RGW's TLS port, through the same proxy; BENCH_TLS=0 for HTTP).
// Alternating rounds of
//
//   hand    pg_dump -Fc -Z0 DB | zstd -3 -T0 | rclone -q rcat     (rclone: keep-alive, no 100-continue)
//   ours    pg-backup dump                                         (zstd:3, manifest, row counts)
//   before  the same, from another tree (PGB_BENCH_BEFORE_CLI=<tree>/bin/pg-backup.js), e.g. an
//           older commit's
//
// on a database of pgbench scale 10 plus 1 M rows of hex text (~300 MB, ~70 MB compressed:
// BENCH_SCALE multiplies both). Prints each run, the medians, ours/hand (and ours/before) and
// how many connections each pipeline opened through the proxy. A benchmark, not a test.
//   BENCH_ROUNDS=3, BENCH_DELAY_MS=25, BENCH_TLS=0|1, BENCH_SCALE=1, PGB_BENCH_BEFORE_CLI.
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { q, storeEnv, timePipeline, trustCa, type Run } from './harness.ts';
import { writeCliBundle } from '../scripts/build.ts';
import { startServices } from '../test/infra/services.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const delayMs = Number(process.env.BENCH_DELAY_MS ?? 25);
const tls = process.env.BENCH_TLS !== '0';
const scale = Number(process.env.BENCH_SCALE ?? 1);
const before = process.env.PGB_BENCH_BEFORE_CLI;
const bin = spawnSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim();

/**
 * A TCP proxy on loopback in front of `upstreamPort` that delays every chunk by `delay` ms in
 * each direction, in order (no bandwidth limit). Counts the connections it accepted.
 */
async function startDelayProxy(upstreamPort: number, delay: number): Promise<{ port: number; connections: () => number; close: () => void }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
      sockets.add(from);
      from.on('data', (chunk) => setTimeout(() => void (to.destroyed || to.write(chunk)), delay));
      from.on('end', () => setTimeout(() => to.end(), delay));
      from.on('error', () => to.destroy());
      from.on('close', () => {
        sockets.delete(from);
        setTimeout(() => to.destroy(), delay + 5);
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

console.log(await writeCliBundle());
const services = await startServices({ bucket: 'bench' });
let proxy: Awaited<ReturnType<typeof startDelayProxy>> | undefined; // set below; the exit handler may run first
process.on('exit', () => {
  proxy?.close();
  if (!process.env.BENCH_KEEP) services.stop();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
const admin = services.env.PGB_TEST_PG_URL!;
const dbUrl = admin.replace(/\/postgres$/, '/bench');
const upstream = new URL(tls ? services.env.PGB_TEST_S3_TLS_ENDPOINT! : services.env.PGB_TEST_S3_ENDPOINT!);
proxy = await startDelayProxy(Number(upstream.port), delayMs);
const { port: proxyPort, connections } = proxy;
const endpoint = `${upstream.protocol}//127.0.0.1:${proxyPort}`;
const ca = services.env.PGB_TEST_S3_CA_FILE!;
const trust = tls ? trustCa(ca) : {};
const env = { ...storeEnv(endpoint), ...trust };
// Clean-up between runs goes to the store directly, not through the proxy.
const directEnv = { ...storeEnv(upstream.origin), ...trust };

console.log(`creating the database (pgbench scale ${Math.round(10 * scale)} + ${Math.round(1_000_000 * scale)} rows of text) …`);
await q(admin, 'CREATE DATABASE bench');
if (spawnSync(path.join(bin, 'pgbench'), ['-i', '-q', '-s', String(Math.max(1, Math.round(10 * scale))), dbUrl], { env, stdio: 'ignore' }).status !== 0) throw new Error('pgbench -i failed');
await q(dbUrl, `CREATE TABLE notes AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body FROM generate_series(1, ${Math.round(1_000_000 * scale)}) g`);
await q(dbUrl, 'VACUUM ANALYZE');
const size = Number((await q(admin, "SELECT pg_database_size('bench')::text AS s"))[0]!.s);
console.log(`database ready: ${(size / 1e6).toFixed(0)} MB; store at ${endpoint} (${tls ? 'HTTPS' : 'HTTP'}), ${delayMs} ms added each way`);

const cli = (launcher: string, i: number, name: string) => `PATH=${path.join(root, 'node_modules/.bin')}:"$PATH" ${launcher} dump --no-globals --database-url '${dbUrl}' --to s3://bench/${name}/${i} --quiet`;
const pipelines = [
  { name: 'hand', command: (i: number) => `${bin}/pg_dump -Fc -Z0 '${dbUrl}' | zstd -3 -T0 -q | rclone -q rcat s3:bench/hand/${i}.dump.zst` },
  { name: 'ours', command: (i: number) => cli(path.join(root, 'bin/pg-backup.js'), i, 'ours') },
  ...(before ? [{ name: 'before', command: (i: number) => cli(before, i, 'before') }] : []),
];
const results = new Map<string, { run: Run; connections: number }[]>(pipelines.map((p) => [p.name, []]));
for (let i = 0; i < rounds; i++) {
  // The order rotates each round, so that none always runs first.
  for (const p of pipelines.map((_, k) => pipelines[(k + i) % pipelines.length]!)) {
    const c0 = connections();
    const run = await timePipeline(`latency ${p.name}`, p.command(i), { env, cwd: root });
    const opened = connections() - c0;
    spawnSync('rclone', ['-q', 'purge', `s3:bench/${p.name}`], { env: directEnv, timeout: 120_000 });
    results.get(p.name)!.push({ run, connections: opened });
    console.log(`latency round ${i + 1} ${p.name.padEnd(6)} ${run.seconds.toFixed(2)} s, ${run.cpuSeconds.toFixed(2)} CPU-s, ${opened} connections`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const m = (name: string) => median(results.get(name)!.map((r) => r.run.seconds));
console.log('');
console.log(`latency: a ${(size / 1e6).toFixed(0)} MB database dumped over ${tls ? 'HTTPS' : 'HTTP'} with ${2 * delayMs} ms round trips, ${rounds} rounds, medians:`);
for (const [name, rs] of results) console.log(`  ${name.padEnd(6)} ${m(name).toFixed(2)} s, ${median(rs.map((r) => r.run.cpuSeconds)).toFixed(2)} CPU-s, ${median(rs.map((r) => r.connections))} connections`);
console.log(`  ours/hand = ${(m('ours') / m('hand')).toFixed(2)}${before ? `, ours/before = ${(m('ours') / m('before')).toFixed(2)}` : ''}`);
process.exit(0);
