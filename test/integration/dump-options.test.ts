import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { dump } from '../../src/commands/dump.ts';
import type { Logger } from '../../src/log.ts';
import { cli, createDatabase, dbUrl, dumpWithCli, openMultipartUploads, run, s3Keys, s3Location, sql } from '../helpers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';
import { tempDir, tempFakePgBin, tempLocation } from '../infra/temp.ts';

describe('dump options', () => {
  it('plain with --clean restores idempotently over the same database', async () => {
    const db = await createDatabase('clean');
    const to = await tempLocation();
    await dumpWithCli(db, to, ['--format', 'plain', '--clean']);
    const target = await createDatabase('cleantarget', false);
    for (let i = 0; i < 2; i++) {
      // The second run replaces the first: a target that is not empty needs --clean.
      const r = await cli(['restore', '--from', to, '--backup', 'latest', '--target-url', dbUrl(target), ...(i ? ['--clean', '--no-safety-dump'] : [])]);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.equal((await sql<{ n: string }>(target, 'SELECT count(*) AS n FROM orders'))[0]!.n, '5000');
  });

  it('selects tables and schemas, and records rows only for tables whose data is dumped', async () => {
    const db = await createDatabase('select');
    await sql(db, 'CREATE SCHEMA audit; CREATE TABLE audit.events AS SELECT g AS id FROM generate_series(1, 10) g');
    const to = await tempLocation();
    const only = await dumpWithCli(db, to, ['--table', 'public.customers', '--table', 'products']);
    assert.deepEqual(only.manifest.tables.map((t: { table: string }) => t.table), ['customers', 'products']);
    const noAudit = await dumpWithCli(db, to, ['--exclude-schema', 'audit', '--exclude-table-data', 'order*', '--no-owner', '--no-acl']);
    assert.deepEqual(noAudit.manifest.tables.map((t: { table: string }) => t.table), ['customers', 'products']);
    assert.deepEqual(noAudit.manifest.tablesWithoutData, [{ schema: 'public', table: 'order_items' }, { schema: 'public', table: 'orders' }]);
    assert.deepEqual(noAudit.manifest.options, { noOwner: true, noAcl: true, excludeSchemas: ['audit'], excludeTableData: ['order*'] });
    const drilled = await cli(['drill', '--from', to, '--backup', noAudit.objectKey, '--json']);
    assert.equal(drilled.code, 0, drilled.stderr);
  });

  const bad: [string, string[], RegExp][] = [
    ['a table filter matching nothing', ['--table', 'no_such_table*'], /--table "no_such_table\*" matches no table in this database/],
    ['a schema filter matching nothing', ['--schema', 'no_such_schema'], /--schema "no_such_schema" matches no schema in this database/],
    ['--jobs with a non-directory format', ['--jobs', '4'], /--jobs 4 needs --format directory/],
    ['--clean without plain', ['--clean'], /--clean needs --format plain/],
    ['an unknown format', ['--format', 'tar'], /unknown format "tar": use custom, plain or directory/],
    ['a reserved extra argument', ['--pg-dump-arg=--file=/tmp/x'], /extra pg_dump argument "--file=\/tmp\/x" is set by pg-backup itself/],
    ['a bad lock wait timeout', ['--lock-wait-timeout', 'soon'], /--lock-wait-timeout "soon" is not a timeout/],
    ['an unknown sidecar', ['--checksum-sidecar', 'crc32'], /unknown checksum sidecar "crc32"/],
  ];
  for (const [name, args, expected] of bad) {
    it(`refuses ${name}: exit 2, nothing written`, async () => {
      const db = await createDatabase('badopt');
      const to = s3Location('badopt');
      const r = await cli(['dump', '--to', to, ...args], { DATABASE_URL: dbUrl(db) });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr.trim().split('\n').at(-1)!, expected);
      assert.deepEqual(await s3Keys(to), []);
    });
  }

  it('writes md5sum/sha256sum sidecars and a schema-only SQL sidecar', async () => {
    const db = await createDatabase('sidecar');
    const to = await tempLocation();
    const { manifest, objectKey } = await dumpWithCli(db, to, ['--checksum-sidecar', 'md5', '--checksum-sidecar', 'sha256', '--schema-sidecar']);
    const dir = path.join(to.replace('file://', ''), path.dirname(objectKey));
    for (const tool of ['md5sum', 'sha256sum']) {
      const check = await run(tool, ['-c', `${path.basename(objectKey)}.${tool.replace('sum', '')}`], { cwd: dir });
      assert.equal(check.code, 0, check.stdout + check.stderr);
      assert.match(check.stdout, /: OK/);
    }
    const schema = await readFile(path.join(dir, `${manifest.id}.schema.sql`), 'utf8');
    assert.match(schema, /CREATE TABLE public\.customers/);
    assert.doesNotMatch(schema, /COPY public\.customers/);
    assert.deepEqual(manifest.sidecars.map((s: { kind: string }) => s.kind), ['schema', 'md5', 'sha256']);
  });

  it('fails fast behind a DDL lock (--lock-wait-timeout) and writes nothing', async () => {
    const db = await createDatabase('locked');
    const holder = new pg.Client({ connectionString: dbUrl(db) });
    await holder.connect();
    try {
      await holder.query('BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE');
      const to = s3Location('locked');
      const started = Date.now();
      const r = await cli(['dump', '--to', to, '--lock-wait-timeout', '1s'], { DATABASE_URL: dbUrl(db) });
      const durationMs = Date.now() - started;
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /pg_dump exited with code 1: .*canceling statement due to (statement|lock) timeout .*LOCK TABLE public\.orders/);
      // The run's globals, stored first, are complete; of the database nothing is written.
      assert.deepEqual((await s3Keys(to)).filter((k) => !k.includes('/@globals/')), []);
      await recordFault({ faultId: 'pg-lock-wait-timeout', fault: 'an ACCESS EXCLUSIVE lock held past `--lock-wait-timeout 1s`', outcome: 'pg_dump fails fast naming the lock', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr), durationMs });
    } finally {
      await holder.end();
    }
  });

  it('a stalled pg_dump trips the watchdog: exit 1, multipart upload aborted, nothing visible', async () => {
    const db = await createDatabase('stall', false);
    const to = s3Location('stall');
    const bin = await tempFakePgBin('head -c 7000000 /dev/urandom; exec sleep 30');
    const started = Date.now();
    const r = await cli(['dump', '--to', to, '--stall-timeout', '1s'], { DATABASE_URL: dbUrl(db), PG_BIN_DIR: bin });
    const durationMs = Date.now() - started;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /no progress for 1 s .*: pg_dump or the upload is stalled/);
    // The run's globals, stored first, are complete; of the stalled database nothing is visible.
    assert.deepEqual((await s3Keys(to)).filter((k) => !k.includes('/@globals/')), []);
    assert.deepEqual(await openMultipartUploads(to), []);
    await recordFault({ faultId: 'pg-dump-stall', fault: 'pg_dump stalls after 7 MB (no byte for `--stall-timeout 1s`)', outcome: 'the stall watchdog stops pg_dump and aborts the multipart upload', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr), durationMs });
  });

  it('reports progress (bytes and MB/s) as log lines where no terminal is attached', async () => {
    const db = await createDatabase('progress', false);
    const bin = await tempFakePgBin('for i in 1 2 3 4 5 6; do head -c 200000 /dev/urandom; sleep 0.2; done');
    const lines: string[] = [];
    const logger: Logger = { info: (m) => lines.push(m), warn: (m) => lines.push(m), group: (_n, f) => f() };
    const previous = process.env.PG_BIN_DIR;
    process.env.PG_BIN_DIR = bin;
    try {
      await dump({ databaseUrl: dbUrl(db), to: await tempLocation(), logger, progressIntervalMs: 300 });
    } finally {
      if (previous === undefined) delete process.env.PG_BIN_DIR;
      else process.env.PG_BIN_DIR = previous;
    }
    const progress = lines.filter((l) => / stored, [\d.]+ MB\/s/.test(l));
    assert.ok(progress.length >= 2, lines.join('\n'));
  });
});

describe('directory format under failure and load', () => {
  it('an upload error with gzip ends the run (no hang), cleans the spool, and writes nothing', { timeout: 120_000 }, async () => {
    const db = await createDatabase('dirfail', false);
    const { addBigTable } = await import('../helpers.ts');
    await addBigTable(db, 30);
    const { mkdtemp, readdir, chmod } = await import('node:fs/promises');
    const work = await tempDir('pgb-spool-');
    await chmod(work, 0o777);
    const r = await cli(['dump', '--to', 's3://no-such-bucket-pgb/x', '--format', 'directory', '--jobs', '2', '--compression', 'gzip:9', '--work-dir', work], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /bucket "no-such-bucket-pgb" does not exist/);
    assert.deepEqual(await readdir(work), [], 'the spool is removed');
    await recordFault({ faultId: 'bad-directory-unknown-bucket', fault: 'directory format (2 jobs, gzip:9, 30 MB spooled): the bucket does not exist', outcome: 'the uploads stop at the first error (no hang); the spool directory is removed', exit: r.code, left: `nothing (the bucket does not exist); ${(await readdir(work)).length} files left in the work dir`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('a long upload of one big file is progress, not a stall', { timeout: 120_000 }, async () => {
    const db = await createDatabase('dirslow', false);
    const { addBigTable } = await import('../helpers.ts');
    await addBigTable(db, 40);
    const to = s3Location('dirslow');
    const r = await cli(['dump', '--to', to, '--format', 'directory', '--compression', 'gzip:9', '--stall-timeout', '2s', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).tables[0].rows, 222223);
  });
});

describe('table patterns as pg_dump reads them', () => {
  it('an unqualified table matches only the search path; --table wins over --exclude-schema; an empty exclude warns', async () => {
    const db = await createDatabase('patterns');
    await sql(db, 'CREATE TABLE events AS SELECT g AS id FROM generate_series(1, 10) g; CREATE SCHEMA sales; CREATE TABLE sales.events AS SELECT g AS id FROM generate_series(1, 20) g');
    const to = await tempLocation();
    const unqualified = await dumpWithCli(db, to, ['--table', 'events']);
    assert.deepEqual(unqualified.manifest.tables.map((t: { schema: string; table: string }) => `${t.schema}.${t.table}`), ['public.events']);
    assert.equal((await cli(['drill', '--from', to, '--backup', unqualified.objectKey])).code, 0);
    const both = await dumpWithCli(db, to, ['--table', 'sales.events', '--exclude-schema', 'sales']);
    // (pg_dump dumps the table but not its excluded schema: that archive restores only where the schema exists.)
    assert.deepEqual(both.manifest.tables, [{ schema: 'sales', table: 'events', rows: 20 }]);
    const r = await cli(['dump', '--to', to, '--exclude-table', 'tmp_*'], { DATABASE_URL: dbUrl(db) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /--exclude-table "tmp_\*" matches no table in this database; nothing is excluded by it/);
  });
});

describe('several databases per run', () => {
  it('dumps each into its own backup; one failing does not stop the others but fails the run', async () => {
    const names = [await createDatabase('multi_a'), await createDatabase('multi_b'), await createDatabase('multi_c')];
    const to = s3Location('multi');
    const bin = await tempFakePgBin(`case "$*" in *${names[1]}*) echo "pg_dump: error: connection to server lost" >&2; exit 1;; esac; exec "$REAL/pg_dump" "$@"`);
    const r = await cli(['dump', '--to', to, '--databases', names.join(','), '--json'], { DATABASE_URL: dbUrl('postgres'), PG_BIN_DIR: bin });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`${names[0]}: OK in [\\d.]+ s, `));
    assert.match(r.stderr, new RegExp(`${names[1]}: FAILED: pg_dump exited with code 1: pg_dump: error: connection to server lost`));
    assert.match(r.stderr, new RegExp(`2 of 3 databases backed up; FAILED: ${names[1]}`));
    assert.match(r.stderr.trim().split('\n').at(-1)!, new RegExp(`pg-backup: 1 of 3 databases failed: ${names[1]}`));
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.map((o: { ok: boolean }) => o.ok), [true, false, true]);
    const listed = JSON.parse((await cli(['list', '--from', to, '--json'])).stdout);
    assert.deepEqual(listed.filter((b: { kind: string }) => b.kind === 'database').map((b: { database: string }) => b.database).sort(), [names[0], names[2]].sort());
    for (const db of [names[0]!, names[2]!]) assert.equal((await cli(['verify', '--from', to, '--database', db, '--service', 'default', '--environment', 'default'])).code, 0);
    await recordFault({ faultId: 'pg-one-of-several-fails', fault: 'one of three databases fails (`--databases a,b,c`)', outcome: 'the others complete and verify; the run fails naming the failed one', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('refuses an unknown database in the list before dumping anything: exit 2', async () => {
    const a = await createDatabase('known');
    const to = s3Location('unknown');
    const r = await cli(['dump', '--to', to, '--databases', `${a},no_such_db_xyz`], { DATABASE_URL: dbUrl('postgres') });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /database "no_such_db_xyz" does not exist/);
    assert.deepEqual(await s3Keys(to), []);
    await recordFault({ faultId: 'bad-unknown-database-in-list', fault: 'an unknown database among several (`--databases`)', outcome: 'refused before anything is dumped', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr) });
  });
});
