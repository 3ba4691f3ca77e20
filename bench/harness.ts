// What every bench script shares: timing a shell pipeline under /usr/bin/time, with our Node
// process's peak RSS read from the file test/infra/report-rss.js writes.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';

/** One timed run of a pipeline. */
export interface Run {
  /** Wall seconds. */
  seconds: number;
  /** user + sys CPU of the pipeline's processes (not the PostgreSQL server or RGW). */
  cpuSeconds: number;
  /** Peak RSS of our Node process, KiB (ours only). */
  rssKiB?: number;
  /** Peak bytes of files under the work dir while it ran (bench.ts's drills only). */
  diskBytes?: number;
  stdout: string;
}

/**
 * Runs `command` with `bash -o pipefail -c` under /usr/bin/time in `cwd` with `env`. With
 * `rssFile`, that file is emptied first and its largest line (KiB, written by
 * test/infra/report-rss.js in our process) is the run's peak RSS.
 * @throws Error naming `label`, the exit code and the end of stderr when the pipeline fails.
 */
export function timePipeline(label: string, command: string, o: { env: NodeJS.ProcessEnv; cwd: string; rssFile?: string }): Promise<Run> {
  if (o.rssFile) writeFileSync(o.rssFile, '');
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', 'CPU_S=%U+%S', 'bash', '-o', 'pipefail', '-c', command], { env: o.env, cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${label} failed (${code}): ${stderr.slice(-800)}`));
      const cpu = /CPU_S=([\d.]+)\+([\d.]+)/.exec(stderr);
      const rss = o.rssFile ? Math.max(0, ...readFileSync(o.rssFile, 'utf8').split('\n').filter(Boolean).map(Number)) : undefined;
      resolve({ seconds, cpuSeconds: cpu ? Number(cpu[1]) + Number(cpu[2]) : NaN, rssKiB: rss, stdout });
    });
  });
}

/** Runs `sql` (one or several statements) on `url` and returns the rows of the last one. */
export async function q(url: string, sql: string): Promise<pg.QueryResultRow[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query(sql);
    return Array.isArray(r) ? (r.at(-1)?.rows ?? []) : r.rows;
  } finally {
    await c.end();
  }
}

/**
 * The environment of a bench's pipelines against the test services' RGW at `endpoint`: the AWS
 * variables (for ours and the aws CLI), rclone's remote `s3:` (no config file) and the test
 * server's password. AWS_CA_BUNDLE (set on some machines for HTTPS proxies) is dropped: it makes
 * rclone refuse to start with a plain-HTTP endpoint, and nothing here speaks TLS.
 */
export function storeEnv(endpoint: string): NodeJS.ProcessEnv {
  const { AWS_CA_BUNDLE: _caBundle, ...inherited } = process.env;
  return {
    ...inherited,
    AWS_ACCESS_KEY_ID: 'BACKUPKEY',
    AWS_SECRET_ACCESS_KEY: 'BACKUPSECRET',
    AWS_ENDPOINT_URL_S3: endpoint,
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_REGION: 'us-east-1',
    AWS_REQUEST_CHECKSUM_CALCULATION: 'when_required',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'when_required',
    PGPASSWORD: 'pgtestpw',
    RCLONE_CONFIG_S3_TYPE: 's3',
    RCLONE_CONFIG_S3_PROVIDER: 'Ceph',
    RCLONE_CONFIG_S3_ENDPOINT: endpoint,
    RCLONE_CONFIG_S3_ACCESS_KEY_ID: 'BACKUPKEY',
    RCLONE_CONFIG_S3_SECRET_ACCESS_KEY: 'BACKUPSECRET',
    RCLONE_CONFIG_S3_REGION: 'us-east-1',
  };
}

/** The variables that make ours (Node) and rclone trust `caFile`, the store's self-signed certificate. */
export function trustCa(caFile: string): NodeJS.ProcessEnv {
  return { NODE_EXTRA_CA_CERTS: caFile, RCLONE_CA_CERT: caFile };
}

/** How a bench reaches the test services' store: BENCH_TLS=1 picks RGW's HTTPS port, else plain HTTP. */
export interface StoreTransport {
  tls: boolean;
  endpoint: string;
  /** {@link storeEnv}, and over HTTPS the store's self-signed certificate for Node (ours) and rclone. */
  env: NodeJS.ProcessEnv;
  /** Arguments that make the AWS CLI trust that certificate (empty over HTTP). AWS_CA_BUNDLE would make rclone refuse to start. */
  awsCliArgs: string;
}

/**
 * The store over HTTPS (BENCH_TLS=1: RGW's TLS port, its self-signed certificate trusted by every
 * pipeline, as hosted S3 is reached) or over plain HTTP on loopback (the default).
 */
export function storeTransport(services: Record<string, string | undefined>): StoreTransport {
  const tls = process.env.BENCH_TLS === '1';
  const endpoint = tls ? services.PGB_TEST_S3_TLS_ENDPOINT! : services.PGB_TEST_S3_ENDPOINT!;
  const ca = services.PGB_TEST_S3_CA_FILE!;
  return {
    tls,
    endpoint,
    env: { ...storeEnv(endpoint), ...(tls ? trustCa(ca) : {}) },
    awsCliArgs: tls ? `--ca-bundle '${ca}'` : '',
  };
}

const TICKS = 100; // USER_HZ, /proc's clock ticks per second on Linux

/** /proc/PID/stat's fields from field 3 (state) on: [11] utime, [12] stime, [13] cutime, [14] cstime, in ticks. Source: proc(5). */
function statFields(pid: number | string): string[] {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
}

/**
 * CPU seconds a PostgreSQL cluster spent so far: its postmaster's own and its reaped children's
 * (every backend that ended: `utime + stime + cutime + cstime`, /proc/PID/stat fields 14–17)
 * plus the children still running (checkpointer, walwriter, autovacuum…). Source: proc(5).
 */
export function serverCpu(dataDir: string): number {
  const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const f = statFields(pid);
  let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const c = statFields(e);
      if (Number(c[1]) === pid) ticks += Number(c[11]) + Number(c[12]);
    } catch {
      // ended meanwhile
    }
  }
  return ticks / TICKS;
}

/**
 * CPU seconds the test services' object store spent so far: every daemon whose pid file is in
 * `runDir` (test/infra/rgw-up.sh's run directory: the Ceph monitor, the OSD and radosgw), their
 * own `utime + stime` (they are long-lived; threads are counted in their process).
 */
export function storeCpu(runDir: string): number {
  let ticks = 0;
  for (const f of readdirSync(runDir).filter((n) => n.endsWith('.pid'))) {
    try {
      const s = statFields(Number(readFileSync(path.join(runDir, f), 'utf8')));
      ticks += Number(s[11]) + Number(s[12]);
    } catch {
      // not running
    }
  }
  return ticks / TICKS;
}
