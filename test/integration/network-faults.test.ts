import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startFaultProxy } from '../infra/fault-proxy.ts';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, s3Keys, s3Location } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

/** Network faults between the tool and S3: the upload retries and completes intact, or aborts cleanly. */
describe('network faults on the way to S3', () => {
  const cases = [
    { faultId: 'net-reset-twice', name: 'connections reset mid-part (twice)', fault: 'S3 connections reset mid-part (twice)', outcome: 'parts retried; the backup completes and verifies', plan: { resetAfterBytes: 1_000_000, resets: 2 }, ok: true },
    { faultId: 'net-slowdown', name: '503 SlowDown (three times)', fault: 'S3 answers 503 SlowDown (three times)', outcome: 'retried with backoff; the backup completes and verifies', plan: { slowDowns: 3 }, ok: true },
    { faultId: 'net-reset-always', name: 'every connection reset mid-part', fault: 'every S3 connection reset mid-part', outcome: 'retries exhausted, multipart upload aborted', plan: { resetAfterBytes: 1_000_000 }, ok: false },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.ok ? 'retries and completes a backup that verifies' : 'fails clearly, with no manifest and no multipart upload left'}`, { timeout: 180_000 }, async () => {
      const db = await createDatabase('netfault', false);
      await addBigTable(db, 20);
      const to = s3Location('netfault');
      const proxy = await startFaultProxy(need('PGB_TEST_S3_ENDPOINT'), c.plan);
      try {
        const started = Date.now();
        const r = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: dbUrl(db), AWS_ENDPOINT_URL_S3: proxy.endpoint });
        const durationMs = Date.now() - started;
        assert.ok(proxy.stats.resets + proxy.stats.slowDowns > 0, 'faults were injected');
        if (c.ok) {
          assert.equal(r.code, 0, r.stderr);
          const verified = await cli(['verify', '--from', to]);
          assert.equal(verified.code, 0, verified.stderr);
        } else {
          assert.equal(r.code, 1, r.stderr);
          assert.match(lastLine(r.stderr), /^pg-backup: S3 write of s3:\/\/\S+ failed after retries: the connection broke \(ECONNRESET\)$/);
          assert.ok(!(await s3Keys(to)).some((k) => k.endsWith('.manifest.json')), 'no manifest');
          assert.deepEqual(await s3Keys(to), []);
          assert.deepEqual(await openMultipartUploads(to), []);
        }
        await recordFault({ faultId: c.faultId, fault: c.fault, outcome: c.outcome, exit: r.code, left: await leftBehind(to), file: import.meta.url, message: c.ok ? undefined : lastLine(r.stderr), durationMs });
      } finally {
        await proxy.close();
      }
    });
  }

  it('a stalled S3 connection (open, no byte moving) trips the stall watchdog: exit 1 in bounded time, upload aborted, nothing left', { timeout: 180_000 }, async () => {
    const db = await createDatabase('netstall', false);
    await addBigTable(db, 60);
    const to = s3Location('netstall');
    // Every connection that has carried 256 KB towards RGW goes silent: part uploads hang,
    // small requests on fresh connections (create, abort) still pass.
    const proxy = await startFaultProxy(need('PGB_TEST_S3_ENDPOINT'), { stallAfterBytes: 256 * 1024 });
    try {
      const started = Date.now();
      const { mark, env } = leftoverMark();
      const r = await cli(['dump', '--to', to, '--stall-timeout', '5s'], { DATABASE_URL: dbUrl(db), AWS_ENDPOINT_URL_S3: proxy.endpoint, ...env });
      const durationMs = Date.now() - started;
      assert.ok(proxy.stats.stalls > 0, 'connections were stalled');
      assert.equal(r.code, 1, r.stderr);
      assert.match(lastLine(r.stderr), /^pg-backup: no progress for 5 s \(.*\): pg_dump or the upload is stalled$/);
      // 5 s without progress, then the parts in flight are dropped and the upload aborted at
      // once: well under the SDK's 120 s request timeout (about 8 s here; 38 s before the parts
      // in flight were aborted too).
      assert.ok(durationMs < 25_000, `took ${durationMs} ms`);
      assert.deepEqual(await s3Keys(to), [], 'no object and no manifest');
      assert.deepEqual(await openMultipartUploads(to), [], 'the multipart upload is aborted');
      const listed = await cli(['list', '--from', to, '--json']);
      assert.equal(listed.code, 0, listed.stderr);
      assert.deepEqual(JSON.parse(listed.stdout), []);
      assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
      await recordFault({ faultId: 'net-stall', fault: 'S3 connections stall mid-part (open, no byte moving), `--stall-timeout 5s`', outcome: 'the stall watchdog aborts the dump and the multipart upload', exit: r.code, left: `${await leftBehind(to)}; no pg_dump or zstd process`, file: import.meta.url, message: lastLine(r.stderr), durationMs });
    } finally {
      await proxy.close();
    }
  });
});
