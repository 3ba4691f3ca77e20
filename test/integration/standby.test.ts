// Dumping from a hot standby: a PostgreSQL 15 primary started here and its streaming standby
// (`pg_basebackup -R -c fast`, test/infra/standby-pair.ts) with max_standby_streaming_delay=0 and
// hot_standby_feedback=off, so replay cancels at once any query whose rows the primary's VACUUM
// removed. The conflict is made deterministic, not raced: the CLI's pg_dump waits at a gate (a
// PG_BIN_DIR whose pg_dump is a script that waits for a `go` file) while the dump's snapshot is
// exported and held; the test updates and vacuums the table on the primary, waits until the
// standby received (replay paused) or replayed (not paused) that WAL, then lets pg_dump go.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { fakePgBin, openMultipartUploads, root, s3Env, s3Keys, s3Location } from '../helpers.ts';
import { runActionSource } from '../infra/action-source.ts';
import { startStandbyPair, type StandbyPair } from '../infra/standby-pair.ts';

const T = { timeout: 120_000 };
let pair: StandbyPair;
let pgBin: string;
const temp: string[] = [];
/** Every dump started, so a failed test cannot leave one waiting at its gate. */
const children: ChildProcess[] = [];

before(async () => {
  pair = await startStandbyPair({ max_standby_streaming_delay: '0', max_standby_archive_delay: '0', hot_standby_feedback: 'off' });
  await pair.primary('postgres', 'CREATE DATABASE app');
  await pair.primary('app', "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); INSERT INTO t SELECT g, 'a' FROM generate_series(1, 2000) g");
  await pair.primary('app', 'CREATE TABLE t2 (id int PRIMARY KEY); INSERT INTO t2 SELECT generate_series(1, 10)');
  await pair.primary('app', "CREATE ROLE reader LOGIN PASSWORD 'readerpw'; GRANT SELECT ON t, t2 TO reader");
  await pair.caughtUp('replay');
  // pg_dump waits at the gate named by PGB_TEST_GATE (when set) until the test creates its `go` file.
  pgBin = await fakePgBin('if [ -n "$PGB_TEST_GATE" ]; then : > "$PGB_TEST_GATE/arrived"; while [ ! -e "$PGB_TEST_GATE/go" ]; do sleep 0.02; done; fi\nexec "$REAL/pg_dump" "$@"');
  temp.push(pgBin);
}, { timeout: 180_000 });

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await pair?.stop();
  for (const d of temp) await rm(d, { recursive: true, force: true });
});

/** The standby's replay state. */
const replayState = async () => (await pair.standby<{ s: string }>('postgres', 'SELECT pg_get_wal_replay_pause_state() AS s'))[0]!.s;
const rowsOnStandby = async () => Number((await pair.standby<{ n: string }>('app', 'SELECT count(*) AS n FROM t'))[0]!.n);

/** A gate directory for one dump. */
async function gate() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-dumpgate-'));
  temp.push(dir);
  return {
    dir,
    /** Resolves once pg_dump waits at the gate (the file stays, so this cannot miss it). */
    async arrived(ms = 60_000) {
      for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
        if (await access(path.join(dir, 'arrived')).then(() => true, () => false)) return;
      }
      throw new Error('pg_dump did not reach the gate');
    },
    release: () => writeFile(path.join(dir, 'go'), ''),
  };
}

/** Starts `pg-backup dump --json` as a child process against `url`; `done` resolves with its exit code and output. */
function startDump(url: string, to: string, gateDir?: string, extra: string[] = []) {
  const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'dump', '--to', to, '--json', ...extra], {
    cwd: root,
    env: { ...process.env, ...s3Env(), DATABASE_URL: url, PG_BIN_DIR: pgBin, PGB_TEST_GATE: gateDir ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

/** Deletes and vacuums rows on the primary while the dump's snapshot is held. */
async function churn(): Promise<void> {
  await pair.primary('app', "UPDATE t SET v = v || 'x' WHERE id % 2 = 0");
  await pair.primary('app', 'DELETE FROM t WHERE id > (SELECT max(id) - 100 FROM t)');
  await pair.primary('app', 'VACUUM t');
}

describe('dump from a hot standby', () => {
  it('superuser: replay is paused for the dump (the primary vacuums meanwhile), resumed afterwards, and the manifest records the standby and its replay LSN', T, async () => {
    const before = await rowsOnStandby();
    const g = await gate();
    const to = s3Location('standby-su');
    const run = startDump(pair.standbyUrl('app'), to, g.dir);
    await g.arrived();
    assert.equal(await replayState(), 'paused', 'replay is paused while the snapshot is held');
    await churn();
    await pair.caughtUp('receive'); // the standby has the VACUUM's WAL, and does not replay it
    assert.equal(await rowsOnStandby(), before, 'paused: the deletes are not replayed yet');
    await g.release();
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const manifest = JSON.parse(r.stdout);
    assert.equal(manifest.tables.find((t: { table: string }) => t.table === 't').rows, before, 'the dump holds the snapshot taken before the deletes');
    assert.equal(manifest.standby.replayPaused, true);
    assert.equal(manifest.standby.pausedBy, 'pg-backup');
    assert.match(manifest.standby.replayLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(Date.parse(manifest.standby.lastReplayedAt) > 0);
    assert.match(r.stderr, /is a hot standby: WAL replay paused for the dump/);
    assert.match(r.stderr, /WAL replay on .* resumed \(paused .*; the dump holds the data replayed up to [0-9A-F]+\/[0-9A-F]+\)/);
    // Resumed: the standby replays the deletes.
    assert.equal(await replayState(), 'not paused');
    await pair.caughtUp('replay');
    assert.equal(await rowsOnStandby(), before - 100);
    assert.ok(!r.stderr.includes('conflict'), r.stderr);
  });

  it('the dump action: its backups output and job summary name the standby and its replay LSN', T, async () => {
    const r = await runActionSource('dump', { to: s3Location('standby-action'), 'database-url': pair.standbyUrl('app') }, { ...s3Env(), PG_BIN_DIR: pgBin });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const [entry] = JSON.parse(r.outputs.backups!);
    assert.equal(entry.standby.pausedBy, 'pg-backup');
    assert.match(r.summary, new RegExp(`from a hot standby at ${entry.standby.replayLsn.replace('/', '\\/')} \\(replay paused\\)`));
    assert.equal(await replayState(), 'not paused');
  });

  it('a dump from the primary has no standby record', T, async () => {
    const run = startDump(pair.primaryUrl('app'), s3Location('standby-primary'));
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).standby, undefined);
    assert.ok(!/hot standby/.test(r.stderr), r.stderr);
  });

  it('directory format with parallel jobs (pg_dump --jobs imports the snapshot on the standby), the schema sidecar and a lock wait timeout, verified at level archive', T, async () => {
    const r = await startDump(pair.standbyUrl('app'), s3Location('standby-dir'), undefined, ['--format', 'directory', '--jobs', '2', '--schema-sidecar', '--lock-wait-timeout', '10s', '--verify', 'archive']).done;
    assert.equal(r.code, 0, r.stderr);
    const manifest = JSON.parse(r.stdout);
    assert.equal(manifest.format, 'directory');
    assert.equal(manifest.standby.pausedBy, 'pg-backup');
    assert.ok(manifest.sidecars.some((s: { kind: string }) => s.kind === 'schema'));
    assert.equal(manifest.verification.ok, true, JSON.stringify(manifest.verification));
    assert.equal(await replayState(), 'not paused');
  });

  it('a role that may not pause, with nothing to conflict: the dump passes with the warning, and the manifest says replay was not paused', T, async () => {
    const r = await startDump(pair.standbyUrl('app', 'reader', 'readerpw'), s3Location('standby-ro-ok')).done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.split('\n').filter((l) => /may not pause WAL replay/.test(l)).length, 1, r.stderr);
    const { standby } = JSON.parse(r.stdout);
    assert.equal(standby.replayPaused, false);
    assert.equal(standby.pausedBy, undefined);
    assert.match(standby.replayLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
  });

  it('a role that may not pause: one warning line naming the bounds, then the conflict fails in one line with the cause and the three fixes; nothing in the bucket', T, async () => {
    const g = await gate();
    const to = s3Location('standby-ro');
    const run = startDump(pair.standbyUrl('app', 'reader', 'readerpw'), to, g.dir);
    await g.arrived();
    assert.equal(await replayState(), 'not paused');
    await churn();
    await pair.caughtUp('replay'); // replayed: the conflict has ended the dump's snapshot
    await g.release();
    const r = await run.done;
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    const warnings = lines.filter((l) => /is a hot standby and role "reader" may not pause WAL replay/.test(l));
    assert.equal(warnings.length, 1, r.stderr);
    assert.match(warnings[0]!, /max_standby_streaming_delay=0 \(max_standby_archive_delay=0\).*hot_standby_feedback=off/, r.stderr);
    assert.match(warnings[0]!, /GRANT EXECUTE ON FUNCTION pg_catalog\.pg_wal_replay_pause\(\), pg_catalog\.pg_wal_replay_resume\(\) TO "reader";/, r.stderr);
    assert.ok(lines.indexOf(warnings[0]!) < lines.findIndex((l) => /conflict/.test(l) && !l.includes('may not pause')), `the warning comes before the failure: ${r.stderr}`);
    const last = lines.at(-1)!;
    assert.match(last, /the dump was cancelled by a recovery conflict on the hot standby .*SQLSTATE 40001: User query might have needed to see row versions that must be removed/, r.stderr);
    assert.match(last, /\(1\) .*GRANT EXECUTE ON FUNCTION pg_catalog\.pg_wal_replay_pause\(\), pg_catalog\.pg_wal_replay_resume\(\) TO "reader";/, r.stderr);
    assert.match(last, /\(2\) set hot_standby_feedback = on .*now off/, r.stderr);
    assert.match(last, /\(3\) raise max_standby_streaming_delay and max_standby_archive_delay .*now 0 and 0/, r.stderr);
    assert.ok(!/invalid snapshot|import|pg_dump exited|Connection terminated/i.test(last), `the cause, not a consequence: ${last}`);
    assert.deepEqual(await s3Keys(to), [], r.stderr);
    assert.deepEqual(await openMultipartUploads(to), [], r.stderr);
  });

  it("a lock conflict cancels the dump's own row count beside pg_dump: the same one line with the server's detail, not pg_dump's lost snapshot", T, async () => {
    // Two transactions on the primary take ACCESS EXCLUSIVE locks, which the standby's replay
    // takes too: first on t2, so the dump's row count of t2 (in its snapshot, beside pg_dump)
    // waits there; then on t, which the dump's transaction holds ACCESS SHARE on since it counted
    // t: replay cancels that waiting query (an ERROR, not the FATAL of an idle connection), which
    // ends the exported snapshot before pg_dump imports it.
    const lockers = [new pg.Client({ connectionString: pair.primaryUrl('app') }), new pg.Client({ connectionString: pair.primaryUrl('app') })];
    const flush = () => pair.primary('postgres', 'SELECT txid_current()'); // a commit flushes the WAL before it (lock records are not flushed by themselves)
    for (const c of lockers) await c.connect();
    try {
      await lockers[0]!.query('BEGIN');
      await lockers[0]!.query('LOCK TABLE t2 IN ACCESS EXCLUSIVE MODE');
      await flush();
      await pair.caughtUp('replay');
      const g = await gate();
      const to = s3Location('standby-ro-lock');
      const run = startDump(pair.standbyUrl('app', 'reader', 'readerpw'), to, g.dir);
      await g.arrived();
      for (let i = 0; ; i++) {
        const [w] = await pair.standby<{ n: string }>('postgres', "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'pg-backup dump' AND wait_event_type = 'Lock'");
        if (w!.n === '1') break; // the row count of t2 waits for the replayed lock (until we act)
        if (i > 1000) throw new Error('the dump never waited for the lock on t2');
        await new Promise((r) => setTimeout(r, 20));
      }
      await lockers[1]!.query('BEGIN');
      await lockers[1]!.query('LOCK TABLE t IN ACCESS EXCLUSIVE MODE');
      await flush();
      await pair.caughtUp('replay'); // replay took t's lock: the conflicting query was cancelled first
      await g.release();
      const r = await run.done;
      assert.equal(r.code, 1, r.stderr);
      const last = r.stderr.trim().split('\n').at(-1)!;
      assert.match(last, /the dump was cancelled by a recovery conflict on the hot standby .*SQLSTATE 40001: User was holding a relation lock for too long.*\(2\) set hot_standby_feedback = on .*it does not prevent lock conflicts.*\(3\) raise max_standby_streaming_delay/, r.stderr);
      assert.ok(!/invalid snapshot|pg_dump exited/i.test(last), r.stderr);
      assert.deepEqual(await s3Keys(to), [], r.stderr);
      assert.deepEqual(await openMultipartUploads(to), [], r.stderr);
    } finally {
      for (const c of lockers) {
        await c.query('ROLLBACK').catch(() => undefined);
        await c.end();
      }
      await flush();
      await pair.caughtUp('replay'); // the standby's replay lets go of both locks before the next test
    }
  });

  for (const [sig, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    it(`${sig} mid-dump: the CLI exits ${code} and replay is resumed`, T, async () => {
      const g = await gate();
      const to = s3Location('standby-sig');
      const run = startDump(pair.standbyUrl('app'), to, g.dir);
      await g.arrived();
      assert.equal(await replayState(), 'paused');
      run.child.kill(sig);
      const r = await run.done;
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, /WAL replay on .* resumed/);
      assert.equal(await replayState(), 'not paused');
      assert.deepEqual(await s3Keys(to), []);
      assert.deepEqual(await openMultipartUploads(to), []);
    });
  }

  it('a closed stderr mid-dump (dump 2>&1 | head -2): exit 141 once the next progress line meets the closed pipe, and replay is resumed', T, async () => {
    const g = await gate();
    const to = s3Location('standby-epipe');
    const run = startDump(pair.standbyUrl('app'), to, g.dir);
    await g.arrived();
    assert.equal(await replayState(), 'paused');
    run.child.stderr.destroy(); // as `head -2` exits: the dump's next write (its periodic progress line) gets EPIPE
    const r = await run.done;
    assert.equal(r.code, 141);
    assert.equal(await replayState(), 'not paused');
    assert.deepEqual(await s3Keys(to), []);
    assert.deepEqual(await openMultipartUploads(to), []);
  });

  it("the dump's own connection killed while replay is paused: the dump fails and replay is resumed over a new connection", T, async () => {
    const g = await gate();
    const to = s3Location('standby-killed');
    const run = startDump(pair.standbyUrl('app'), to, g.dir);
    await g.arrived();
    assert.equal(await replayState(), 'paused');
    const killed = await pair.standby<{ ok: boolean }>('postgres', "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'pg-backup dump'");
    assert.deepEqual(killed.map((k) => k.ok), [true]);
    await g.release();
    const r = await run.done;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /WAL replay on .* resumed/);
    assert.ok(!/recovery conflict/.test(r.stderr), r.stderr);
    assert.equal(await replayState(), 'not paused');
    assert.deepEqual(await s3Keys(to), []);
  });

  it('replay paused by someone else before the dump: left paused, and the manifest says so', T, async () => {
    await pair.standby('postgres', 'SELECT pg_wal_replay_pause()');
    try {
      for (let i = 0; (await replayState()) !== 'paused'; i++) {
        if (i > 500) throw new Error('replay did not pause');
        await new Promise((r) => setTimeout(r, 20));
      }
      const r = await startDump(pair.standbyUrl('app'), s3Location('standby-other')).done;
      assert.equal(r.code, 0, r.stderr);
      const manifest = JSON.parse(r.stdout);
      assert.deepEqual({ paused: manifest.standby.replayPaused, by: manifest.standby.pausedBy }, { paused: true, by: 'other' });
      assert.match(r.stderr, /WAL replay is already paused \(not by this dump\): left as it is/);
      assert.ok(!/WAL replay on .* resumed/.test(r.stderr), r.stderr);
      assert.equal(await replayState(), 'paused');
    } finally {
      await pair.standby('postgres', 'SELECT pg_wal_replay_resume()');
    }
  });
});
