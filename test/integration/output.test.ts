// Output a person reads at a glance: list and prune as aligned tables with a header, one size
// for a backup in both, a failure said once with its cause, the drill's log location, bucket and
// credential errors before any "dumping" line, and no internals without --verbose. Real CLI runs
// against Ceph RGW and the test PostgreSQL.
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cli, createDatabase, dbUrl, dumpWithCli, fileLocation, openMultipartUploads, s3Get, s3Keys, s3Location, s3Put } from '../helpers.ts';

/** The start offset of each header of a table's first line (headers are separated by 2+ spaces). */
function columnStarts(header: string): { name: string; start: number; end: number }[] {
  return [...header.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ name: m[0], start: m.index!, end: m.index! + m[0].length }));
}

/** Asserts every row of `lines` (table rows; heading lines skipped by `isRow`) has its cells where the header's columns are. */
function assertAligned(lines: string[], rightAligned: string[], isRow: (line: string) => boolean = () => true): void {
  const cols = columnStarts(lines[0]!);
  const rows = lines.slice(1).filter((l) => l && isRow(l));
  assert.ok(rows.length >= 2, lines.join('\n'));
  for (const row of rows) {
    for (const [i, c] of cols.entries()) {
      if (rightAligned.includes(c.name)) {
        // A right-aligned cell ends where its header ends.
        assert.notEqual(row[c.end - 1], ' ', `${c.name} ends at ${c.end} in:\n${lines.join('\n')}`);
        assert.equal(row[c.end] ?? ' ', ' ', `${c.name} ends at ${c.end} in:\n${lines.join('\n')}`);
      } else {
        assert.notEqual(row[c.start], ' ', `${c.name} starts at ${c.start} in:\n${lines.join('\n')}`);
        if (i > 0) assert.equal(row.slice(c.start - 2, c.start), '  ', `${c.name} starts at ${c.start} in:\n${lines.join('\n')}`);
      }
    }
  }
}

/** The cell of `column` in `row`, by the header's offsets (left-aligned: up to the next column). */
function cell(header: string, row: string, column: string): string {
  const cols = columnStarts(header);
  const i = cols.findIndex((c) => c.name === column);
  // A left-aligned cell starts at its header (the one before may be wider than its header: RUN);
  // a right-aligned one (SIZE) may start left of its header: from the end of the one before.
  const from = column === 'SIZE' ? (i > 0 ? cols[i - 1]!.end : 0) : cols[i]!.start;
  const to = cols[i + 1]?.start ?? row.length;
  return row.slice(from, to).trim();
}

describe('output a person reads', () => {
  it('list and prune print aligned tables with a header, and the same size for the same backup', { timeout: 180_000 }, async (t) => {
    const to = await fileLocation();
    t.after(() => rm(fileURLToPath(to), { recursive: true, force: true }));
    const small = await createDatabase('outsmall', false);
    await dumpWithCli(small, to, ['--service', 'api', '--environment', 'prod']);
    const big = await createDatabase('outbig');
    await dumpWithCli(big, to, ['--service', 'api', '--environment', 'prod']);
    await dumpWithCli(big, to, ['--service', 'api', '--environment', 'prod', '--checksum-sidecar', 'md5']);

    const list = await cli(['list', '--from', to]);
    assert.equal(list.code, 0, list.stderr);
    const lines = list.stdout.trimEnd().split('\n');
    assert.deepEqual(columnStarts(lines[0]!).map((c) => c.name), ['STARTED (UTC)', 'SIZE', 'STATUS', 'SERVICE/ENVIRONMENT/DATABASE', 'RUN', 'KEY']);
    assert.equal(lines.length, 7, 'a header, 3 backups and the globals of their 3 runs');
    assertAligned(lines, ['SIZE']);

    const prune = await cli(['prune', '--from', to, '--keep-last', '1']);
    assert.equal(prune.code, 0, prune.stderr);
    const plan = prune.stdout.trimEnd().split('\n');
    assert.deepEqual(columnStarts(plan[0]!).map((c) => c.name), ['ACTION', 'STARTED (UTC)', 'SIZE', 'BACKUP', 'WHY']);
    const isRow = (l: string) => /^(keep|delete) /.test(l);
    assertAligned(plan, ['SIZE'], isRow);

    // Each backup's size is the same in both (its archive's; the md5 sidecar and the manifest are not counted).
    const sizes = new Map<string, string>();
    for (const row of lines.slice(1)) sizes.set(cell(lines[0]!, row, 'KEY').replace(/\.(?:dump|sql)\.zst$/, ''), cell(lines[0]!, row, 'SIZE'));
    const planned = plan.filter(isRow);
    assert.equal(planned.length, 6, 'the 3 backups and the 3 runs\' globals');
    for (const row of planned) {
      const stem = cell(plan[0]!, row, 'BACKUP');
      assert.equal(cell(plan[0]!, row, 'SIZE'), sizes.get(stem), `${stem}:\n${list.stdout}\n${prune.stdout}`);
    }
  });

  it('a failing drill says its reason once, in the last line, and where its log went; a passing drill says where too', { timeout: 240_000 }, async () => {
    const db = await createDatabase('outdrill');
    const to = s3Location('outdrill');
    const { objectKey } = await dumpWithCli(db, to);
    const ok = await cli(['drill', '--from', to]);
    assert.equal(ok.code, 0, ok.stderr);
    const okLog = /^drill log: (s3:\/\/\S+\.log)$/m.exec(ok.stderr);
    assert.ok(okLog, ok.stderr);
    assert.match(ok.stderr, /^drill report: s3:\/\/\S+\.json$/m);
    assert.match((await s3Get(to, okLog[1]!.slice(to.length + 1))).toString(), /restore drill OK\n?$/);

    const bytes = await s3Get(to, objectKey);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await s3Put(to, objectKey, bytes);
    const bad = await cli(['drill', '--from', to, '--backup', objectKey]);
    assert.equal(bad.code, 1, bad.stderr);
    const last = bad.stderr.trimEnd().split('\n').at(-1)!;
    assert.match(last, /^drill failed: sha256 mismatch: /);
    const reason = last.slice('drill failed: '.length);
    assert.equal(bad.stderr.split(reason).length - 1, 1, `the reason once:\n${bad.stderr}`);
    assert.doesNotMatch(bad.stderr, /^warning: .*sha256 mismatch/m);
    const badLog = /^drill log: (s3:\/\/\S+\.log)$/m.exec(bad.stderr);
    assert.ok(badLog, bad.stderr);
    // The archived log keeps the verdict with its reason.
    assert.match((await s3Get(to, badLog[1]!.slice(to.length + 1))).toString(), new RegExp(`restore drill FAILED: ${reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  });

  it('a dump with a wrong secret or an unknown bucket fails before any "dumping" line, leaving nothing', { timeout: 120_000 }, async () => {
    const db = await createDatabase('outcreds', false);
    const to = s3Location('outcreds');
    const wrong = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db), AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.doesNotMatch(wrong.stderr, /dumping/);
    assert.match(wrong.stderr.trimEnd().split('\n').at(-1)!, /^pg-backup: S3 rejected the credentials \(SignatureDoesNotMatch\).*check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY$/);
    assert.doesNotMatch(wrong.stderr, /not-the-secret/);

    const unknown = await cli(['dump', '--to', `s3://no-such-bucket-${db.replace(/_/g, '-')}/x`], { DATABASE_URL: dbUrl(db) });
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.doesNotMatch(unknown.stderr, /dumping/);
    assert.match(unknown.stderr, /^pg-backup: bucket "no-such-bucket-[^"]+" does not exist at this endpoint/m);

    // The check leaves nothing: no object, no open multipart upload; and a good dump still works.
    const good = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db) });
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stderr, /dumping/);
    const keys = await s3Keys(to);
    assert.equal(keys.length, 4, keys.join('\n')); // the backup and the run's globals, each an object and a manifest
    assert.ok(keys.every((k) => !k.includes('.write-check-')));
    assert.deepEqual(await openMultipartUploads(to), []);
  });

  it('the demo prints no snapshot id or TOC-offset detail without --verbose', { timeout: 240_000 }, async (t) => {
    const bucket = await fileLocation();
    t.after(() => rm(fileURLToPath(bucket), { recursive: true, force: true }));
    const r = await cli(['demo', '--bucket', bucket]);
    assert.equal(r.code, 0, r.stderr);
    const all = r.stdout + r.stderr;
    assert.match(all, /demo OK/);
    assert.doesNotMatch(all, /snapshot [0-9A-F]{8}-[0-9A-F]{8}-\d+/);
    assert.doesNotMatch(all, /snapshot \S+ exported|data offsets|TOC entr/);
    // The drill log keeps the detail.
    const logUri = /drill log: (file:\S+\.log)/.exec(r.stdout)![1]!;
    assert.match(await readFile(fileURLToPath(logUri), 'utf8'), /data offsets/);
  });
});
