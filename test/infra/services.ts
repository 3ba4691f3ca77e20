// Starts and stops the real services the tests and the benchmark run against: a throwaway
// PostgreSQL cluster (Debian's postgresql package) and a single-node Ceph RGW S3 server
// (Debian's ceph packages, in-memory object store), both on loopback, under one temp dir.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface Services {
  work: string;
  /** Variables the tests read (PGB_TEST_*). */
  env: Record<string, string>;
  stop(keepFiles?: boolean): void;
}

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

/** Kills the processes whose pid files are in `dir` (the Ceph daemons); returns their pids. */
function killPidFiles(dir: string): number[] {
  const pids: number[] = [];
  try {
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.pid'))) {
      try {
        const pid = Number(readFileSync(path.join(dir, f), 'utf8'));
        process.kill(pid, 'SIGKILL');
        pids.push(pid);
      } catch {
        /* gone */
      }
    }
  } catch {
    /* never started */
  }
  return pids;
}

/**
 * Waits (synchronously: this runs in exit handlers) until `pids` have exited, at most `ms`.
 * Removing the work dir while a daemon still writes its log or data leaves the dir behind.
 */
function waitGone(pids: number[], ms: number): void {
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + ms;
  while (pids.some(alive) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
}

function sh(script: string, env: Record<string, string>): void {
  const r = spawnSync('bash', [path.join(root, script)], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`${script} failed (exit ${r.status}): the services could not start`);
}

/**
 * Starts PostgreSQL and Ceph RGW, creates `bucket`, and returns the variables to reach them.
 * @throws Error when either cannot start (nothing is skipped).
 */
export async function startServices(options: { bucket?: string; memstoreBytes?: number } = {}): Promise<Services> {
  const work = mkdtempSync(path.join(os.tmpdir(), 'pgb-test-'));
  chmodSync(work, 0o755); // the postgres OS user must reach its cluster directory
  const rgwDir = path.join(work, 'rgw');
  const pgDir = path.join(work, 'pg');
  const stop = (keepFiles = false) => {
    const pids = killPidFiles(path.join(rgwDir, 'run'));
    try {
      const postmaster = Number(readFileSync(path.join(pgDir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(postmaster, 'SIGQUIT');
      pids.push(postmaster);
    } catch {
      /* never started */
    }
    if (keepFiles) return;
    waitGone(pids, 10_000);
    rmSync(work, { recursive: true, force: true, maxRetries: 3 });
  };
  // A signal while the services start (Ctrl-C, a cancelled CI job) must not leave daemons behind:
  // stop what has started, then exit. The caller installs its own handlers once this returns.
  const onSignal = () => {
    stop();
    process.exit(130);
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, onSignal);
  try {
    const pgPort = await freePort();
    let rgwPort = await freePort();
    let rgwSslPort = await freePort();
    while (rgwSslPort === rgwPort) rgwSslPort = await freePort();
    console.log(`starting PostgreSQL on 127.0.0.1:${pgPort} and Ceph RGW under ${work}`);
    sh('test/infra/pg-up.sh', { D: pgDir, PG_PORT: String(pgPort) });
    // A single-node Ceph cluster occasionally fails its first start (the monitor not yet
    // answering); one retry on fresh ports, after stopping what the first attempt left.
    for (let attempt = 1; ; attempt++) {
      try {
        sh('test/infra/rgw-up.sh', { D: rgwDir, RGW_PORT: String(rgwPort), RGW_SSL_PORT: String(rgwSslPort), MON_PORT: String(await freePort()), MEMSTORE_BYTES: String(options.memstoreBytes ?? 6 * 1024 ** 3) });
        break;
      } catch (err) {
        if (attempt >= 2) throw err;
        console.log('Ceph RGW did not start; retrying once');
        killPidFiles(path.join(rgwDir, 'run'));
        rgwPort = await freePort();
        rgwSslPort = await freePort();
        while (rgwSslPort === rgwPort) rgwSslPort = await freePort();
      }
    }
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    const bucket = options.bucket ?? 'pgb-test';
    const s3 = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'BACKUPKEY', secretAccessKey: 'BACKUPSECRET' } });
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    s3.destroy();
    const env = {
      PGB_TEST_S3_ENDPOINT: endpoint,
      PGB_TEST_S3_BUCKET: bucket,
      PGB_TEST_S3_ACCESS_KEY: 'BACKUPKEY',
      PGB_TEST_S3_SECRET_KEY: 'BACKUPSECRET',
      PGB_TEST_PG_URL: `postgresql://postgres:pgtestpw@127.0.0.1:${pgPort}/postgres`,
      PGB_TEST_RGW_CONF: path.join(rgwDir, 'ceph.conf'),
      // The same RGW over TLS (self-signed; the certificate is its own CA file), for clients that
      // speak S3 over TLS only, such as pgBackRest.
      PGB_TEST_S3_TLS_ENDPOINT: `https://127.0.0.1:${rgwSslPort}`,
      PGB_TEST_S3_CA_FILE: path.join(rgwDir, 'tls', 'rgw.crt'),
    };
    return { work, env, stop };
  } catch (err) {
    stop();
    throw err;
  } finally {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.off(sig, onSignal);
  }
}
