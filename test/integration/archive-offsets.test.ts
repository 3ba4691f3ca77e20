// writeDataOffsets on real archives written by this machine's pg_dump (15: archive 1.14): a
// piped archive gets the offsets pg_dump writes when its output is a file, its listing is
// unchanged, pg_restore --jobs 2 restores the same rows from it; damaged files are refused and
// left as they were; and a drill writes the offsets into its download and says so in its log.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, dumpWithCli, realPgBin, run, sql } from '../helpers.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';
import { OFFSET_FLAG, readArchiveToc, writeDataOffsets } from '../../src/postgres/archive-offsets.ts';

let bin: string;
let db: string;
let scratch: string;

before(async () => {
  bin = await realPgBin();
  db = await createDatabase('offsets');
  await sql(
    db,
    `CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 60000) g;
     CREATE TABLE empty_table (x int);
     CREATE TABLE wide AS SELECT g AS id, repeat(md5(g::text), 40) AS body FROM generate_series(1, 3000) g;
     SELECT lo_from_bytea(0, decode(repeat('ab', 50000), 'hex')), lo_from_bytea(0, 'small');`,
  );
  scratch = await tempDir('pgb-offsets-');
}, { timeout: 120_000 });
after(async () => rm(scratch, { recursive: true, force: true }));

/** pg_dump -Fc with `args`, through a pipe (as `pg-backup dump` runs it) or to a file. */
async function dump(name: string, piped: boolean, args: string[] = ['-Z0']): Promise<string> {
  const file = path.join(scratch, name);
  const cmd = piped ? `"$BIN/pg_dump" -Fc ${args.join(' ')} -d "$URL" | cat > "$OUT"` : `"$BIN/pg_dump" -Fc ${args.join(' ')} -d "$URL" -f "$OUT"`;
  const r = await run('bash', ['-c', `set -o pipefail; ${cmd}`], { env: { BIN: bin, URL: dbUrl(db), OUT: file } });
  assert.equal(r.code, 0, r.stderr);
  return file;
}

/** `pg_restore --list` without its header comments (which carry the archive's creation time). */
async function listing(file: string): Promise<string> {
  const r = await run(path.join(bin, 'pg_restore'), ['--list', file]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => !l.startsWith(';')).join('\n');
}

const offsetsById = async (file: string) => new Map((await readArchiveToc(file)).entries.filter((e) => e.offsetFlag !== OFFSET_FLAG.noData).map((e) => [e.dumpId, [e.offsetFlag, e.offset]]));
const sha = async (f: string) => createHash('sha256').update(await readFile(f)).digest('hex');

/** Row counts of every table in public, and the number of large objects. */
async function counts(database: string): Promise<Record<string, number>> {
  const tables = await sql<{ t: string }>(database, `SELECT relname AS t FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1`);
  const out: Record<string, number> = {};
  for (const { t } of tables) out[t] = Number((await sql<{ n: string }>(database, `SELECT count(*) AS n FROM public."${t}"`))[0]!.n);
  out['(large objects)'] = Number((await sql<{ n: string }>(database, 'SELECT count(*) AS n FROM pg_largeobject_metadata'))[0]!.n);
  return out;
}

describe('data offsets in real pg_dump archives', () => {
  for (const [label, args] of [['uncompressed (-Z0)', ['-Z0']], ['gzip inside the archive (-Z6)', ['-Z6']]] as const) {
    it(`${label}: a piped archive gets the file-dumped one's offsets and restores with --jobs 2`, { timeout: 180_000 }, async () => {
      const tag = args[0]!.replace('-', '');
      const piped = await dump(`piped-${tag}.dump`, true, [...args]);
      const fileDumped = await dump(`file-${tag}.dump`, false, [...args]);
      const listed = await listing(piped);
      const before = await offsetsById(piped);
      assert.ok([...before.values()].every(([flag]) => flag === OFFSET_FLAG.notSet), 'a piped archive has no data offsets');

      const r = await writeDataOffsets(piped);
      assert.equal(r.reason, undefined);
      assert.equal(r.patched, before.size);
      assert.ok(r.patched >= 8, `tables, sequences' data and large objects: ${r.patched}`);
      assert.deepEqual(await offsetsById(piped), await offsetsById(fileDumped));
      assert.equal(await listing(piped), listed);
      assert.equal(await listing(piped), await listing(fileDumped));

      const into = await createDatabase(`offsets_restored_${tag}`, false);
      const restored = await run(path.join(bin, 'pg_restore'), ['--jobs', '2', '--exit-on-error', '--no-owner', '-d', dbUrl(into), piped]);
      assert.equal(restored.code, 0, restored.stderr);
      assert.deepEqual(await counts(into), await counts(db));
    });
  }

  it('truncated and garbage archives are refused and left as they were', { timeout: 120_000 }, async () => {
    const piped = await dump('piped-damage.dump', true);
    const size = (await readFile(piped)).length;
    for (const at of [40, 3000, Math.floor(size / 2), size - 3]) {
      const damaged = path.join(scratch, `truncated-${at}.dump`);
      await copyFile(piped, damaged);
      await truncate(damaged, at);
      const before = await sha(damaged);
      const r = await writeDataOffsets(damaged);
      assert.equal(r.patched, 0, `truncated at ${at}`);
      assert.match(r.reason ?? '', /truncated|too short/);
      assert.equal(await sha(damaged), before);
    }
    const garbage = path.join(scratch, 'garbage.dump');
    await writeFile(garbage, createHash('sha512').update('not an archive').digest().toString('hex').repeat(100));
    const before = await sha(garbage);
    const r = await writeDataOffsets(garbage);
    assert.equal(r.patched, 0);
    assert.match(r.reason ?? '', /does not start with PGDMP/);
    assert.equal(await sha(garbage), before);
  });

  it('a drill writes the offsets into its download, logs it, and passes every check', { timeout: 240_000 }, async () => {
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const r = await cli(['drill', '--verbose', '--from', to, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true, report.reason);
    assert.ok(report.tables.length >= 7);
    const log = await readFile(fileURLToPath(report.drillLogUri), 'utf8');
    const line = /data offsets: written for (\d+) TOC entries in [\d.]+ s/;
    assert.match(log, line);
    assert.match(r.stderr, line);
    assert.ok(Number(line.exec(log)![1]) >= report.tables.length);
    assert.ok(log.indexOf('data offsets: written') < log.indexOf('download phase:'), 'the offsets are part of the download phase');
  });
});
