// Retention and listing with damaged backups, on real dumps (file:// and Ceph RGW): a backup whose
// dump object is missing or truncated, whose manifest is not JSON, or whose recorded verify FAILED
// is marked by `list` and never counted as a keeper by `prune`; `latest` refuses a location of
// several databases; `verify --level none` confirms the objects are stored with their sizes; a
// file:// location that does not exist is a usage error.
import assert from 'node:assert/strict';
import { readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dump, type DumpOptions, type DumpResult } from '../../src/commands/dump.ts';
import { list } from '../../src/commands/list.ts';
import { prune } from '../../src/commands/prune.ts';
import { verify } from '../../src/commands/verify.ts';
import { UsageError } from '../../src/errors.ts';
import { cli, createDatabase, dbUrl, s3Env, s3Get, s3Keys, s3Location, s3Put, sql } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

Object.assign(process.env, s3Env());
const HOUR = 3_600_000;
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };
const ago = (h: number) => new Date(Date.now() - h * HOUR);

/** A small real database (one table of 200 rows). */
async function smallDb(label: string): Promise<string> {
  const db = await createDatabase(label, false);
  await sql(db, 'CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200) g;');
  return db;
}

/** A real backup of `db` dated `hoursAgo` hours back. */
function backupAt(db: string, to: string, hoursAgo: number, extra: Partial<DumpOptions> = {}): Promise<DumpResult> {
  return dump({ databaseUrl: dbUrl(db), to, logger: quiet, now: () => ago(hoursAgo), ...extra });
}

const root = (to: string) => fileURLToPath(to);
const statusOf = async (to: string) => new Map((await list({ from: to })).map((b) => [b.id, b]));

/** Every key under a file:// or s3:// location, sorted. */
async function keysOf(to: string): Promise<string[]> {
  if (to.startsWith('s3://')) return (await s3Keys(to)).sort();
  const out: string[] = [];
  for (const e of await readdir(root(to), { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.relative(root(to), path.join(e.parentPath, e.name)));
  return out.sort();
}

describe('retention never keeps a broken backup in place of a restorable one', () => {
  it('the newest backup lost its dump object: list marks it MISSING, verify --level none fails, prune keeps the restorable one', { timeout: 180_000 }, async () => {
    const db = await smallDb('dmgmissing');
    const to = await tempLocation();
    const good = await backupAt(db, to, 48);
    const gone = await backupAt(db, to, 24);
    await rm(path.join(root(to), gone.objectKey));

    const listed = await cli(['list', '--from', to, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const json = JSON.parse(listed.stdout) as { id: string; status: string; problem?: string }[];
    assert.deepEqual(json.map((b) => [b.id, b.status]), [[gone.manifest.id, 'missing'], [good.manifest.id, 'ok']]);
    assert.match(json[0]!.problem!, /the dump object file:\/\/.* is missing/);
    const human = await cli(['list', '--from', to]);
    assert.match(human.stdout.split("\n")[0]!, /^STARTED \(UTC\) +SIZE +STATUS +SERVICE\/ENVIRONMENT\/DATABASE +RUN +KEY$/);
    assert.match(human.stdout.split('\n')[1]!, / MISSING .* default\/default\//);
    assert.match(human.stdout.split('\n')[2]!, / OK /);
    assert.match(human.stderr, /^MISSING: .*: the dump object .* is missing$/m);

    const none = await cli(['verify', '--from', to, '--level', 'none']);
    assert.equal(none.code, 1, none.stderr);
    assert.match(none.stderr, /verify failed: the dump object file:\/\/.*\.dump\.zst is missing/);

    const pruned = await cli(['prune', '--from', to, '--keep-last', '1', '--keep-proven', '0', '--apply']);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.match(pruned.stdout, new RegExp(`keep .*/${good.manifest.id}  last 1`));
    assert.match(pruned.stdout, /keep .*NOT RESTORABLE \(missing: .*\), never counted as a keeper; kept for inspection: newer than every restorable backup/);
    const left = await keysOf(to);
    assert.ok(left.includes(good.objectKey) && left.includes(good.manifestKey), 'the only restorable backup survives');

    // A newer restorable backup supersedes both: the broken one goes with the rest.
    const fresh = await backupAt(db, to, 1);
    const after = await prune({ from: to, keepLast: 1, keepProven: 0, apply: true, logger: quiet });
    assert.equal(after.ok, true, after.reason);
    assert.equal(after.counts.notRestorable, 1);
    assert.deepEqual(await keysOf(to), [fresh.objectKey, fresh.manifestKey].sort());
  });

  it('a truncated object and a manifest that is not JSON are DAMAGED and never keepers', { timeout: 180_000 }, async () => {
    const db = await smallDb('dmgtrunc');
    const to = await tempLocation();
    const good = await backupAt(db, to, 72);
    const cut = await backupAt(db, to, 48);
    const notJson = await backupAt(db, to, 24);
    await truncate(path.join(root(to), cut.objectKey), Math.floor(cut.manifest.object.sizeBytes / 2));
    await writeFile(path.join(root(to), notJson.manifestKey), '{"manifestVersion": 1, "id": ');

    const byId = await statusOf(to);
    assert.equal(byId.get(good.manifest.id)!.status, 'ok');
    assert.equal(byId.get(cut.manifest.id)!.status, 'damaged');
    assert.match(byId.get(cut.manifest.id)!.problem!, new RegExp(`is ${Math.floor(cut.manifest.object.sizeBytes / 2)} bytes, the manifest says ${cut.manifest.object.sizeBytes} \\(truncated or replaced\\)`));
    assert.equal(byId.get(notJson.manifest.id)!.status, 'damaged');
    assert.match(byId.get(notJson.manifest.id)!.problem!, /is not valid JSON/);

    const truncated = await verify({ from: to, backup: cut.objectKey, level: 'none', logger: quiet });
    assert.equal(truncated.ok, false);
    assert.match(truncated.reason!, /the manifest says \d+ \(truncated or replaced\)/);

    const plan = await prune({ from: to, keepLast: 1, keepProven: 0, logger: quiet });
    const fate = new Map(plan.plan.groups[0]!.backups.map((b) => [b.id, b]));
    assert.equal(fate.get(good.manifest.id)!.action, 'keep');
    assert.deepEqual(fate.get(good.manifest.id)!.reasons, ['last 1']);
    for (const broken of [cut, notJson]) {
      assert.equal(fate.get(broken.manifest.id)!.status, 'damaged');
      assert.ok(!fate.get(broken.manifest.id)!.reasons.some((r) => /^last /.test(r)), 'never a keeper');
    }
  });

  it('a backup whose recorded verify FAILED does not take the slot of a good never-verified one', { timeout: 180_000 }, async () => {
    const db = await smallDb('dmgverify');
    const to = await tempLocation();
    const good = await backupAt(db, to, 48);
    const bad = await backupAt(db, to, 24);
    const file = path.join(root(to), bad.objectKey);
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff; // same size, other bytes
    await writeFile(file, bytes);
    const recorded = await cli(['verify', '--from', to, '--backup', bad.objectKey, '--level', 'checksum', '--record']);
    assert.equal(recorded.code, 1, recorded.stderr);

    const json = JSON.parse((await cli(['list', '--from', to, '--json'])).stdout) as { id: string; status: string; problem?: string }[];
    assert.deepEqual(json.map((b) => [b.id, b.status]), [[bad.manifest.id, 'verify-failed'], [good.manifest.id, 'ok']]);
    assert.match(json[0]!.problem!, /^verify \(checksum\) FAILED at .*: .*sha256/);

    const pruned = await cli(['prune', '--from', to, '--keep-last', '1', '--keep-proven', '0', '--apply', '--json']);
    assert.equal(pruned.code, 0, pruned.stderr);
    const backups = JSON.parse(pruned.stdout).plan.groups[0].backups as { id: string; action: string; reasons: string[] }[];
    assert.deepEqual(backups.find((b) => b.id === good.manifest.id)!.reasons, ['last 1']);
    assert.ok((await keysOf(to)).includes(good.objectKey), 'the good, never-verified backup is kept');
  });

  it('a group with no restorable backup is refused: nothing deleted, exit 1', { timeout: 120_000 }, async () => {
    const db = await smallDb('dmgall');
    const to = await tempLocation();
    const a = await backupAt(db, to, 48);
    const b = await backupAt(db, to, 24);
    await rm(path.join(root(to), a.objectKey));
    await writeFile(path.join(root(to), b.manifestKey), 'not json');
    const before = await keysOf(to);
    const r = await cli(['prune', '--from', to, '--keep-last', '1', '--apply']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /prune failed: prune refused for default\/default\/dmgall_\w+: no restorable backup in this group: all 2 complete backup\(s\) are not restorable \(the newest is damaged: manifest .* is not valid JSON\), nothing is deleted here/);
    assert.deepEqual(await keysOf(to), before);
  });

  it('S3: a missing and a truncated dump object are marked, and verify --level none fails on them', { timeout: 180_000 }, async () => {
    const db = await smallDb('dmgs3');
    const to = s3Location('dmgs3');
    const good = await backupAt(db, to, 72);
    const cut = await backupAt(db, to, 48);
    const gone = await backupAt(db, to, 24);
    await s3Put(to, cut.objectKey, (await s3Get(to, cut.objectKey)).subarray(0, 100));
    await s3Put(to, gone.objectKey, undefined);
    const byId = await statusOf(to);
    assert.deepEqual([good, cut, gone].map((b) => byId.get(b.manifest.id)!.status), ['ok', 'damaged', 'missing']);
    const latest = await cli(['verify', '--from', to, '--level', 'none']);
    assert.equal(latest.code, 1, latest.stderr);
    assert.match(latest.stderr, /verify failed: the dump object s3:\/\/.* is missing/);
    const truncated = await verify({ from: to, backup: cut.manifestKey, level: 'none', logger: quiet });
    assert.match(truncated.reason!, /is 100 bytes, the manifest says \d+ \(truncated or replaced\)/);
    assert.equal((await verify({ from: to, backup: good.manifestKey, level: 'none', logger: quiet })).ok, true);
  });

  it('directory format: verify --level none fails when one file of the archive is gone', { timeout: 120_000 }, async () => {
    const db = await smallDb('dmgdir');
    const to = await tempLocation();
    const made = await backupAt(db, to, 1, { format: 'directory' });
    assert.equal((await verify({ from: to, level: 'none', logger: quiet })).ok, true);
    const files = made.manifest.files!;
    const victim = (await readdir(path.join(root(to), made.objectKey))).find((f) => f.startsWith(files.find((x) => x.name !== 'toc.dat')!.name))!;
    await rm(path.join(root(to), made.objectKey, victim));
    const r = await verify({ from: to, level: 'none', logger: quiet });
    assert.equal(r.ok, false);
    assert.match(r.reason!, new RegExp(`1 of the ${files.length} files of file://.*\\.dir are missing`));
    assert.equal((await statusOf(to)).get(made.manifest.id)!.status, 'damaged');
  });
});

describe('latest must mean one database', () => {
  it('restore, drill and verify refuse latest over several databases; a filter chooses; verify --level none checks each', { timeout: 180_000 }, async () => {
    const one = await smallDb('latestone');
    const two = await smallDb('latesttwo');
    const to = await tempLocation();
    const a = await backupAt(one, to, 2);
    const b = await backupAt(two, to, 1);
    const target = await createDatabase('latesttarget', false);
    const restore = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target)]);
    assert.equal(restore.code, 2, restore.stderr);
    const line = restore.stderr.trim();
    assert.doesNotMatch(line, /\n/);
    assert.match(line, new RegExp(`"latest" is ambiguous: file://.* holds backups of 2 databases \\((default/default/${two}, default/default/${one}|default/default/${one}, default/default/${two})\\); choose one with --database, or give --backup KEY`));
    assert.deepEqual(await sql(target, "SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'"), [{ n: 0 }], 'nothing restored');
    for (const args of [['drill', '--from', to], ['verify', '--from', to, '--level', 'checksum']]) {
      const r = await cli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /"latest" is ambiguous/);
    }
    const chosen = await cli(['restore', '--from', to, '--backup', 'latest', '--database', one, '--target-url', dbUrl(target)]);
    assert.equal(chosen.code, 0, chosen.stderr);
    assert.deepEqual(await sql(target, 'SELECT count(*)::int AS n FROM t'), [{ n: 200 }]);

    // The scheduled freshness check covers every database at the location.
    const fresh = await verify({ from: to, level: 'none', maxAge: '30h', logger: quiet });
    assert.equal(fresh.ok, true, fresh.reason);
    await rm(path.join(root(to), a.objectKey));
    const stale = await cli(['verify', '--from', to, '--level', 'none', '--max-age', '30h']);
    assert.equal(stale.code, 1, stale.stderr);
    assert.match(stale.stderr, new RegExp(`verify failed: the dump object file://.*${a.manifest.id}\\.dump\\.zst is missing`));
    assert.ok(b);
  });
});

describe('a file:// location that does not exist', () => {
  it('is a usage error for list, prune, verify, drill and restore (one line, exit 2); dump creates it', { timeout: 120_000 }, async () => {
    const missing = `${await tempLocation()}/not-here`;
    for (const args of [['list'], ['prune', '--keep-last', '1'], ['verify'], ['drill'], ['restore', '--backup', 'latest', '--target-url', dbUrl('postgres')]]) {
      const r = await cli([args[0]!, '--from', missing, ...args.slice(1)]);
      assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
      assert.equal(r.stderr.trim(), `pg-backup: ${missing} does not exist: check --from (only a dump creates its directory)`, args[0]);
    }
    await assert.rejects(verify({ from: missing, backup: 'default/default/x/2026/01/01/x-20260101T000000Z-abcdef.dump.zst', logger: quiet }), UsageError);
    const db = await smallDb('mkdirdump');
    await backupAt(db, missing, 1);
    assert.equal((await list({ from: missing })).length, 1);
  });
});
