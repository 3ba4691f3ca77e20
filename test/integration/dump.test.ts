import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, run, s3Client, s3Env, s3Keys, s3Location, sql } from '../helpers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';
import { tempFakePgBin } from '../infra/temp.ts';

const LAYOUT = /^api\/production\/(shop_[0-9a-f]{6})\/\d{4}\/\d{2}\/\d{2}\/\1-\d{8}T\d{6}Z-[0-9a-f]{6}\.(dump\.zst|manifest\.json)$/;

describe('dump to Ceph RGW', () => {
  it('streams a custom-format, zstd-compressed dump with a manifest that restores with aws s3 cp | zstd -d | pg_restore', async () => {
    const db = await createDatabase('shop');
    const to = s3Location('dump');
    const r = await cli(['dump', '--to', to, '--service', 'api', '--environment', 'production', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const manifest = JSON.parse(r.stdout);
    assert.equal(manifest.database, db);
    assert.equal(manifest.format, 'custom');
    assert.deepEqual(manifest.compression, { algorithm: 'zstd', level: 3 });
    assert.equal(manifest.server.major, manifest.pgDump.major);
    assert.deepEqual(
      manifest.tables.map((t: { table: string; rows: number }) => [t.table, t.rows]),
      [['customers', 2000], ['order_items', 15000], ['orders', 5000], ['products', 50]],
    );
    assert.ok(Date.parse(manifest.finishedAt) >= Date.parse(manifest.startedAt));

    // The run's globals (roles, tablespaces) lie beside it under @globals/: the database's backup is two objects.
    const keys = (await s3Keys(to)).filter((k) => !k.includes('/@globals/')).sort();
    assert.equal(keys.length, 2, keys.join(', '));
    for (const k of keys) assert.match(k, LAYOUT);

    // The stored object is exactly what the manifest says.
    const objectKey = keys.find((k) => k.endsWith('.dump.zst'))!;
    const [bucket, ...prefix] = to.replace('s3://', '').split('/');
    const client = s3Client();
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix.join('/')}/${objectKey}` }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    client.destroy();
    assert.equal(bytes.length, manifest.object.sizeBytes);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), manifest.object.sha256);

    // The README's restore-by-hand path: only aws s3 cp, zstd -d and pg_restore.
    const target = await createDatabase('manual', false);
    const env = s3Env();
    const manual = await run('bash', ['-o', 'pipefail', '-c', `aws s3 cp --endpoint-url "$AWS_ENDPOINT_URL_S3" "${to}/${objectKey}" - | zstd -d | pg_restore --no-owner -d "${dbUrl(target)}"`], { env });
    assert.equal(manual.code, 0, manual.stderr);
    const rows = await sql<{ n: string }>(target, 'SELECT count(*) AS n FROM order_items');
    assert.equal(rows[0]!.n, '15000');
  });

  it('counts rows and dumps in the same snapshot, even while the database changes', async () => {
    const db = await createDatabase('snap');
    const to = s3Location('snap');
    // pg_dump is started only after the snapshot was exported: a fake pg_dump that first inserts
    // rows (committed, in another session) and then runs the real one. Those rows must appear
    // neither in the dump nor in the counts. (A fixed wait in the test raced the CLI's start-up.)
    const insert = `INSERT INTO products SELECT 'LATE-' || g, 'late', 1 FROM generate_series(1, 25) g`;
    const bin = await tempFakePgBin(`"$REAL/psql" -qAt "$SNAP_URL" -c "${insert}" >/dev/null || exit 3; exec "$REAL/pg_dump" "$@"`);
    const r = await cli(['dump', '--verbose', '--to', to, '--json'], { DATABASE_URL: dbUrl(db), PG_BIN_DIR: bin, SNAP_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /snapshot \S+ exported/);
    const manifest = JSON.parse(r.stdout);
    assert.equal(manifest.tables.find((t: { table: string }) => t.table === 'products').rows, 50);
    const restored = await createDatabase('snaprestore', false);
    const back = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(restored), '--no-owner']);
    assert.equal(back.code, 0, back.stderr);
    assert.equal((await sql<{ n: string }>(restored, 'SELECT count(*) AS n FROM products'))[0]!.n, '50');
    assert.equal((await sql<{ n: string }>(db, 'SELECT count(*) AS n FROM products'))[0]!.n, '75');
  });

  it('counts every table of a database with more tables than one counting statement takes (100), each to its own count', async () => {
    const db = await createDatabase('many', false);
    // 250 tables with 0..249 rows, plus two whose names need quoting, in a schema that does too.
    await sql(db, `DO $$ BEGIN FOR i IN 0..249 LOOP
      EXECUTE format('CREATE TABLE %I AS SELECT g FROM generate_series(1, %s) g', 't_' || lpad(i::text, 3, '0'), i);
    END LOOP; END $$`);
    await sql(db, `CREATE SCHEMA "odd ""schema"""; CREATE TABLE "odd ""schema"""."Mixed Case" AS SELECT 1 AS g FROM generate_series(1, 7);
      CREATE TABLE "odd ""schema""".";drop" AS SELECT 1 AS g FROM generate_series(1, 3)`);
    const to = s3Location('many');
    const r = await cli(['dump', '--to', to, '--json', '--no-globals'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    const counted = new Map((JSON.parse(r.stdout).tables as { schema: string; table: string; rows: number }[]).map((t) => [`${t.schema}.${t.table}`, t.rows]));
    assert.equal(counted.size, 252);
    for (let i = 0; i < 250; i++) assert.equal(counted.get(`public.t_${String(i).padStart(3, '0')}`), i, `t_${i}`);
    assert.equal(counted.get('odd "schema".Mixed Case'), 7);
    assert.equal(counted.get('odd "schema".;drop'), 3);
  });

  for (const { faultId, name, script, expected } of [
    { faultId: 'pg-dump-exits', name: 'exits non-zero', script: '"$REAL/pg_dump" "$@" | head -c 12000000; echo "pg_dump: error: simulated failure after 12 MB" >&2; exit 1', expected: /simulated failure after 12 MB/ },
    { faultId: 'pg-dump-killed', name: 'is killed', script: '"$REAL/pg_dump" "$@" | head -c 12000000; kill -9 $$', expected: /pg_dump was killed by SIGKILL/ },
  ]) {
    it(`aborts the multipart upload and writes no manifest when pg_dump ${name} mid-stream`, async () => {
      const db = await createDatabase('fail', false);
      await addBigTable(db, 30);
      const to = s3Location('fail');
      const bin = await tempFakePgBin(script);
      const started = Date.now();
      const r = await cli(['dump', '--to', to], { DATABASE_URL: dbUrl(db), PG_BIN_DIR: bin });
      const durationMs = Date.now() - started;
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, expected);
      // The run's globals, stored first, are complete; of the failed database nothing may be left.
      assert.deepEqual((await s3Keys(to)).filter((k) => !k.includes('/@globals/')), [], 'nothing of the database may be left under the prefix');
      assert.deepEqual(await openMultipartUploads(to), [], 'the multipart upload must be aborted');
      await recordFault({ faultId, fault: `pg_dump ${name === 'is killed' ? 'killed (SIGKILL)' : 'exits non-zero'} mid-stream, 12 MB in`, outcome: 'multipart upload aborted, pg_dump\'s error shown', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr), durationMs });
    });
  }
});

describe('dump: bad input ends in one clear line, exit 2, nothing written', () => {
  const cases: { faultId: string; name: string; make: () => Promise<{ args: string[]; env: Record<string, string | undefined> }>; expected: RegExp }[] = [
    { faultId: 'bad-unknown-bucket', name: 'unknown bucket', make: async () => ({ args: ['--to', 's3://no-such-bucket-pgb/x'], env: {} }), expected: /bucket "no-such-bucket-pgb" does not exist/ },
    { faultId: 'bad-wrong-s3-credentials', name: 'wrong credentials', make: async () => ({ args: [], env: { AWS_SECRET_ACCESS_KEY: 'wrong-secret-value' } }), expected: /rejected the credentials/ },
    { faultId: 'bad-malformed-database-url', name: 'malformed database URL', make: async () => ({ args: [], env: { DATABASE_URL: 'postgresql://u:p@[bad/db' } }), expected: /malformed database URL/ },
    { faultId: 'bad-non-postgres-url', name: 'non-postgres URL', make: async () => ({ args: ['--database-url', 'mysql://root:pw@h/db'], env: {} }), expected: /must start with postgresql:\/\// },
    { faultId: 'bad-malformed-storage-url', name: 'malformed storage URL', make: async () => ({ args: ['--to', 'bucket/prefix'], env: {} }), expected: /unsupported storage location/ },
    { faultId: 'bad-compression', name: 'bad compression', make: async () => ({ args: ['--compression', 'zstd:42'], env: {} }), expected: /out of range for zstd: use 1-19/ },
    { faultId: 'bad-unreachable-database', name: 'unreachable database', make: async () => ({ args: [], env: { DATABASE_URL: 'postgresql://postgres:pgtestpw@127.0.0.1:1/x' } }), expected: /connection refused/ },
    { faultId: 'bad-wrong-database-password', name: 'wrong database password', make: async () => ({ args: [], env: { DATABASE_URL: dbUrl('postgres').replace('pgtestpw', 'not-the-password') } }), expected: /authentication failed/ },
    { faultId: 'bad-missing-pg-dump', name: 'missing pg_dump', make: async () => ({ args: [], env: { PG_BIN_DIR: '/nonexistent-pgb-bin' } }), expected: /needs pg_dump \d+ or newer but no pg_dump found: install postgresql-client-\d+/ },
    { faultId: 'bad-old-pg-dump', name: 'pg_dump older than the server', make: async () => ({ args: [], env: { PG_BIN_DIR: await tempFakePgBin('exit 0').then(async (d) => {
      const { writeFile } = await import('node:fs/promises');
      await writeFile(`${d}/pg_dump`, '#!/bin/bash\necho "pg_dump (PostgreSQL) 9.6.24"\n');
      return d;
    }) } }), expected: /needs pg_dump \d+ or newer but found pg_dump 9\.6 .*install postgresql-client-\d+/ },
  ];
  for (const { faultId, name, make, expected } of cases) {
    it(name, async () => {
      const to = s3Location('bad');
      const { args, env } = await make();
      const r = await cli(['dump', '--to', to, ...args], { DATABASE_URL: dbUrl('postgres'), ...env });
      assert.equal(r.code, 2, `${r.stdout}\n${r.stderr}`);
      const errorLines = r.stderr.trim().split('\n').filter((l) => l.startsWith('pg-backup:'));
      assert.equal(errorLines.length, 1, `one error line expected, got:\n${r.stderr}`);
      assert.match(errorLines[0]!, expected);
      assert.equal(r.stderr.trim().split('\n').at(-1), errorLines[0], 'the error is the last line');
      assert.doesNotMatch(r.stderr + r.stdout, /pgtestpw|BACKUPSECRET|wrong-secret-value|not-the-password/, 'no secret in any output');
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.deepEqual(await s3Keys(to), []);
      await recordFault({ faultId, fault: `dump: ${name}`, outcome: 'one line naming the fix, before anything is written', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: errorLines[0] });
    });
  }
  it('never prints the database password or the S3 secret on success either', async () => {
    const db = await createDatabase('secret', false);
    const r = await cli(['dump', '--to', s3Location('secret'), '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!(r.stdout + r.stderr).includes(need('PGB_TEST_S3_SECRET_KEY')));
    assert.ok(!(r.stdout + r.stderr).includes('pgtestpw'));
    // A tiny archive: zstd pads its byte counts, which must still be read.
    const manifest = JSON.parse(r.stdout);
    assert.ok(manifest.archiveSizeBytes > manifest.object.sizeBytes && manifest.archiveSizeBytes < 100_000, String(manifest.archiveSizeBytes));
  });
});

describe('dump failure while the upload is the bottleneck', () => {
  for (const { faultId, compression } of [
    { faultId: 'pg-dump-fails-upload-bottleneck-none', compression: 'none' },
    { faultId: 'pg-dump-fails-upload-bottleneck-gzip', compression: 'gzip' },
    { faultId: 'pg-dump-fails-upload-bottleneck-zstd', compression: 'zstd' },
  ]) {
    it(`rejects (no hang) and leaves nothing behind (${compression})`, { timeout: 60_000 }, async () => {
      const { dump } = await import('../../src/commands/dump.ts');
      const { stderrLogger } = await import('../../src/log.ts');
      // 60 MB arrive faster than one part at a time can be uploaded; then pg_dump fails.
      const bin = await tempFakePgBin('head -c 60000000 /dev/zero; echo "pg_dump: error: injected failure" >&2; exit 1');
      const to = s3Location('slow');
      const previous = process.env.PG_BIN_DIR;
      process.env.PG_BIN_DIR = bin;
      const env = s3Env();
      const started = Date.now();
      let message = '';
      try {
        await assert.rejects(
          dump({
            databaseUrl: dbUrl('postgres'),
            to,
            compression,
            logger: stderrLogger(true),
            s3: { endpoint: env.AWS_ENDPOINT_URL_S3, queueSize: 1, credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY } },
          }),
          (err: Error) => {
            message = err.message;
            return /pg_dump exited with code 1: pg_dump: error: injected failure/.test(err.message);
          },
        );
      } finally {
        if (previous === undefined) delete process.env.PG_BIN_DIR;
        else process.env.PG_BIN_DIR = previous;
      }
      const durationMs = Date.now() - started;
      assert.deepEqual(await s3Keys(to), []);
      assert.deepEqual(await openMultipartUploads(to), []);
      await recordFault({ faultId, fault: `pg_dump fails after 60 MB while the upload is the bottleneck (one part at a time, ${compression})`, outcome: 'the whole pipeline is torn down, no hang; multipart upload aborted', exit: 'rejects (in-process)', left: await leftBehind(to), file: import.meta.url, message, durationMs });
    });
  }
});
