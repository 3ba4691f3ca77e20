// restore never waits in silence (issue 24, item 7): behind a session that holds a lock on a
// table the restore replaces, it names the blocking session after 5 s and gives up after
// --lock-wait-timeout with the target unchanged. The blocking session holds its lock for the
// whole test (no race), against the real PostgreSQL.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, it, before, after } from 'node:test';
import pg from 'pg';
import { adminUrl, cli, createDatabase, dbUrl, dumpWithCli, fileLocation, sql } from '../helpers.ts';
import { lastLine } from '../reliability.ts';

/** The live target: the backup's table `orders`, with its own rows. */
const LIVE_SQL = `CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL);
  INSERT INTO orders (note) SELECT 'live ' || g FROM generate_series(1, 50) g;`;

/** A session on `db` inside an open transaction that read `orders` (ACCESS SHARE lock: a DROP waits for it). */
async function blocker(db: string): Promise<{ client: pg.Client; pid: number }> {
  const u = new URL(adminUrl());
  const client = new pg.Client({ host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), database: db, application_name: 'h1-report-job' });
  await client.connect();
  const [row] = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
  await client.query('BEGIN');
  await client.query('SELECT count(*) FROM orders');
  return { client, pid: row!.pid };
}

const rows = (db: string) => sql<{ note: string }>(db, 'SELECT note FROM orders ORDER BY id');

for (const format of ['custom', 'plain'] as const) {
  describe(`restore --clean of a ${format} backup behind an open transaction`, () => {
    let location: string;
    let objectKey: string;
    before(async () => {
      const source = await createDatabase('h1locksrc', false);
      await sql(source, `CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL); INSERT INTO orders (note) SELECT 'backup ' || g FROM generate_series(1, 20) g;`);
      location = await fileLocation();
      ({ objectKey } = await dumpWithCli(source, location, format === 'plain' ? ['--format', 'plain', '--clean'] : []));
    });
    after(() => rm(fileURLToPath(location), { recursive: true, force: true }));

    it('names the blocking session after 5 s, then fails after --lock-wait-timeout with the target unchanged', { timeout: 180_000 }, async (t) => {
      const target = await createDatabase('h1locktgt', false);
      await sql(target, LIVE_SQL);
      const before = await rows(target);
      const held = await blocker(target);
      t.after(() => held.client.end());
      const r = await cli(['restore', '--from', location, '--backup', objectKey, '--target-url', dbUrl(target), '--clean', '--no-safety-dump', '--lock-wait-timeout', '7s']);
      assert.equal(r.code, 1, r.stderr);
      const notice = r.stderr.split('\n').filter((l) => /has waited \d+ s for a lock held by/.test(l));
      assert.equal(notice.length, 1, r.stderr);
      assert.match(notice[0]!, new RegExp(`held by pid ${held.pid} \\(application "h1-report-job", idle in transaction since \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ \\(\\d+ s ago\\)\\); it gives up after 7 s`));
      assert.match(lastLine(r.stderr), new RegExp(`restore failed and was rolled back, .* is as it was \\(cause: the target database\\): it waited \\d+(\\.\\d)? s for a lock held by pid ${held.pid} .* and gave up \\(--lock-wait-timeout 7\\.0 s\\): end that session or let its transaction finish`));
      await held.client.query('ROLLBACK');
      assert.deepEqual(await rows(target), before, 'the target is unchanged');
    });

    it('without a blocking session restores as usual', async () => {
      const target = await createDatabase('h1locktgt', false);
      await sql(target, LIVE_SQL);
      const r = await cli(['restore', '--from', location, '--backup', objectKey, '--target-url', dbUrl(target), '--clean', '--no-safety-dump', '--lock-wait-timeout', '7s']);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /waited/);
      const after = await rows(target);
      assert.equal(after.length, 20);
      assert.equal(after[0]!.note, 'backup 1');
    });
  });
}

describe('restore --lock-wait-timeout values', () => {
  let target: string;
  before(async () => {
    target = await createDatabase('h1lockbad', false);
  });
  for (const bad of ['5x', '0s', '-1s', '']) {
    it(`refuses ${JSON.stringify(bad)} in one line, exit 2`, async () => {
      const r = await cli(['restore', '--from', 'file:///nonexistent-h1-lock', '--backup', 'latest', '--target-url', dbUrl(target), '--lock-wait-timeout', bad]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(lastLine(r.stderr), /--lock-wait-timeout/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    });
  }
});
