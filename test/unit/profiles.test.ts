import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PROFILES, PROFILE_NAMES, detectPlatform, findProfile, isPlatformRole, resolveDumpProfile, resolveRestoreProfile } from '../../src/postgres/profiles.ts';
import { patternFor, unreadableMessage } from '../../src/postgres/readable.ts';
import { UsageError } from '../../src/errors.ts';
import { platformOwnerHint, refusedMessage, skipPlatformExtensions, writeSkipList } from '../../src/postgres/managed-target.ts';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

describe('profiles', () => {
  it('every profile cites an https source, gives its restore defaults a reason and has valid role patterns', () => {
    for (const name of PROFILE_NAMES) {
      const p = PROFILES[name];
      assert.equal(p.name, name);
      assert.ok(p.sources.length > 0 && p.sources.every((s) => s.startsWith('https://')), name);
      assert.ok(p.restore.why.length > 20, name);
      for (const r of p.platformRoles) assert.doesNotThrow(() => new RegExp(r), r);
    }
  });

  it('finds a profile by name, case-insensitively; an unknown one is a usage error listing the known', () => {
    assert.equal(findProfile(' Supabase ')?.name, 'supabase');
    assert.equal(findProfile(''), undefined);
    assert.equal(findProfile(undefined), undefined);
    assert.throws(() => findProfile('heroku'), (e: Error) => e instanceof UsageError && /unknown profile "heroku": use one of supabase, neon, rds, cloudsql, azure/.test(e.message));
  });

  it('supabase: the CLI\'s platform schemas are excluded, auth and storage are kept, an explicit --schema wins', () => {
    const r = resolveDumpProfile(PROFILES.supabase, { excludeSchemas: ['audit'] });
    assert.equal(r.excludeSchemas[0], 'audit');
    for (const s of ['graphql', 'vault', 'pgsodium', 'realtime', '_realtime']) assert.ok(r.excludeSchemas.includes(s), s);
    for (const s of ['auth', 'storage', 'public', 'supabase_migrations', 'extensions']) assert.ok(!r.excludeSchemas.includes(s), s);
    const explicit = resolveDumpProfile(PROFILES.supabase, { schemas: ['realtime'] });
    assert.ok(!explicit.excludeSchemas.includes('realtime'));
    assert.ok(!explicit.fromProfile.includes('realtime'));
    assert.deepEqual(resolveDumpProfile(undefined, { excludeSchemas: ['x'] }), { excludeSchemas: ['x'], fromProfile: [] });
    assert.deepEqual(resolveDumpProfile(PROFILES.rds, {}).excludeSchemas, []);
  });

  it('restore defaults per platform; an explicit --owner / --no-acl wins', () => {
    assert.deepEqual(resolveRestoreProfile(undefined, {}), { noOwner: false, noAcl: false });
    const rds = resolveRestoreProfile(PROFILES.rds, {});
    assert.equal(rds.noOwner, true);
    assert.equal(rds.noAcl, false);
    assert.match(rds.note!, /^profile rds: --no-owner by default \(the master user has rds_superuser/);
    assert.deepEqual({ ...resolveRestoreProfile(PROFILES.cloudsql, {}), note: undefined }, { noOwner: true, noAcl: true, note: undefined });
    const kept = resolveRestoreProfile(PROFILES.cloudsql, { noOwner: false, noAcl: false });
    assert.equal(kept.noOwner, false);
    assert.equal(kept.noAcl, false);
    assert.match(kept.note!, /owners and grants restored/);
    assert.equal(resolveRestoreProfile(PROFILES.supabase, {}).noOwner, false);
  });

  it('platform roles match their patterns, anchored; a platform is recognised from its distinctive role', () => {
    assert.ok(isPlatformRole(PROFILES.supabase, 'supabase_auth_admin'));
    assert.ok(!isPlatformRole(PROFILES.supabase, 'my_supabase_auth_admin'));
    assert.ok(isPlatformRole(PROFILES.rds, 'rds_superuser'));
    assert.equal(detectPlatform(['app', 'rds_superuser', 'rdsadmin'])?.name, 'rds');
    assert.equal(detectPlatform(['app', 'postgres']), undefined);
  });
});

describe('unreadable objects: the message', () => {
  it('quotes names as psql patterns and for the shell, names at most five, and ends with the grant', () => {
    assert.equal(patternFor('public'), 'public');
    assert.equal(patternFor('Audit Log'), '"Audit Log"');
    assert.equal(patternFor('a"b'), '"a""b"');
    assert.equal(patternFor('x.y*'), '"x.y*"');
    const objects = Array.from({ length: 7 }, (_, i) => ({ reason: 'select' as const, kind: 'table' as const, schema: 'public', name: `t${i}` }));
    const line = unreadableMessage('backup', 'app', [{ reason: 'schema', kind: 'schema', schema: "it's" }, ...objects]);
    assert.ok(!line.includes('\n'));
    assert.match(line, /^app: role "backup" cannot read 8 objects the dump needs: schema "it's" \(no USAGE\), table "public"\."t0" \(no SELECT\), .* and 3 more; skip them with --exclude-schema '"it'\\''s"' --exclude-table public\.t0 .* --exclude-table public\.t6, or GRANT pg_read_all_data TO "backup" \(PostgreSQL 14\+; else USAGE and SELECT\); nothing was written$/);
  });
});

describe('managed targets: the -L list and the platform extensions a drill leaves out', () => {
  const list = [
    ';',
    '; Archive created at 2026-12-07 18:00:00 UTC',
    '3; 2615 16390 SCHEMA - graphql_public postgres',
    '4; 3079 16400 EXTENSION - pg_graphql ',
    '5; 0 0 COMMENT - EXTENSION pg_graphql ',
    '6; 3079 16401 EXTENSION - pgcrypto ',
    '7; 0 0 COMMENT - EXTENSION pgcrypto ',
    '8; 3079 16402 EXTENSION - mystery ',
    '210; 1259 16410 TABLE public todos postgres',
  ].join('\n');

  it('comments out only the skipped entries, order unchanged', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-list-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = await writeSkipList(list, new Set([4, 5]), dir);
    const lines = (await readFile(file, 'utf8')).split('\n');
    assert.deepEqual(lines.filter((l) => l.startsWith(';4') || l.startsWith(';5')), ['4; 3079 16400 EXTENSION - pg_graphql ', '5; 0 0 COMMENT - EXTENSION pg_graphql '].map((l) => `;${l}`));
    assert.ok(lines.includes('210; 1259 16410 TABLE public todos postgres'));
    assert.equal(lines.length, list.split('\n').length);
  });

  it('leaves out the missing extensions of the backup\'s platform only; others stay missing; without a profile or a TOC nothing is left out', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-list-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const r = await skipPlatformExtensions({ listText: list, missing: ['pg_graphql', 'mystery'], profile: PROFILES.supabase, dir });
    assert.deepEqual(r.skipped, ['pg_graphql']);
    assert.deepEqual(r.remaining, ['mystery']);
    const text = await readFile(r.listFile!, 'utf8');
    assert.match(text, /^;4; .*pg_graphql/m);
    assert.match(text, /^;5; .*EXTENSION pg_graphql/m);
    assert.match(text, /^6; .*pgcrypto/m);
    assert.deepEqual(await skipPlatformExtensions({ listText: list, missing: ['pg_graphql'], profile: undefined, dir }), { skipped: [], remaining: ['pg_graphql'] });
    assert.deepEqual(await skipPlatformExtensions({ listText: undefined, missing: ['pg_graphql'], profile: PROFILES.supabase, dir }), { skipped: [], remaining: ['pg_graphql'] });
  });

  it('names a platform\'s roles among the backup\'s owners, unless ownership is not restored', () => {
    const toc = [{ dumpId: 1, desc: 'TABLE', schema: 'public', name: 'x', owner: 'supabase_admin' }, { dumpId: 2, desc: 'TABLE', schema: 'public', name: 'y', owner: 'app' }];
    assert.match(platformOwnerHint(toc, { noOwner: false })!, /^supabase_admin is a role of Supabase, which owns objects in the backup: restore with --no-owner \(or --profile supabase when the target is Supabase\)$/);
    assert.equal(platformOwnerHint(toc, { noOwner: true }), undefined);
    assert.equal(platformOwnerHint([toc[1]!], { noOwner: false }), undefined);
  });

  it('the refusal names each entry once, at most six, and the way out', () => {
    const entry = { dumpId: 1, desc: 'EVENT TRIGGER', schema: undefined, name: 'e', owner: 'x' };
    const many = Array.from({ length: 8 }, (_, i) => ({ entry, label: `event trigger e${i}`, reason: 'creating an event trigger needs a superuser' }));
    assert.match(refusedMessage(many), /^the target refuses 8 entries of the backup: event trigger e0 \(creating an event trigger needs a superuser\), .*event trigger e5 \(.*\) and 2 more; pass --skip-refused to restore everything else without them \(still in one transaction\), or restore as a superuser$/);
  });
});
