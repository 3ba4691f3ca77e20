import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCompression, compressionSuffix } from '../../src/backup/compression.ts';
import { backupKeys, drillFolder, encodeSegment, parseManifestKey, utcStamp, validateLabel } from '../../src/backup/keys.ts';
import { parseManifest } from '../../src/backup/manifest.ts';
import { CheckFailedError, UsageError, redact, registerSecret } from '../../src/errors.ts';
import { parsePgVersion } from '../../src/postgres/binaries.ts';
import { parseDatabaseUrl, resolveConnection, nodePgConnectionString } from '../../src/postgres/connection.ts';
import { parseLocation } from '../../src/storage/location.ts';
import { choosePartSize, MIN_PART_SIZE } from '../../src/storage/s3/s3.ts';
import { assertSafeKey } from '../../src/storage/storage.ts';

describe('storage locations', () => {
  it('parses s3 and file URLs', () => {
    assert.deepEqual(parseLocation('s3://my-bucket/a/b/'), { driver: 's3', bucket: 'my-bucket', prefix: 'a/b' });
    assert.deepEqual(parseLocation('s3://my-bucket'), { driver: 's3', bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseLocation('file:///srv/backups'), { driver: 'file', root: '/srv/backups' });
  });
  for (const bad of ['', 'backups', 'http://x/y', 's3://', 's3://A_B/x', 's3://ok-bucket/../x', 'file://relative/dir', 'gs://bucket']) {
    it(`rejects ${JSON.stringify(bad)} with a usage error`, () => {
      assert.throws(() => parseLocation(bad), (e: unknown) => e instanceof UsageError && /s3:\/\/BUCKET|bucket|prefix|file/.test(e.message));
    });
  }
});

describe('key layout', () => {
  const at = new Date('2026-03-23T06:00:07.123Z');
  it('isolates service, environment and database, UTC-stamped, unique per dump', () => {
    const k = backupKeys({ service: 'api', environment: 'production', database: 'app' }, at, '.dump.zst', 'abc123');
    assert.equal(k.objectKey, 'api/production/app/2026/03/23/app-20260323T060007Z-abc123.dump.zst');
    assert.equal(k.manifestKey, 'api/production/app/2026/03/23/app-20260323T060007Z-abc123.manifest.json');
    const other = backupKeys({ service: 'api', environment: 'production', database: 'app' }, at, '.dump.zst');
    assert.notEqual(other.objectKey, k.objectKey);
  });
  it('encodes names so they can never add a path segment', () => {
    assert.equal(encodeSegment('..'), '%2E%2E');
    assert.equal(encodeSegment('a/b'), 'a%2Fb');
    assert.equal(encodeSegment('my "db" é'), 'my%20%22db%22%20%C3%A9');
    const k = backupKeys({ service: '..', environment: 'a/b', database: 'é "x"' }, at, '.dump');
    assertSafeKey(k.objectKey);
    const parsed = parseManifestKey(k.manifestKey);
    assert.deepEqual([parsed?.service, parsed?.environment, parsed?.database], ['..', 'a/b', 'é "x"']);
    assert.equal(parsed?.startedAt.toISOString(), '2026-03-23T06:00:07.000Z');
  });
  it('ignores keys that are not manifests, and drill logs', () => {
    assert.equal(parseManifestKey('api/production/app/2026/03/23/app-20260323T060007Z-abc123.dump.zst'), undefined);
    assert.equal(parseManifestKey('drills/api/production/app/2026/03/23/app-20260323T060007Z-abc123.manifest.json'), undefined);
  });
  it('names the drill folder by quarter', () => {
    assert.equal(drillFolder({ service: 's', environment: 'e', database: 'd' }, new Date('2026-11-22T00:00:00Z')), 'drills/s/e/d/2026-Q4/');
    assert.equal(drillFolder({ service: 's', environment: 'e', database: 'd' }, new Date('2026-01-01T00:00:00Z')), 'drills/s/e/d/2026-Q1/');
  });
  it('stamps in UTC', () => assert.equal(utcStamp(at), '20260323T060007Z'));
  it('rejects bad labels', () => {
    assert.throws(() => validateLabel('service', 'drills'), UsageError);
    assert.throws(() => validateLabel('environment', ''), UsageError);
    assert.throws(() => validateLabel('environment', 'a\nb'), UsageError);
  });
});

describe('compression', () => {
  it('parses algorithms and levels', () => {
    assert.deepEqual(parseCompression(undefined), { algorithm: 'zstd', level: 3 });
    assert.deepEqual(parseCompression('zstd:19'), { algorithm: 'zstd', level: 19 });
    assert.deepEqual(parseCompression('gzip'), { algorithm: 'gzip', level: 6 });
    assert.deepEqual(parseCompression('none'), { algorithm: 'none' });
    assert.equal(compressionSuffix({ algorithm: 'gzip', level: 6 }), '.gz');
  });
  for (const bad of ['zstd:0', 'zstd:20', 'gzip:10', 'lz4', 'zstd:x', 'none:1']) {
    it(`rejects ${bad}`, () => assert.throws(() => parseCompression(bad), UsageError));
  }
});

describe('database URLs', () => {
  it('keeps the password out of the URL', () => {
    const c = parseDatabaseUrl('postgres://app:s%40cret@db.internal:6543/orders?sslmode=require');
    assert.equal(c.password, 's@cret');
    assert.equal(c.database, 'orders');
    assert.ok(!c.url.includes('cret'));
    assert.equal(c.display, 'app@db.internal:6543/orders');
    assert.match(nodePgConnectionString(c), /uselibpqcompat=true/);
  });
  it('builds a connection from PG* variables', () => {
    const c = resolveConnection(undefined, { PGHOST: '/var/run/postgresql', PGUSER: 'backup', PGDATABASE: 'app', PGPASSWORD: 'pw123' });
    assert.equal(c.database, 'app');
    assert.equal(c.password, 'pw123');
    assert.match(c.url, /host=%2Fvar%2Frun%2Fpostgresql/);
  });
  it('moves a ?password= parameter out of the URL and hides it', () => {
    const c = parseDatabaseUrl('postgresql://u@h/db?password=s3cretQ&sslmode=disable');
    assert.equal(c.password, 's3cretQ');
    assert.ok(!c.url.includes('s3cretQ'));
    assert.equal(redact('x s3cretQ y'), 'x *** y');
  });
  it('passes PGSSLMODE to node-postgres with libpq semantics', () => {
    const c = parseDatabaseUrl('postgresql://u:p@h/db');
    assert.match(nodePgConnectionString(c, { PGSSLMODE: 'prefer' }), /sslmode=prefer.*uselibpqcompat=true/);
    assert.doesNotMatch(nodePgConnectionString(c, {}), /sslmode/);
  });
  it('turns a badly percent-encoded URL into a usage error', () => {
    assert.throws(() => parseDatabaseUrl('postgresql://u:50%@h/db'), UsageError);
  });
  it('rejects other schemes and nothing at all', () => {
    assert.throws(() => parseDatabaseUrl('mysql://u:p@h/db'), UsageError);
    assert.throws(() => resolveConnection(undefined, {}), UsageError);
  });
  it('redacts registered secrets and URL passwords', () => {
    registerSecret('hunter22');
    assert.equal(redact('pw hunter22 and postgresql://u:zzz@h/db'), 'pw *** and postgresql://u:***@h/db');
  });
});

describe('versions and sizes', () => {
  it('parses pg_dump --version', () => {
    assert.deepEqual(parsePgVersion('pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)'), { version: '15.18', major: 15 });
    assert.deepEqual(parsePgVersion('pg_restore (PostgreSQL) 18beta1'), { version: '18', major: 18 });
    assert.equal(parsePgVersion('nope'), undefined);
  });
  it('sizes parts so a stream stays under 10 000 parts', () => {
    assert.equal(choosePartSize(undefined), MIN_PART_SIZE);
    assert.equal(choosePartSize(1e9), MIN_PART_SIZE);
    const hundredGiB = 100 * 1024 ** 3;
    const part = choosePartSize(hundredGiB);
    assert.ok(hundredGiB / part <= 9_000, `${hundredGiB / part} parts`);
    assert.equal(part % (1024 * 1024), 0);
  });
});

describe('client installation', () => {
  it('installs the server major from the PostgreSQL apt repository', async () => {
    const { pgdgInstallScript } = await import('../../src/postgres/install-client.ts');
    const script = pgdgInstallScript(17);
    assert.match(script, /apt\.postgresql\.org\/pub\/repos\/apt \$\{VERSION_CODENAME\}-pgdg main/);
    assert.match(script, /apt-get install -y -qq --no-install-recommends postgresql-client-17$/);
    assert.throws(() => pgdgInstallScript(Number.NaN));
  });
});

describe('manifests', () => {
  it('rejects invalid JSON and missing fields with the key named', () => {
    assert.throws(() => parseManifest('{', 'k.manifest.json'), (e: unknown) => e instanceof CheckFailedError && /k\.manifest\.json/.test(e.message));
    assert.throws(() => parseManifest('{"manifestVersion":1}', 'k.manifest.json'), CheckFailedError);
  });
});
