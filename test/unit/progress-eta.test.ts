// Progress and ETA (src/backup/progress-eta.ts) and pg_restore's --verbose lines
// (src/postgres/restore-progress.ts): the arithmetic, the 10 s / 10 % throttle with an injected
// clock, the line parser on real pg_restore 15 output, and the stderr filter that keeps the
// error classification's input as it is without --verbose.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { openStorage } from '../../src/storage/index.ts';
import {
  ProgressThrottle,
  drillRate,
  etaFromHistory,
  etaFromThroughput,
  formatEta,
  meteredStorage,
  percentOf,
  progressLine,
  startStepProgress,
} from '../../src/backup/progress-eta.ts';
import type { Logger } from '../../src/log.ts';
import { RestoreTableProgress, namesAllowVerbose, pgRestoreStderrFilter, shownTableName } from '../../src/postgres/restore-progress.ts';
import { classifyRestoreFailure } from '../../src/postgres/target.ts';

/** A clock the test moves by hand (ms). */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('ProgressThrottle (the log rule: every 10 s or 10 %, whichever comes first)', () => {
  it('writes at each new multiple of 10 % however fast, and once when a jump crosses several', () => {
    const c = clock();
    const t = new ProgressThrottle(c.now);
    assert.equal(t.due(5), false);
    assert.equal(t.due(10), true);
    assert.equal(t.due(12), false);
    assert.equal(t.due(19), false);
    assert.equal(t.due(20), true);
    assert.equal(t.due(55), true, 'a jump from 20 to 55 % is one line');
    assert.equal(t.due(59), false);
    assert.equal(t.due(60), true);
    assert.equal(t.due(100), true);
    assert.equal(t.due(100), false, '100 % is said once');
  });

  it('writes after 10 s without a new multiple, and the clock restarts with each line', () => {
    const c = clock();
    const t = new ProgressThrottle(c.now);
    c.advance(9_999);
    assert.equal(t.due(3), false);
    c.advance(1);
    assert.equal(t.due(3), true);
    c.advance(5_000);
    assert.equal(t.due(10), true, 'the percent rule does not wait for the clock');
    c.advance(9_000);
    assert.equal(t.due(11), false, '10 s count from the last line, whichever rule wrote it');
    c.advance(1_000);
    assert.equal(t.due(undefined), true, 'a step without a total still gets a line every 10 s');
  });

  it('starts again at 10 % for a new phase', () => {
    const c = clock();
    const t = new ProgressThrottle(c.now);
    assert.equal(t.due(100), true);
    t.restart();
    assert.equal(t.due(9), false);
    assert.equal(t.due(10), true);
  });
});

describe('ETA arithmetic', () => {
  it('takes the median RTO per archive byte of the successful drills that know their size', () => {
    const rate = drillRate([
      { ok: true, rtoMs: 100_000, archiveSizeBytes: 1_000_000 }, // 0.1 ms/B
      { ok: true, rtoMs: 300_000, archiveSizeBytes: 1_000_000 }, // 0.3
      { ok: true, rtoMs: 900_000, archiveSizeBytes: 1_000_000 }, // 0.9: a slow runner does not move the median
      { ok: false, rtoMs: 5_000, archiveSizeBytes: 1_000_000 }, // failed: left out
      { ok: true, rtoMs: 0, archiveSizeBytes: 1_000_000 }, // no RTO: left out
      { ok: true, rtoMs: 50_000 }, // size unknown, another backup: left out
    ]);
    assert.deepEqual(rate, { msPerByte: 0.3, drills: 3 });
    assert.deepEqual(drillRate([{ ok: true, rtoMs: 1_000, archiveSizeBytes: 1_000 }, { ok: true, rtoMs: 3_000, archiveSizeBytes: 1_000 }]), { msPerByte: 2, drills: 2 }, 'an even count: the mean of the middle two');
    assert.equal(drillRate([]), undefined);
  });

  it('counts an older report without archiveSizeBytes when it drilled the same backup', () => {
    assert.deepEqual(drillRate([{ ok: true, rtoMs: 20_000, backupId: 'b1' }], { id: 'b1', archiveSizeBytes: 10_000 }), { msPerByte: 2, drills: 1 });
    assert.equal(drillRate([{ ok: true, rtoMs: 20_000, backupId: 'b0' }], { id: 'b1', archiveSizeBytes: 10_000 }), undefined);
  });

  it('from history: rate × size − elapsed; nothing once the step is past its prediction', () => {
    const rate = { msPerByte: 0.001, drills: 12 };
    assert.equal(etaFromHistory(rate, 300_000_000, 60_000), 240_000);
    assert.equal(etaFromHistory(rate, 300_000_000, 300_000), undefined);
    assert.equal(etaFromHistory(rate, 300_000_000, 400_000), undefined);
  });

  it('from the rate so far: elapsed × (1 − f) / f, not before 1 % and 1 s', () => {
    assert.equal(etaFromThroughput(0.25, 10_000), 30_000);
    assert.equal(etaFromThroughput(1, 10_000), 0);
    assert.equal(etaFromThroughput(0.005, 10_000), undefined);
    assert.equal(etaFromThroughput(0.5, 500), undefined);
    assert.equal(etaFromThroughput(Number.NaN, 10_000), undefined);
  });

  it('says an ETA as a person reads it', () => {
    assert.equal(formatEta(1_000), 'ETA 10 s');
    assert.equal(formatEta(41_000), 'ETA 50 s');
    assert.equal(formatEta(60_000), 'ETA 1 min');
    assert.equal(formatEta(240_000), 'ETA 4 min');
    assert.equal(formatEta(239_001), 'ETA 4 min');
    assert.equal(formatEta(3_900_000), 'ETA 1 h 5 min');
  });

  it('takes the percent from bytes first, then the rows of the tables, then their count', () => {
    assert.equal(percentOf({ bytes: 50, totalBytes: 200, tablesDone: 9, tablesTotal: 10 }), 25);
    assert.equal(percentOf({ tablesDone: 1, tablesTotal: 10, tablesFraction: 0.9 }), 90);
    assert.equal(percentOf({ tablesDone: 3, tablesTotal: 10 }), 30);
    assert.equal(percentOf({ bytes: 10 }), undefined);
    assert.equal(percentOf({ bytes: 300, totalBytes: 200 }), 100);
  });

  it('writes the line with percent, counts, elapsed and the ETA with its source', () => {
    const withHistory = progressLine({ label: 'drill app', phase: 'download', counts: { bytes: 45_000_000, totalBytes: 100_000_000 }, elapsedMs: 60_000, phaseElapsedMs: 60_000, rate: { msPerByte: 0.001, drills: 12 }, archiveSizeBytes: 300_000_000 });
    assert.equal(withHistory, 'drill app: download 45 %, 45.0 MB of 100 MB, 1 min 0 s elapsed, ETA 4 min (from 12 drills)');
    const one = progressLine({ label: 'drill app', phase: 'restore', counts: { tablesDone: 1, tablesTotal: 4 }, elapsedMs: 10_000, phaseElapsedMs: 4_000, rate: { msPerByte: 0.1, drills: 1 }, archiveSizeBytes: 1_000_000 });
    assert.match(one, /, 10.0 s elapsed, ETA 2 min \(from 1 drill\)$/, "100 s predicted, 10 s gone: 90 s, said as 2 min");
    const rate = progressLine({ label: 'restore app', phase: 'restore', counts: { tablesDone: 1, tablesTotal: 4, detail: 'loading "public.a"' }, elapsedMs: 10_000, phaseElapsedMs: 4_000 });
    assert.equal(rate, 'restore app: restore 25 %, 1 of 4 tables, loading "public.a", 10.0 s elapsed, ETA 20 s for the restore (at the rate so far)');
  });
});

/** A logger that records what a reporter writes. */
function recorder(quiet = false): Logger & { infos: string[]; drawn: string[] } {
  const infos: string[] = [];
  const drawn: string[] = [];
  return { infos, drawn, quiet, info: (m) => infos.push(m), warn: () => undefined, group: (_n, fn) => fn(), progress: (l) => drawn.push(l) };
}

describe('startStepProgress', () => {
  it('in a log: a line at each 10 %, monotonic, none between; nothing before a phase starts', () => {
    const c = clock();
    const log = recorder();
    const p = startStepProgress({ label: 'verify app', logger: log, now: c.now, tty: false });
    p.addBytes(10);
    assert.deepEqual(log.infos, [], 'no phase, no line');
    p.phase('read', { bytes: 0, totalBytes: 1000 });
    for (let i = 0; i < 100; i++) {
      c.advance(10);
      p.addBytes(10);
    }
    p.stop();
    assert.equal(log.infos.length, 10, log.infos.join('\n'));
    const percents = log.infos.map((l) => Number(/read (\d+) %/.exec(l)![1]));
    assert.deepEqual(percents, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    for (const l of log.infos) assert.match(l, /^verify app: read \d+ %, [\d.]+ (?:B|kB) of 1\.0 kB, [\d.]+ s elapsed/);
    p.addBytes(10);
    assert.equal(log.infos.length, 10, 'nothing after stop');
  });

  it('with a quiet logger: nothing at all', () => {
    const log = recorder(true);
    const p = startStepProgress({ label: 'drill app', logger: log, tty: false });
    p.phase('download', { bytes: 0, totalBytes: 100 });
    p.addBytes(100);
    p.stop();
    assert.equal(p.enabled, false);
    assert.deepEqual(log.infos, []);
    assert.deepEqual(log.drawn, []);
  });

  it('on a terminal: no log lines, and stop clears the line', () => {
    const log = recorder();
    const p = startStepProgress({ label: 'drill app', logger: log, tty: true });
    p.phase('download', { bytes: 0, totalBytes: 100 });
    p.addBytes(100);
    assert.match(p.line(), /^drill app: download 100 %/);
    p.stop();
    assert.deepEqual(log.infos, []);
    assert.equal(log.drawn.at(-1), '');
  });
});

describe('meteredStorage', () => {
  it("counts the bytes of every get as they are read, and leaves the storage's other methods as they are", async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-metered-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const storage = openStorage(pathToFileURL(dir).href);
    const body = Buffer.alloc(3 * 1024 * 1024 + 17, 'x');
    await storage.put('a/b.bin', body);
    let counted = 0;
    const metered = meteredStorage(storage, (n) => (counted += n));
    assert.equal(metered.uri('a/b.bin'), storage.uri('a/b.bin'));
    assert.equal(metered.url, storage.url);
    const chunks: Buffer[] = [];
    for await (const c of await metered.get('a/b.bin')) chunks.push(c as Buffer);
    assert.equal(counted, body.length);
    assert.ok(Buffer.concat(chunks).equals(body));
    await assert.rejects(metered.get('a/missing.bin'), /not|exist|ENOENT/i);
  });
});

// pg_restore 15.18's stderr for a two-job restore of tables "a" (1000 rows) and "b x" (1 row).
const PARALLEL = `pg_restore: connecting to database for restore
pg_restore: processing item 3351 ENCODING ENCODING
pg_restore: processing item 214 TABLE a
pg_restore: creating TABLE "public.a"
pg_restore: processing item 215 TABLE b x
pg_restore: creating TABLE "public.b x"
pg_restore: entering main parallel loop
pg_restore: launching item 3346 TABLE DATA a
pg_restore: launching item 3347 TABLE DATA b x
pg_restore: processing data for table "public.a"
pg_restore: finished item 3346 TABLE DATA a
pg_restore: launching item 3202 CONSTRAINT a a_pkey
pg_restore: creating CONSTRAINT "public.a a_pkey"
pg_restore: processing data for table "public.b x"
pg_restore: finished item 3202 CONSTRAINT a a_pkey
pg_restore: finished item 3347 TABLE DATA b x
pg_restore: launching item 3203 INDEX b x_t_idx
pg_restore: creating INDEX "public.b x_t_idx"
pg_restore: finished item 3203 INDEX b x_t_idx
pg_restore: finished main parallel loop`.split('\n');

const SERIAL = `pg_restore: connecting to database for restore
pg_restore: creating TABLE "public.a"
pg_restore: creating TABLE "public.b x"
pg_restore: processing data for table "public.a"
pg_restore: processing data for table "public.b x"
pg_restore: executing SEQUENCE SET s
pg_restore: creating CONSTRAINT "public.a a_pkey"`.split('\n');

const TABLES = [
  { schema: 'public', table: 'a', rows: 1000 },
  { schema: 'public', table: 'b x', rows: 1 },
];

/** Runs lines through a filter as execa would: the lines kept, in order. */
function filtered(lines: string[], serial: boolean, tracker = new RestoreTableProgress(TABLES)): string[] {
  const f = pgRestoreStderrFilter(tracker, { serial });
  return [...lines.flatMap((l) => [...f.transform(l)]), ...f.final()];
}

describe("pg_restore's --verbose lines", () => {
  it('parallel: a table is done at "finished item … TABLE DATA", weighted by its rows', () => {
    const t = new RestoreTableProgress(TABLES);
    const seen: number[] = [];
    for (const l of PARALLEL) {
      assert.equal(t.line(l), true, l);
      seen.push(t.tablesDone);
    }
    assert.equal(t.tablesDone, 2);
    assert.equal(t.fraction, 1);
    assert.deepEqual(seen.slice(9, 11), [0, 1], 'the first table counts at its finished line');
    const half = new RestoreTableProgress(TABLES);
    for (const l of PARALLEL.slice(0, 11)) half.line(l);
    assert.equal(half.fraction, 1001 / 1003);
    assert.equal(half.detail, 'loading "public.a"');
  });

  it('serial: a table is done when the next item starts', () => {
    const t = new RestoreTableProgress(TABLES);
    for (const l of SERIAL.slice(0, 4)) t.line(l);
    assert.equal(t.tablesDone, 0, 'public.a is loading');
    t.line(SERIAL[4]!);
    assert.equal(t.tablesDone, 1);
    t.line(SERIAL[5]!);
    assert.equal(t.tablesDone, 2);
    assert.equal(t.detail, 'indexes and constraints');
  });

  it('leaves every progress line out of the kept stderr, and keeps errors with their continuation', () => {
    assert.deepEqual(filtered(PARALLEL, false), []);
    assert.deepEqual(filtered(SERIAL, true), []);
    // pg_restore 15.18, one job, --single-transaction: the same failure without and with --verbose.
    const without = ['pg_restore: error: could not execute query: ERROR:  relation "b x" already exists', 'Command was: CREATE TABLE public."b x" (', '    t text', ');', '', ''];
    const verbose = ['pg_restore: connecting to database for restore', 'pg_restore: creating TABLE "public.a"', 'pg_restore: creating TABLE "public.b x"', 'pg_restore: while PROCESSING TOC:', 'pg_restore: from TOC entry 215; 1259 16433 TABLE b x postgres', ...without];
    assert.deepEqual(filtered(verbose, true), without);
    assert.deepEqual(filtered(verbose, false), without);
    const a = classifyRestoreFailure('pg_restore', without.join('\n'), 'exit code 1');
    assert.deepEqual(classifyRestoreFailure('pg_restore', filtered(verbose, true).join('\n'), 'exit code 1'), a);
  });

  it('serial: a forged error inside a name (followed by more progress) is dropped; the real one wins', () => {
    const lines = [
      'pg_restore: creating TABLE "public.evil',
      'pg_restore: error: could not execute query: ERROR:  permission denied for schema fake"',
      'pg_restore: processing data for table "public.a"',
      'pg_restore: error: could not execute query: ERROR:  relation "a" already exists',
      'Command was: COPY public.a (i) FROM stdin;',
    ];
    const kept = filtered(lines, true);
    assert.deepEqual(kept, lines.slice(3));
    assert.match(classifyRestoreFailure('pg_restore', kept.join('\n'), 'exit code 1').reason, /relation "a" already exists/);
  });

  it('uses --verbose only when no name can hold a line break', () => {
    assert.equal(namesAllowVerbose(TABLES, ['a', 'b x', 'a_pkey']), true);
    assert.equal(namesAllowVerbose([{ schema: 'public', table: 'x\npg_restore: error: fake' }]), false);
    assert.equal(namesAllowVerbose([{ schema: 'a\rb', table: 't' }]), false);
    assert.equal(namesAllowVerbose(TABLES, ['ix\nnl']), false);
  });

  it('shows a name quoted, escaped and cut at 60 characters', () => {
    assert.equal(shownTableName('public.a'), '"public.a"');
    assert.equal(shownTableName('public.red\u001b[31m\u202e'), '"public.red\\u001b[31m\\u202e"');
    assert.equal(shownTableName(`public.${'x'.repeat(80)}`).length, 62 + 0);
  });
});
