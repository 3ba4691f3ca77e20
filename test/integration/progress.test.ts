// Progress and ETA of the long steps on real servers (issue 26): a drill, a restore and a verify
// whose stderr is not a terminal (as in a GitHub Actions log) print progress lines with percent
// and elapsed time; percents only grow within a phase; the ETA comes from the database's drill
// history once there is one ("from 1 drill"); --quiet prints none; a table name with control
// characters is shown escaped. No timing is asserted: the lines are written at each 10 % of a
// phase (the 10 % rule), whatever the speed, and the hostile name's line is written when the big
// table before it is done (a serial restore's order of lines, not the clock).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, dumpWithCli, sql } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

/** A table name with an escape sequence (red text) and a bidi override: shown escaped or not at all. */
const HOSTILE = 'evil\u001b[31m\u202e';

let db: string;
let to: string;
const made: string[] = [];

before(async () => {
  db = await createDatabase('progress', false);
  made.push(db);
  // a_big (~6 MB that zstd cannot shrink) sorts before the hostile table: its data is loaded first.
  await sql(db, `CREATE TABLE a_big (id int PRIMARY KEY, payload text NOT NULL);
    INSERT INTO a_big SELECT g, encode(sha512(g::text::bytea) || sha512((g + 1)::text::bytea), 'base64') FROM generate_series(1, 35000) g;
    CREATE TABLE "${HOSTILE.replace(/"/g, '""')}" (id int PRIMARY KEY); INSERT INTO "${HOSTILE}" VALUES (1);
    CREATE TABLE z_small (id int PRIMARY KEY, v text); INSERT INTO z_small SELECT g, md5(g::text) FROM generate_series(1, 500) g;`);
  to = await tempLocation();
  await dumpWithCli(db, to);
}, { timeout: 120_000 });

after(async () => {
  for (const name of made) await sql('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
});

/** The progress lines of `phase` in stderr (`<step> <database>: <phase> N %, …, X s elapsed…`), with their percents. */
function progressLines(stderr: string, step: string, phase: string): { line: string; percent: number }[] {
  const start = `${step} ${db}: ${phase} `;
  return stderr
    .split('\n')
    .filter((l) => l.startsWith(start))
    .map((line) => {
      assert.match(line, new RegExp(`^${step} ${db}: ${phase} \\d{1,3} %, .*\\d(?:\\.\\d)? (?:s|min \\d+ s) elapsed(?:, ETA .+)?$`), line);
      return { line, percent: Number(/ (\d{1,3}) %/.exec(line)![1]) };
    });
}

function assertMonotonic(lines: { percent: number }[], what: string): void {
  for (let i = 1; i < lines.length; i++) assert.ok(lines[i]!.percent >= lines[i - 1]!.percent, `${what}: ${lines.map((l) => l.percent).join(', ')}`);
}

describe('progress lines in a log (stderr not a terminal)', () => {
  it('a drill: download by bytes, restore by tables, percent and elapsed in each line, growing; then an ETA from 1 drill', { timeout: 240_000 }, async () => {
    const first = await cli(['drill', '--from', to, '--jobs', '1', '--json']);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(JSON.parse(first.stdout).ok, true);
    const download = progressLines(first.stderr, 'drill', 'download');
    assert.ok(download.length >= 5, `a line at (nearly) each 10 % of the download:\n${first.stderr}`);
    assertMonotonic(download, 'download');
    assert.equal(download.at(-1)!.percent, 100);
    for (const { line } of download) assert.match(line, / of [\d.]+ MB, /);
    const restore = progressLines(first.stderr, 'drill', 'restore');
    assert.ok(restore.length >= 1, first.stderr);
    assertMonotonic(restore, 'restore');
    for (const { line } of restore) assert.match(line, / \d of 3 tables, /);
    assert.ok(!/from \d+ drill/.test(first.stderr), 'no history yet: no ETA from drills');
    // The report carries the archive's size: the next drill's ETA is taken from it.
    assert.equal(typeof JSON.parse(first.stdout).archiveSizeBytes, 'number');

    // The hostile name: shown in the line written when a_big was done, escaped; no raw control character anywhere.
    assert.ok(restore.some(({ line }) => line.includes('loading "public.evil\\u001b[31m\\u202e"')), restore.map((l) => l.line).join('\n'));
    assert.ok(!/[\u001b\u202e]/.test(first.stderr), 'no raw escape or bidi character on stderr');

    const second = await cli(['drill', '--from', to]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /, ETA \d+ (?:s|min) \(from 1 drill\)/);
  });

  it('--quiet: a drill prints no progress line', { timeout: 180_000 }, async () => {
    const r = await cli(['drill', '--from', to, '--quiet', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).ok, true);
    assert.ok(!/elapsed/.test(r.stderr), r.stderr);
    assert.equal(progressLines(r.stderr, 'drill', 'download').length, 0);
  });

  it('a restore: bytes of the object with tables done, growing to 100 %; --quiet prints none', { timeout: 180_000 }, async () => {
    const target = await createDatabase('progress_target', false);
    made.push(target);
    const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target)]);
    assert.equal(r.code, 0, r.stderr);
    const lines = progressLines(r.stderr, 'restore', 'restore');
    assert.ok(lines.length >= 5, r.stderr);
    assertMonotonic(lines, 'restore');
    assert.equal(lines.at(-1)!.percent, 100);
    for (const { line } of lines) assert.match(line, / of [\d.]+ MB, \d of 3 tables, /);
    assert.deepEqual(await sql(target, 'SELECT count(*)::int AS n FROM z_small'), [{ n: 500 }]);

    const quiet = await createDatabase('progress_quiet', false);
    made.push(quiet);
    const q = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(quiet), '--quiet']);
    assert.equal(q.code, 0, q.stderr);
    assert.ok(!/elapsed/.test(q.stderr), q.stderr);
  });

  it("a failed pg_restore (--verbose, two jobs) gives the reason it gives without --verbose", { timeout: 180_000 }, async () => {
    // A role without CREATE on the target's schema public (PostgreSQL 15's default): the first CREATE TABLE fails.
    const role = `pgb_progress_${db.slice(-6)}`;
    const target = await createDatabase('progress_denied', false);
    made.push(target);
    await sql('postgres', `CREATE ROLE ${role} LOGIN PASSWORD 'pw-${role}'`);
    try {
      const url = new URL(dbUrl(target));
      url.username = role;
      url.password = `pw-${role}`;
      // --quiet: no progress, so pg_restore runs without --verbose: the reference.
      const reasons: string[] = [];
      for (const quiet of [[], ['--quiet']]) {
        const r = await cli(['drill', '--from', to, '--target-url', url.href, '--jobs', '2', '--json', ...quiet]);
        assert.equal(r.code, 1, r.stderr);
        reasons.push(JSON.parse(r.stdout).reason);
      }
      assert.match(reasons[0]!, /^restore failed: pg_restore exited with code 1: .*CREATE TABLE public\.a_big/);
      assert.equal(reasons[0], reasons[1], 'the same reason with and without --verbose');
      assert.doesNotMatch(reasons[0]!, /processing item|creating TABLE|from TOC entry|while PROCESSING TOC|connecting to database/);
    } finally {
      await sql('postgres', `DROP DATABASE IF EXISTS "${target}" WITH (FORCE)`);
      await sql('postgres', `DROP ROLE IF EXISTS ${role}`);
    }
  });

  it('a verify: bytes read of the object', { timeout: 120_000 }, async () => {
    const r = await cli(['verify', '--from', to]);
    assert.equal(r.code, 0, r.stderr);
    const lines = progressLines(r.stderr, 'verify', 'read');
    assert.ok(lines.length >= 5, r.stderr);
    assertMonotonic(lines, 'read');
    assert.equal(lines.at(-1)!.percent, 100);
  });
});
