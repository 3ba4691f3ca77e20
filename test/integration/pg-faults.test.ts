import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { startThrowawayCluster } from '../../src/postgres/cluster.ts';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, realPgBin, run, s3Keys, s3Location, sql } from '../helpers.ts';
import { startFaultProxy } from '../infra/fault-proxy.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

/**
 * Polls `pg_stat_activity` through `query` until pg_dump's backend (application_name
 * `pg-backup`; the tool's own session is `pg-backup dump`) is copying table `big`, then runs
 * `act` with its pid. The upload goes through a proxy throttled to 4 MB/s, so pg_dump blocks on
 * a full pipe and the COPY stays visible for seconds, however fast the machine.
 * @throws Error when no such backend shows up within 60 s.
 */
async function whenCopying(query: (text: string) => Promise<{ pid: number }[]>, database: string, act: (pid: number) => Promise<void>): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const rows = await query(`SELECT pid FROM pg_stat_activity WHERE datname = '${database}' AND application_name = 'pg-backup' AND state = 'active' AND query LIKE 'COPY public.big %'`);
    if (rows[0]) return act(rows[0].pid);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`pg_dump's COPY of ${database}.big never showed up in pg_stat_activity`);
}

/** Asserts that nothing is visible as a backup under `to` (no object, no manifest, no open multipart upload, an empty `list`) and that the run left no process. */
async function assertNothingLeft(to: string, mark: string): Promise<void> {
  assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
  assert.deepEqual(await s3Keys(to), [], 'no object and no manifest');
  assert.deepEqual(await openMultipartUploads(to), [], 'the multipart upload is aborted');
  const listed = await cli(['list', '--from', to, '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(JSON.parse(listed.stdout), [], '`pg-backup list` shows nothing');
}

describe('PostgreSQL faults mid-dump', () => {
  it('the dump\'s backend terminated (pg_terminate_backend) mid-COPY: exit 1 naming it, nothing visible as a backup', { timeout: 180_000 }, async () => {
    const db = await createDatabase('pgterm', false);
    await addBigTable(db, 80);
    const to = s3Location('pgterm');
    const started = Date.now();
    const { mark, env } = leftoverMark();
    const proxy = await startFaultProxy(need('PGB_TEST_S3_ENDPOINT'), { throttleBytesPerSecond: 4e6 });
    const dumping = cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db), AWS_ENDPOINT_URL_S3: proxy.endpoint, ...env });
    let terminated = false;
    const r = await whenCopying((text) => sql<{ pid: number }>('postgres', text), db, async (pid) => {
      terminated = (await sql<{ ok: boolean }>('postgres', `SELECT pg_terminate_backend(${pid}) AS ok`))[0]!.ok;
    }).then(() => dumping).finally(() => proxy.close());
    const durationMs = Date.now() - started;
    assert.ok(terminated, 'the backend was terminated');
    assert.equal(r.code, 1, r.stderr);
    // The server's FATAL reaches pg_dump unless the backend was blocked sending COPY data; then
    // libpq sees the connection close. Either way the message says what happened to it.
    assert.match(lastLine(r.stderr), /^pg-backup: pg_dump exited with code 1: pg_dump: error: Dumping the contents of table "big" failed: .*(terminating connection due to administrator command|server closed the connection unexpectedly)/);
    await assertNothingLeft(to, mark);
    await recordFault({ faultId: 'pg-terminate-backend', fault: 'pg_dump\'s backend terminated mid-COPY (`pg_terminate_backend`; upload throttled to 4 MB/s)', outcome: 'pg_dump fails; the upload is aborted and pg_dump\'s error shown', exit: r.code, left: `${await leftBehind(to)}; no pg_dump or zstd process`, file: import.meta.url, message: lastLine(r.stderr), durationMs });
  });

  for (const c of [
    { faultId: 'pg-stop-fast', mode: 'fast', expected: /^pg-backup: pg_dump exited with code 1: .*(terminating connection due to administrator command|server closed the connection unexpectedly)/ },
    { faultId: 'pg-stop-immediate', mode: 'immediate', expected: /^pg-backup: pg_dump exited with code 1: .*server closed the connection unexpectedly/ },
  ]) {
    it(`the server stopped mid-dump (pg_ctl stop -m ${c.mode}): exit 1 naming it, nothing visible as a backup`, { timeout: 240_000 }, async () => {
      // A cluster of its own: stopping the shared test server would break the other tests.
      const cluster = await startThrowawayCluster({ minMajor: 0 });
      try {
        const admin = new pg.Client({ connectionString: cluster.connection.url });
        await admin.connect();
        await admin.query('CREATE DATABASE stopme');
        await admin.end();
        const url = new URL(cluster.connection.url);
        url.pathname = '/stopme';
        const client = new pg.Client({ connectionString: url.href });
        await client.connect();
        const rows = Math.ceil(80e6 / 180);
        await client.query(`CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
          INSERT INTO big SELECT g, encode(sha512(g::text::bytea) || sha512((g + 1)::text::bytea), 'base64') FROM generate_series(1, ${rows}) g;`);
        const to = s3Location('pgstop');
        const started = Date.now();
        const { mark, env } = leftoverMark();
        const proxy = await startFaultProxy(need('PGB_TEST_S3_ENDPOINT'), { throttleBytesPerSecond: 4e6 });
        const dumping = cli(['dump', '--to', to], { DATABASE_URL: url.href, AWS_ENDPOINT_URL_S3: proxy.endpoint, ...env });
        const pgCtl = path.join(await realPgBin(), 'pg_ctl');
        let stopped: { code: number; stderr: string } | undefined;
        await whenCopying(async (text) => (await client.query<{ pid: number }>(text)).rows, 'stopme', async () => {
          await client.end();
          // The cluster's files belong to its OS user (pg-backup-drill when root).
          const asOwner = process.getuid?.() === 0 ? ['runuser', ['-u', cluster.isolation.user.name, '--', pgCtl]] as const : [pgCtl, []] as const;
          stopped = await run(asOwner[0], [...asOwner[1], 'stop', '-D', path.join(cluster.dir, 'data'), '-m', c.mode, '-w', '-t', '60']);
        }).catch(async (err: unknown) => {
          await proxy.close();
          throw err;
        });
        const r = await dumping.finally(() => proxy.close());
        const durationMs = Date.now() - started;
        assert.equal(stopped?.code, 0, stopped?.stderr);
        assert.equal(r.code, 1, r.stderr);
        assert.match(lastLine(r.stderr), c.expected);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
        await assertNothingLeft(to, mark);
        await recordFault({ faultId: c.faultId, fault: `the server stopped mid-COPY (\`pg_ctl stop -m ${c.mode}\`; upload throttled to 4 MB/s)`, outcome: 'pg_dump fails; the upload is aborted and pg_dump\'s error shown', exit: r.code, left: `${await leftBehind(to)}; no pg_dump or zstd process`, file: import.meta.url, message: lastLine(r.stderr), durationMs });
      } finally {
        await cluster.stop();
      }
    });
  }
});
