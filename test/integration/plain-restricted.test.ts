// Nothing in a plain (SQL) backup executes on our side (issue 24, item 1). psql gets every
// backup's SQL in restricted mode (`\restrict <random key>` first), and only after the whole
// object matched its manifest: restore, verify --level schema and drill, from the CLI, against
// the real PostgreSQL. The hostile backups are our own dumps rewritten with the manifest's
// sha256 made to match, so that only the SQL itself can stop them.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, open, readdir, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { describe, it, before, after } from 'node:test';
import { execFileSync } from 'node:child_process';
import { cli, createDatabase, dbUrl, realPgBin, root, s3Env, sql } from '../helpers.ts';
import { entries, insertAt, markerDir, plainBackup, removeAll, restoreOriginal, rewriteSql, withoutDumpRestrict, type PlainBackup, type Position } from '../plain-backup-fixture.ts';
import { lastLine } from '../reliability.ts';

/** The psql meta-commands that would act on this machine, each as the line(s) to insert; the last line is the meta-command. */
function hostile(marker: string, include: string): { name: string; lines: string }[] {
  return [
    { name: '\\!', lines: `\\! touch ${marker}/bang` },
    { name: '\\o |', lines: `\\o |touch ${marker}/o` },
    { name: '\\g |', lines: `SELECT 1 \\g |touch ${marker}/g` },
    { name: '\\copy … program', lines: `\\copy (SELECT 1) TO PROGRAM 'touch ${marker}/copy'` },
    { name: '\\setenv', lines: `\\setenv PAGER 'touch ${marker}/setenv'` },
    { name: '\\lo_export', lines: `SELECT lo_from_bytea(424242, 'x'::bytea);\n\\lo_export 424242 '${marker}/lo'` },
    { name: '\\i', lines: `\\i ${include}` },
  ];
}

/** The line of psql's input the meta-command is on: the SQL's line, plus our `\restrict` line first. */
function psqlLine(text: string, lines: string): number {
  const at = text.indexOf(lines) + lines.lastIndexOf('\n') + 1;
  return text.slice(0, at).split('\n').length + 1;
}

/** Whether a database is as a fresh empty one: no relation, no large object. */
async function untouched(db: string): Promise<boolean> {
  const [r] = await sql<{ rels: string; los: string }>(db, `SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace) AS rels, (SELECT count(*) FROM pg_largeobject_metadata) AS los`);
  return r!.rels === '0' && r!.los === '0';
}

let work: string;
let marker: string;
let includeDir: string;
let include: string;
const env = () => ({ PG_BACKUP_WORK_DIR: work });

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pgb-h1-work-'));
  await chmod(work, 0o755); // the throwaway cluster may run as another OS user
  marker = await markerDir();
  includeDir = await mkdtemp(path.join(os.tmpdir(), 'pgb-h1-include-'));
  include = path.join(includeDir, 'evil.sql');
  await writeFile(include, `\\! touch ${marker}/included\n`);
});
after(() => removeAll(work, marker, includeDir));

/** After every run: nothing on this machine changed, nothing left in the work dir. */
async function assertNoSideEffect(what: string): Promise<void> {
  assert.deepEqual(await entries(marker), [], `${what}: a meta-command ran`);
  assert.deepEqual(await readdir(work), [], `${what}: a spool or cluster directory was left in the work dir`);
}

for (const size of ['small', 'large'] as const) {
  describe(`a ${size} plain backup with a psql meta-command`, () => {
    let backup: PlainBackup;
    before(async () => {
      backup = await plainBackup(`h1${size}`, size === 'large' ? 3 : 0);
      if (size === 'large') assert.ok(backup.sql.length > 4 * 1024 * 1024, 'the large SQL is several MB, beyond the 256 KiB hold-back');
    });
    after(() => removeAll(fileURLToPath(backup.location)));

    for (const position of ['start', 'middle', 'end'] as Position[]) {
      it(`restore refuses each meta-command at the ${position}: nothing runs here, exit 1, target unchanged`, async () => {
        for (const h of hostile(marker, include)) {
          const text = insertAt(withoutDumpRestrict(backup.sql), position, h.lines);
          await rewriteSql(backup, text);
          const target = await createDatabase('h1target', false);
          const r = await cli(['restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)], env());
          assert.equal(r.code, 1, `${h.name}: ${r.stderr}`);
          const line = lastLine(r.stderr);
          assert.match(line, /restore failed and was rolled back, .* is as it was \(cause: the backup archive\): the SQL holds a psql meta-command \(line (\d+) of psql's input\)/, h.name);
          assert.equal(Number(/line (\d+) of psql's input/.exec(line)![1]), psqlLine(text, h.lines), `${h.name}: psql stopped at the meta-command's line`);
          assert.equal(r.stderr.trim().split('\n').filter((l) => /meta-command/.test(l)).length, 1, 'one line names it');
          assert.doesNotMatch(r.stderr, /restrict [0-9a-f]{64}/, 'the restricted-mode key is never printed');
          assert.ok(await untouched(target), `${h.name}: the target is unchanged`);
          await assertNoSideEffect(`restore ${h.name} at the ${position}`);
        }
      });
    }
  });
}

describe('verify --level schema and drill of plain backups with a psql meta-command', () => {
  let small: PlainBackup;
  let large: PlainBackup;
  before(async () => {
    small = await plainBackup('h1vsmall');
    large = await plainBackup('h1vlarge', 3);
  });
  after(() => removeAll(fileURLToPath(small.location), fileURLToPath(large.location)));

  // Each meta-command once per command, small and large and the three positions in turn.
  const cases = hostile('M', 'I').map((h, i) => ({ index: i, name: h.name, size: i % 2 === 0 ? 'small' : 'large', position: (['start', 'middle', 'end'] as Position[])[i % 3]! }));
  for (const command of ['verify', 'drill'] as const) {
    it(`${command} refuses each meta-command (small and large, start, middle and end): nothing runs here, exit 1`, async () => {
      for (const c of cases) {
        const h = hostile(marker, include)[c.index]!;
        const backup = c.size === 'small' ? small : large;
        const text = insertAt(withoutDumpRestrict(backup.sql), c.position, h.lines);
        await rewriteSql(backup, text);
        const args = command === 'verify' ? ['verify', '--from', backup.location, '--backup', backup.objectKey, '--level', 'schema'] : ['drill', '--from', backup.location, '--backup', backup.objectKey];
        const r = await cli(args, env());
        assert.equal(r.code, 1, `${c.name} (${c.size}, ${c.position}): ${r.stderr}`);
        assert.match(lastLine(r.stderr), /the SQL holds a psql meta-command \(line \d+ of psql's input\) that restricted mode refused, so nothing of it ran here/, `${c.name} (${c.size}, ${c.position})`);
        await assertNoSideEffect(`${command} ${c.name} (${c.size}, ${c.position})`);
      }
    });
  }
});

describe('plain SQL that reaches psql only once it matched its manifest', () => {
  let backup: PlainBackup;
  before(async () => {
    backup = await plainBackup('h1gate', 3);
  });
  after(() => removeAll(fileURLToPath(backup.location)));

  it('a large object whose sha256 does not match is never replayed: COPY … TO PROGRAM does not run, exit 1, target unchanged', async () => {
    const text = insertAt(withoutDumpRestrict(backup.sql), 'start', `COPY (SELECT 1) TO PROGRAM 'touch ${marker}/program';`);
    await rewriteSql(backup, text, false);
    const target = await createDatabase('h1target', false);
    const r = await cli(['restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)], env());
    assert.equal(r.code, 1, r.stderr);
    assert.match(lastLine(r.stderr), /restore refused, nothing was changed in .* \(cause: the backup archive\): size mismatch: .*sha256 mismatch: .*none of its SQL was run/);
    assert.ok(await untouched(target));
    const v = await cli(['verify', '--from', backup.location, '--backup', backup.objectKey, '--level', 'schema'], env());
    assert.equal(v.code, 1, v.stderr);
    assert.match(v.stderr, /sha256 mismatch/);
    await assertNoSideEffect('sha256 mismatch');
  });

  it('an "\\unrestrict <guess>" of the backup does not help it (pg_dump\'s own lines kept)', async () => {
    const key = /^\\restrict ([A-Za-z0-9]+)$/m.exec(backup.sql)![1]!;
    const lines = `\\unrestrict ${key}\n\\! touch ${marker}/guess`;
    const text = insertAt(backup.sql, 'middle', lines);
    await rewriteSql(backup, text);
    const target = await createDatabase('h1target', false);
    const r = await cli(['restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)], env());
    assert.equal(r.code, 1, r.stderr);
    assert.match(lastLine(r.stderr), /cause: the backup archive\): the SQL holds a psql meta-command/);
    assert.ok(await untouched(target));
    await assertNoSideEffect('\\unrestrict guess');
  });

  it('an "\\unrestrict" whose argument psql would expand (backquotes) is refused before psql starts', async () => {
    const text = insertAt(withoutDumpRestrict(backup.sql), 'middle', `\\unrestrict \`touch ${marker}/backquote\``);
    await rewriteSql(backup, text);
    const target = await createDatabase('h1target', false);
    const r = await cli(['restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)], env());
    assert.equal(r.code, 1, r.stderr);
    assert.match(lastLine(r.stderr), /restore refused, nothing was changed .*\(cause: the backup archive\): the SQL holds a psql "\\unrestrict" with an argument psql would expand/);
    assert.ok(await untouched(target));
    const d = await cli(['drill', '--from', backup.location, '--backup', backup.objectKey], env());
    assert.equal(d.code, 1, d.stderr);
    assert.match(d.stderr, /"\\unrestrict" with an argument psql would expand/);
    await assertNoSideEffect('\\unrestrict `…`');
  });

  it('a normal plain backup made by our dump (with pg_dump\'s own \\restrict lines) restores, verifies and drills', async () => {
    await restoreOriginal(backup);
    assert.match(backup.sql, /^\\restrict [A-Za-z0-9]+$/m, "pg_dump wrote its own \\restrict line");
    assert.match(backup.sql, /^\\unrestrict [A-Za-z0-9]+$/m, "pg_dump wrote its own \\unrestrict line");
    assert.match(backup.sql, /^\\rstrict starts/m, 'a COPY line begins with \\r (a carriage return)');
    const target = await createDatabase('h1target', false);
    const r = await cli(['restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)], env());
    assert.equal(r.code, 0, r.stderr);
    const q = `SELECT id, body FROM quirks ORDER BY id`;
    assert.deepEqual(await sql(target, q), await sql(backup.database, q));
    const count = `SELECT (SELECT count(*) FROM big) AS big, (SELECT count(*) FROM big2) AS big2, (SELECT count(*) FROM orders) AS orders`;
    assert.deepEqual(await sql(target, count), await sql(backup.database, count));
    const v = await cli(['verify', '--from', backup.location, '--backup', backup.objectKey, '--level', 'schema'], env());
    assert.equal(v.code, 0, v.stderr);
    const d = await cli(['drill', '--from', backup.location, '--backup', backup.objectKey], env());
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stderr, /restore drill OK/);
    await assertNoSideEffect('normal plain backup');
  });

  it('a psql without restricted mode is refused for plain backups in one line, exit 2, before anything is written', async (t) => {
    const real = await realPgBin();
    const bin = await mkdtemp(path.join(os.tmpdir(), 'pgb-oldpsql-'));
    t.after(() => removeAll(bin));
    for (const p of ['pg_dump', 'pg_restore', 'initdb', 'pg_ctl', 'postgres']) await symlink(path.join(real, p), path.join(bin, p));
    await writeFile(path.join(bin, 'psql'), `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "psql (PostgreSQL) 15.13"; exit 0; fi\nexec ${real}/psql "$@"\n`);
    await chmod(path.join(bin, 'psql'), 0o755);
    const target = await createDatabase('h1target', false);
    for (const args of [
      ['restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)],
      ['verify', '--from', backup.location, '--backup', backup.objectKey, '--level', 'schema'],
      ['drill', '--from', backup.location, '--backup', backup.objectKey],
    ]) {
      const r = await cli(args, { ...env(), PG_BIN_DIR: bin });
      assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
      assert.match(lastLine(r.stderr), /psql 15\.13 .*lacks restricted mode \(\\restrict\).*install a newer postgresql-client \(15\.14 or newer\)/, args[0]);
    }
    assert.ok(await untouched(target));
    await assertNoSideEffect('old psql');
  });

  it('SIGTERM while a large plain backup is being spooled: exit 143, the spool directory is removed, target unchanged', async (t) => {
    // The object is a FIFO that this test feeds: the first 2 MB, then nothing (a store that stalls).
    await restoreOriginal(backup);
    const whole = backup.original.object;
    await unlink(backup.objectFile);
    execFileSync('mkfifo', [backup.objectFile]);
    t.after(async () => {
      await unlink(backup.objectFile).catch(() => undefined);
      await restoreOriginal(backup);
    });
    const target = await createDatabase('h1target', false);
    const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'restore', '--from', backup.location, '--backup', backup.objectKey, '--target-url', dbUrl(target)], {
      env: { ...process.env, ...s3Env(), DATABASE_URL: undefined, ...env() },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const fifo = await open(backup.objectFile, 'w');
    try {
      // Compressed, the large SQL is small: feed the object's first part (zstd decompresses it into several MB).
      await fifo.write(whole.subarray(0, Math.floor(whole.length * 0.8)));
      // The spool directory appears once more than 256 KiB of SQL arrived, and stays while the store stalls.
      let spool: string | undefined;
      while (!spool) {
        spool = (await readdir(work)).find((n) => n.startsWith('pg-backup-sql-'));
        if (child.exitCode !== null) assert.fail(`the restore ended before it spooled: ${stderr}`);
        if (!spool) await sleep(100);
      }
      // Private while it exists: the directory 0700, the file 0600.
      assert.equal((await stat(path.join(work, spool))).mode & 0o777, 0o700);
      assert.equal((await stat(path.join(work, spool, 'dump.sql'))).mode & 0o777, 0o600);
      child.kill('SIGTERM');
      // The cleanup runs on the signal (the spool directory goes); the process itself exits once
      // its read of the FIFO returns, which needs the writer closed (a blocked read cannot be
      // cancelled): close it only after the cleanup, so that the signal, not an EOF, ends the run.
      while ((await readdir(work)).includes(spool)) {
        if (child.exitCode !== null) break;
        await sleep(100);
      }
    } finally {
      await fifo.close();
    }
    assert.equal(await exited, 143, stderr);
    assert.ok(await untouched(target));
    await assertNoSideEffect('SIGTERM while spooling');
  });
});
