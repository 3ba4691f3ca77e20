import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { dump } from '../../src/commands/dump.ts';
import { stderrLogger } from '../../src/log.ts';
import { cli, createDatabase, dbUrl, dumpWithCli, realPgBin, s3Location, sql } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

const quiet = stderrLogger(true);
const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000);

/** Takes a real backup whose key and manifest carry the given start time. */
async function dumpAt(database: string, to: string, at: Date): Promise<void> {
  await dump({ databaseUrl: dbUrl(database), to, logger: quiet, now: () => at });
}

describe('verify levels', () => {
  it('checksum passes a consistent but unreadable archive that archive catches', async () => {
    const db = await createDatabase('levels');
    const to = await tempLocation();
    const { objectKey, manifestKey, manifest } = await dumpWithCli(db, to, ['--compression', 'none']);
    const root = to.replace('file://', '');
    const bytes = (await readFile(path.join(root, objectKey))).subarray(0, Math.floor(manifest.object.sizeBytes * 0.6));
    await writeFile(path.join(root, objectKey), bytes);
    const m = JSON.parse(await readFile(path.join(root, manifestKey), 'utf8'));
    m.object.sizeBytes = bytes.length;
    m.object.sha256 = createHash('sha256').update(bytes).digest('hex');
    await writeFile(path.join(root, manifestKey), JSON.stringify(m));
    assert.equal((await cli(['verify', '--from', to, '--level', 'checksum'])).code, 0);
    const archive = await cli(['verify', '--from', to, '--level', 'archive']);
    assert.equal(archive.code, 1);
    assert.match(archive.stderr, /archive unreadable/);
  });

  it('schema replays into a throwaway PostgreSQL and fails when the schema does not replay', async () => {
    const db = await createDatabase('schema');
    const to = s3Location('schema');
    await dumpWithCli(db, to);
    const ok = await cli(['verify', '--from', to, '--level', 'schema', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /the schema replays into PostgreSQL/);

    // A backup that needs an extension the server no longer has: readable, but the schema does not replay.
    const share = path.join((await realPgBin()).replace(/\/lib\/postgresql\/(\d+)\/bin$/, '/share/postgresql/$1'), 'extension');
    const name = `pgb_schema_ext_${process.pid}`;
    const bad = await tempLocation();
    await writeFile(path.join(share, `${name}.control`), "default_version = '1.0'\nrelocatable = true\n");
    await writeFile(path.join(share, `${name}--1.0.sql`), 'CREATE FUNCTION pgb_schema_answer() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$;\n');
    try {
      const db2 = await createDatabase('schemaext', false);
      await sql(db2, `CREATE EXTENSION ${name}`);
      await dumpWithCli(db2, bad);
    } finally {
      await rm(path.join(share, `${name}.control`), { force: true });
      await rm(path.join(share, `${name}--1.0.sql`), { force: true });
    }
    assert.equal((await cli(['verify', '--from', bad, '--level', 'archive'])).code, 0);
    const r = await cli(['verify', '--from', bad, '--level', 'schema']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`schema replay failed: .*${name}`));
  });

  it('rejects an unknown level, exit 2', async () => {
    const r = await cli(['verify', '--from', await tempLocation(), '--level', 'deep']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown verify level "deep": use none, checksum, archive, schema/);
  });

  it('the dump verifies right after upload when asked', async () => {
    const db = await createDatabase('dumpverify');
    const r = await cli(['dump', '--to', s3Location('dumpverify'), '--verify', 'archive', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.verification.ok, true);
    assert.equal(out.verification.level, 'archive');
    assert.equal(out.verification.sha256, out.object.sha256);
  });
});

describe('freshness', () => {
  it('--max-age fails when the newest backup is overdue (BackupOverdue)', async () => {
    const db = await createDatabase('fresh', false);
    const to = await tempLocation();
    await dumpAt(db, to, hoursAgo(40));
    await dumpAt(db, to, hoursAgo(35));
    const late = await cli(['verify', '--from', to, '--level', 'none', '--max-age', '30h', '--json']);
    assert.equal(late.code, 1, late.stderr);
    const result = JSON.parse(late.stdout);
    assert.match(result.reason, new RegExp(`the newest backup of default/default/${db} is 35 h 0 min old`));
    assert.match(result.reason, /over --max-age 30h: backups are overdue/);
    assert.ok(result.newestAgeMs > 35 * 3_600_000 - 60_000);
    const fine = await cli(['verify', '--from', to, '--level', 'none', '--max-age', '48h']);
    assert.equal(fine.code, 0, fine.stderr);
  });

  it('--expect-every names the gaps in the cadence', async () => {
    const db = await createDatabase('cadence', false);
    const to = await tempLocation();
    for (const h of [30, 24, 6]) await dumpAt(db, to, hoursAgo(h));
    const r = await cli(['verify', '--from', to, '--level', 'none', '--expect-every', '6h', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.gaps.length, 1);
    assert.ok(Math.abs(result.gaps[0].durationMs - 18 * 3_600_000) < 5_000);
    assert.match(result.problems[0], new RegExp(`no backup of default/default/${db} from .* to .* \\(18 h 0 min; expected every 6h\\)`));
    const ok = await cli(['verify', '--from', to, '--level', 'none', '--expect-every', '24h']);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('no backup at all is overdue, exit 1', async () => {
    const r = await cli(['verify', '--from', await tempLocation(), '--max-age', '30h', '--service', 'api']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /no complete backup at all for api: backups are overdue/);
  });
});

describe('suspicion', () => {
  it('warns about a collapsed table and fails with --fail-on-suspicion', async () => {
    const db = await createDatabase('suspect');
    const to = await tempLocation();
    await dumpAt(db, to, hoursAgo(2));
    await sql(db, 'DELETE FROM order_items WHERE order_id > 100');
    await dumpAt(db, to, hoursAgo(1));
    const warn = await cli(['verify', '--from', to, '--json']);
    assert.equal(warn.code, 0, warn.stderr);
    assert.match(JSON.parse(warn.stdout).suspicions.join('\n'), /table public\.order_items fell from 15000 to 300 rows since the previous backup/);
    assert.match(warn.stderr, /suspicious: /);
    const fail = await cli(['verify', '--from', to, '--fail-on-suspicion']);
    assert.equal(fail.code, 1);
    assert.match(fail.stderr, /verify failed: .*fell from 15000 to 300 rows/);
  });
});
