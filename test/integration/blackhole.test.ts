import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startFaultProxy } from '../infra/fault-proxy.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, root, s3Env, s3Keys, s3Location } from '../helpers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

// An S3 endpoint that accepts TCP connections, reads what it is sent and never answers: a
// half-dead proxy, a firewall that black-holes. Every command must fail on its own in bounded
// time with one line naming the endpoint (the S3 limits come from PG_BACKUP_S3_*; here short,
// so the suite stays fast: the defaults are checked in test/unit/s3-timeouts.test.ts), and end
// within seconds on SIGTERM.

interface Blackhole {
  endpoint: string;
  /** Bytes received so far (requests that were sent and never answered). */
  received(): number;
  close(): Promise<void>;
}

async function startBlackhole(): Promise<Blackhole> {
  const sockets = new Set<net.Socket>();
  let received = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (d: Buffer) => (received += d.length));
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    received: () => received,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Short S3 limits: each request gives up after 1 s, tried twice. */
const SHORT = { PG_BACKUP_S3_CONNECT_TIMEOUT: '1s', PG_BACKUP_S3_FIRST_BYTE_TIMEOUT: '1s', PG_BACKUP_S3_IDLE_TIMEOUT: '1s', PG_BACKUP_S3_READ_IDLE_TIMEOUT: '1s', PG_BACKUP_S3_MAX_ATTEMPTS: '2' };

/** Each command's arguments against `from`, and what its first request is. */
const COMMANDS = [
  { name: 'list', args: (from: string) => ['list', '--from', from], action: 'list', timeout: { faultId: 'net-blackhole-list' }, sigterm: { faultId: 'signal-blackhole-list' } },
  { name: 'verify', args: (from: string) => ['verify', '--from', from], action: 'list', timeout: { faultId: 'net-blackhole-verify' }, sigterm: { faultId: 'signal-blackhole-verify' } },
  { name: 'prune', args: (from: string) => ['prune', '--from', from, '--keep-last', '1', '--apply'], action: 'list', timeout: { faultId: 'net-blackhole-prune' }, sigterm: { faultId: 'signal-blackhole-prune' } },
  { name: 'drill', args: (from: string) => ['drill', '--from', from], action: 'list', timeout: { faultId: 'net-blackhole-drill' }, sigterm: { faultId: 'signal-blackhole-drill' } },
  { name: 'dump', args: (to: string) => ['dump', '--to', to], action: 'write', timeout: { faultId: 'net-blackhole-dump' }, sigterm: { faultId: 'signal-blackhole-dump' } },
];
/** The dump of a database over one 5 MiB part once compressed: its first request is CreateMultipartUpload. */
const DUMP_MULTIPART = { name: 'dump-multipart', args: (to: string) => ['dump', '--to', to], action: 'write', sigterm: { faultId: 'signal-blackhole-dump-multipart' } };

/**
 * Runs the CLI against `endpoint`; once the endpoint has received a request (`ready`), waits
 * `afterMs` and sends SIGTERM. Resolves with the exit code, stderr and the ms from the signal to the exit.
 */
function terminateWhen(args: string[], env: Record<string, string>, ready: (stderr: string) => boolean, afterMs: number): Promise<{ code: number | null; stderr: string; exitAfterSignalMs: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), ...args], { env: { ...process.env, ...s3Env(), DATABASE_URL: undefined, ...env } as NodeJS.ProcessEnv });
    let stderr = '';
    let signalledAt = 0;
    child.stderr.on('data', (d) => (stderr += d));
    const poll = setInterval(() => {
      if (signalledAt || !ready(stderr)) return;
      clearInterval(poll);
      setTimeout(() => {
        signalledAt = Date.now();
        child.kill('SIGTERM');
      }, afterMs);
    }, 50);
    child.on('close', (code) => {
      clearInterval(poll);
      resolve({ code, stderr, exitAfterSignalMs: signalledAt ? Date.now() - signalledAt : -1 });
    });
  });
}

describe('an S3 endpoint that accepts connections and never answers', () => {
  for (const c of COMMANDS) {
    it(`${c.name} fails on its own with one line naming the endpoint, exit 2 (nothing was ever answered)`, { timeout: 90_000 }, async () => {
      const hole = await startBlackhole();
      try {
        const location = `s3://${need('PGB_TEST_S3_BUCKET')}/blackhole`;
        const db = c.name === 'dump' ? await createDatabase('bhdump') : undefined;
        const { mark, env } = leftoverMark();
        const started = Date.now();
        const r = await cli([...c.args(location), '--endpoint', hole.endpoint], { ...SHORT, ...env, ...(db ? { DATABASE_URL: dbUrl(db) } : {}) });
        const durationMs = Date.now() - started;
        assert.equal(r.code, 2, r.stderr);
        assert.ok(hole.received() > 0, 'the request reached the endpoint');
        const line = lastLine(r.stderr);
        const endpoint = hole.endpoint.replace(/\./g, '\\.');
        assert.match(line, new RegExp(`^pg-backup: the S3 endpoint ${endpoint} (did not start answering within 1 s|went silent \\(no byte for 1 s\\)) on ${c.action} of s3://\\S+ \\(2 attempts\\); it never answered: check AWS_ENDPOINT_URL_S3`));
        // Two attempts of about 1 s each, plus start-up (and, for the dump, pg_dump): far below
        // what the default limits allow (about 1.5 min), and nowhere near a hang.
        assert.ok(durationMs < 30_000, `took ${durationMs} ms`);
        assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
        await recordFault({
          faultId: c.timeout.faultId,
          fault: `\`${c.name}\` against an S3 endpoint that accepts connections and never answers (limits 1 s, 2 attempts)`,
          outcome: 'fails on its own in bounded time, one line naming the endpoint and what did not answer',
          exit: r.code,
          left: c.name === 'dump' ? 'nothing reached a store; no pg_dump or zstd process' : 'nothing (the endpoint stores nothing)',
          file: import.meta.url,
          message: line,
          durationMs,
        });
      } finally {
        await hole.close();
      }
    });
  }

  for (const c of [...COMMANDS, DUMP_MULTIPART]) {
    it(`${c.name} with the default limits ends within seconds of SIGTERM, exit 143`, { timeout: 90_000 }, async () => {
      const hole = await startBlackhole();
      try {
        const location = `s3://${need('PGB_TEST_S3_BUCKET')}/blackhole`;
        let db: string | undefined;
        if (c.name.startsWith('dump')) {
          db = await createDatabase('bhsig', false);
          await addBigTable(db, c.name === 'dump-multipart' ? 12 : 0.01);
        }
        const { mark, env } = leftoverMark();
        // The dump's first request is its write check (before any "dumping" line): signalled while it waits.
        const ready = () => hole.received() > 0;
        const r = await terminateWhen([...c.args(location), '--endpoint', hole.endpoint], { ...env, ...(db ? { DATABASE_URL: dbUrl(db) } : {}) }, ready, 300);
        assert.equal(r.code, 143, r.stderr);
        assert.match(r.stderr, /received SIGTERM: cancelling and cleaning up/);
        // Without the signal the request would wait 20 s (first byte) × 4 attempts.
        assert.ok(r.exitAfterSignalMs >= 0 && r.exitAfterSignalMs < 8_000, `exited ${r.exitAfterSignalMs} ms after SIGTERM`);
        assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
        // The dump is stopped at its write check: nothing was dumped (pg_dump never started).
        if (c.name === 'dump') assert.doesNotMatch(r.stderr, /dumping|stored/, r.stderr);
        await recordFault({
          faultId: c.sigterm.faultId,
          fault: `SIGTERM to \`${c.name === 'dump-multipart' ? 'dump' : c.name}\` while its first S3 request${c.name.startsWith('dump') ? ' (the write check\'s CreateMultipartUpload, before pg_dump starts)' : ''} waits on an endpoint that never answers (default limits)`,
          outcome: `the request in flight is aborted and the command exits within seconds${c.name === 'dump' ? '; nothing was dumped' : ''}`,
          exit: r.code ?? 'killed',
          left: c.name.startsWith('dump') ? 'no pg_dump or zstd process' : 'nothing',
          file: import.meta.url,
          message: lastLine(r.stderr),
          durationMs: r.exitAfterSignalMs,
        });
      } finally {
        await hole.close();
      }
    });
  }

  it('an endpoint that answered, then goes silent mid-upload: exit 1 naming it, the multipart upload aborted', { timeout: 120_000 }, async () => {
    const db = await createDatabase('bhsilent', false);
    await addBigTable(db, 20);
    const to = s3Location('bhsilent');
    // Each connection that has carried 256 KB towards RGW goes silent (parts hang); small
    // requests on fresh connections (create, abort) still pass. No stall watchdog: the S3
    // client's idle limit alone must end it.
    const proxy = await startFaultProxy(need('PGB_TEST_S3_ENDPOINT'), { stallAfterBytes: 256 * 1024 });
    try {
      const { mark, env } = leftoverMark();
      const started = Date.now();
      const r = await cli(['dump', '--to', to, '--stall-timeout', '0s'], { DATABASE_URL: dbUrl(db), AWS_ENDPOINT_URL_S3: proxy.endpoint, PG_BACKUP_S3_IDLE_TIMEOUT: '2s', PG_BACKUP_S3_MAX_ATTEMPTS: '2', ...env });
      const durationMs = Date.now() - started;
      assert.ok(proxy.stats.stalls > 0, 'connections were stalled');
      assert.equal(r.code, 1, r.stderr);
      const endpoint = proxy.endpoint.replace(/\./g, '\\.');
      assert.match(lastLine(r.stderr), new RegExp(`^pg-backup: the S3 endpoint ${endpoint} went silent \\(no byte for 2 s\\) on write of s3://\\S+ \\(2 attempts\\): it answered earlier in this run and then stopped`));
      assert.ok(durationMs < 60_000, `took ${durationMs} ms`);
      assert.deepEqual(await s3Keys(to), [], 'no object and no manifest');
      assert.deepEqual(await openMultipartUploads(to), [], 'the multipart upload is aborted');
      assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
      await recordFault({ faultId: 'net-silent-after-answers', fault: 'S3 connections go silent mid-part after the endpoint answered (idle limit 2 s, 2 attempts, `--stall-timeout 0s`)', outcome: 'the S3 idle limit fails the parts; the multipart upload is aborted', exit: r.code, left: `${await leftBehind(to)}; no pg_dump or zstd process`, file: import.meta.url, message: lastLine(r.stderr), durationMs });
    } finally {
      await proxy.close();
    }
  });
});
