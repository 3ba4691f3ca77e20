// Safety dumps of `restore --clean` are kept apart from the backups (src/backup/safety.ts): under
// `safety-dumps/`, with their own retention, never counted by status, verify --max-age or the
// retention of prune. On Ceph RGW, with real dumps, a real restore --clean, and safety dumps
// dated in the past through the dump's clock (as restore takes them: into <from>/safety-dumps).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dump } from '../../src/commands/dump.ts';
import { safetyDumpLocation } from '../../src/backup/safety.ts';
import { cli, createDatabase, dbUrl, s3Env, s3Keys, s3Location, sql } from '../helpers.ts';

Object.assign(process.env, s3Env());
const HOUR = 3_600_000;
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };

describe('safety dumps kept apart (RGW)', () => {
  it('an old safety dump does not make status exit 1, prune deletes old ones and keeps young ones without refusing, a safety dump restores', { timeout: 300_000 }, async () => {
    const source = await createDatabase('safesrc');
    const target = await createDatabase('safetgt');
    await sql(target, 'CREATE TABLE live_rows (x int); INSERT INTO live_rows SELECT generate_series(1, 77)');
    const to = s3Location('safety');

    // A fresh backup of api/prod/<source>.
    const backup = await cli(['dump', '--to', to, '--service', 'api', '--environment', 'prod', '--json'], { DATABASE_URL: dbUrl(source) });
    assert.equal(backup.code, 0, backup.stderr);
    const backupKey = JSON.parse(backup.stdout).backupUri.slice(to.length + 1);

    // A real restore --clean over the non-empty target: its safety dump goes under safety-dumps/.
    const restored = await cli(['restore', '--from', to, '--backup', backupKey, '--target-url', dbUrl(target), '--clean', '--json']);
    assert.equal(restored.code, 0, restored.stderr);
    const safetyUri: string = JSON.parse(restored.stdout).safetyDump.backupUri;
    assert.ok(safetyUri.startsWith(`${to}/safety-dumps/api/prod/${target}/`), safetyUri);

    // Two older ones: 40 h old in the safety folder, and 40 days old in the layout of before (environment pre-restore).
    const old = await dump({ databaseUrl: dbUrl(target), to: safetyDumpLocation(to), service: 'api', environment: 'prod', logger: quiet, now: () => new Date(Date.now() - 40 * HOUR) });
    const legacy = await dump({ databaseUrl: dbUrl(target), to, service: 'api', environment: 'pre-restore', logger: quiet, now: () => new Date(Date.now() - 40 * 24 * HOUR) });

    // status: only api/prod/<source>, fresh: exit 0.
    const status = await cli(['status', '--from', to]);
    assert.equal(status.code, 0, status.stdout + status.stderr);
    assert.doesNotMatch(status.stdout, /pre-restore|safety|STALE/, status.stdout);
    assert.match(status.stdout, new RegExp(source));
    // verify --max-age 30h of everything in scope: the safety dumps are not the newest backups of anything.
    const fresh = await cli(['verify', '--from', to, '--level', 'none', '--max-age', '30h', '--service', 'api', '--environment', 'prod', '--database', source]);
    assert.equal(fresh.code, 0, fresh.stderr);

    // list: backups only; --safety-dumps: the three safety dumps, newest first, the restore's first.
    const listed = JSON.parse((await cli(['list', '--from', to, '--json'])).stdout);
    assert.deepEqual(listed.filter((b: { kind?: string }) => b.kind !== 'globals').map((b: { key: string }) => b.key), [backupKey]);
    const safety = await cli(['list', '--from', to, '--safety-dumps', '--json']);
    assert.equal(safety.code, 0, safety.stderr);
    const safetyListed = JSON.parse(safety.stdout);
    assert.deepEqual(safetyListed.map((b: { uri: string }) => b.uri), [safetyUri, old.backupUri, legacy.backupUri]);
    assert.ok(safetyListed.every((b: { safetyDump?: boolean; status: string }) => b.safetyDump === true && b.status === 'ok'));
    const table = await cli(['list', '--from', to, '--safety-dumps']);
    assert.match(table.stdout.split('\n')[0]!, /^STARTED \(UTC\)\s+SIZE\s+STATUS/);

    // prune --max-age 30d: no refusal (the 40-day-old legacy safety dump is no group's newest
    // backup); the safety dumps older than --keep-safety-dumps 1d go, the young one stays.
    const plan = await cli(['prune', '--from', to, '--keep-last', '1', '--max-age', '30d', '--keep-safety-dumps', '1d', '--apply', '--json']);
    assert.equal(plan.code, 0, plan.stderr);
    const result = JSON.parse(plan.stdout);
    assert.deepEqual(result.refused, []);
    assert.deepEqual(result.safetyDumps.map((b: { id: string; action: string }) => `${b.id}:${b.action}`), [
      `${legacy.manifest.id}:delete`,
      `${old.manifest.id}:delete`,
      `${JSON.parse(restored.stdout).safetyDump.backupUri.split('/').at(-1).replace(/\.dump\.zst$/, '')}:keep`,
    ]);
    const keys = await s3Keys(to);
    assert.ok(keys.includes(backupKey), 'the backup stays');
    assert.ok(!keys.some((k) => k.includes('/pre-restore/')), keys.join('\n'));
    assert.ok(!keys.some((k) => k.includes(old.manifest.id)), keys.join('\n'));
    assert.ok(keys.some((k) => safetyUri.endsWith(k)), 'the young safety dump stays');
    // The default (14 days) keeps the young one too.
    const again = JSON.parse((await cli(['prune', '--from', to, '--keep-last', '1', '--json'])).stdout);
    assert.deepEqual(again.safetyDumps.map((b: { action: string }) => b.action), ['keep']);

    // A safety dump restores, by its URI, as any backup: the target's rows from before the restore.
    const back = await createDatabase('safeback', false);
    const fromSafety = await cli(['restore', '--from', to, '--backup', safetyUri, '--target-url', dbUrl(back)]);
    assert.equal(fromSafety.code, 0, fromSafety.stderr);
    assert.equal((await sql<{ n: string }>(back, 'SELECT count(*)::text AS n FROM live_rows'))[0]!.n, '77');
  });
});
