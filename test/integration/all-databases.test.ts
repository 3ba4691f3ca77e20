// Whole-server dump runs (issue 25): `dump --all-databases` discovers every database the role can
// connect to at run time, skips the templates, honours --exclude-database and the CONNECT
// privilege, ties every manifest of a run together with one run id, and stores the server's
// globals (pg_dumpall --globals-only) once a database is stored — with role passwords as a superuser, without them
// (recorded) as a non-superuser, encrypted with age when recipients are given, not at all with
// --no-globals. list, prune and status show runs and globals; prune keeps the globals a kept
// database backup needs. A custom archive restored with pg_restore --create after the globals
// brings back the database's encoding, locale, settings, per-role settings, ACL and owner.
// The source is a PostgreSQL cluster of its own (roles are cluster-wide; the shared server holds
// other tests' databases), started with the tool's throwaway cluster.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { prune } from '../../src/commands/prune.ts';
import { freePort, startThrowawayCluster, type ThrowawayCluster } from '../../src/postgres/cluster.ts';
import { withDatabase } from '../../src/postgres/connection.ts';
import { connect } from '../../src/postgres/server.ts';
import { cli, openMultipartUploads, root, run, runActionBundle, s3Env, s3Keys, s3Location } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';

let source: ThrowawayCluster;
let work: string;

/**
 * Runs SQL in database `name` of `cluster` (as postgres), one statement at a time (statements end
 * with `;` at a line's end: CREATE DATABASE refuses a multi-statement query), and returns the
 * rows of the last one.
 */
async function clusterSql(cluster: ThrowawayCluster, name: string, text: string): Promise<Record<string, unknown>[]> {
  const client = await connect(withDatabase(cluster.connection, name));
  try {
    let rows: Record<string, unknown>[] = [];
    for (const statement of text.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) rows = (await client.query(statement)).rows;
    return rows;
  } finally {
    await client.end();
  }
}

const urlOf = (cluster: ThrowawayCluster, db: string, user = 'postgres') => `postgresql:///${db}?host=${encodeURIComponent(cluster.socketDir)}&port=${cluster.port}&user=${user}`;

/** Every file under a file:// bucket, relative to it, sorted. */
async function bucketKeys(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

/** A fresh file:// bucket under the test's work dir. */
async function bucket(label: string): Promise<{ dir: string; to: string }> {
  const dir = await mkdtemp(path.join(work, `bucket-${label}-`));
  return { dir, to: `file://${dir}` };
}

/** The manifests under a bucket, parsed. */
async function manifests(dir: string): Promise<any[]> {
  const keys = (await bucketKeys(dir)).filter((k) => k.endsWith('.manifest.json'));
  return Promise.all(keys.map(async (k) => JSON.parse(await readFile(path.join(dir, k), 'utf8'))));
}

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pgb-alldb-'));
  await chmod(work, 0o755);
  source = await startThrowawayCluster({ minMajor: 0, workDir: work, allowSameOsUser: true });
  await clusterSql(source, 'postgres', `
    CREATE ROLE app_owner LOGIN PASSWORD 'owner-secret-1';
    CREATE ROLE app_reader LOGIN PASSWORD 'reader-secret-2';
    GRANT app_reader TO app_owner;
    ALTER ROLE app_reader SET statement_timeout = '45s';
    CREATE ROLE backup_user LOGIN CREATEDB PASSWORD 'backup-secret-3';
    CREATE DATABASE app_one OWNER app_owner;
    CREATE DATABASE app_two;
    CREATE DATABASE app_three;
    CREATE DATABASE skip_scratch;
    CREATE DATABASE locked_db;
    REVOKE CONNECT ON DATABASE locked_db FROM PUBLIC;`);
  for (const db of ['app_one', 'app_two', 'app_three']) await clusterSql(source, db, `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, '${db}' || g FROM generate_series(1, 50) g;`);
  // backup_user's own database, with a table it owns (what a non-superuser can dump).
  const owned = await connect(withDatabase({ ...source.connection, url: urlOf(source, 'postgres', 'backup_user') }, 'postgres'));
  try {
    await owned.query('CREATE DATABASE owned_by_backup');
  } finally {
    await owned.end();
  }
  const ownedDb = await connect({ ...withDatabase(source.connection, 'owned_by_backup'), url: urlOf(source, 'owned_by_backup', 'backup_user') });
  try {
    await ownedDb.query(`CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 20) g;`);
  } finally {
    await ownedDb.end();
  }
  // A table in template1 (databases created later copy it): template1 itself is never dumped.
  await clusterSql(source, 'template1', 'CREATE TABLE template_marker (id int)');
}, { timeout: 180_000 });

after(async () => {
  await source?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('dump --all-databases', () => {
  it('bad input ends in one line, exit 2, with nothing in the bucket: an unknown bucket (checked while the databases are found), a server that refuses the connection (its error reported even when the bucket is wrong too)', { timeout: 120_000 }, async () => {
    const missing = `s3://pgb-missing-${Date.now().toString(36)}/x`;
    const noBucket = await cli(['dump', '--all-databases', '--parallel-databases', '2', '--to', missing], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(noBucket.code, 2, noBucket.stderr);
    assert.match(noBucket.stderr, /bucket "pgb-missing-[a-z0-9]+" does not exist/);
    assert.doesNotMatch(noBucket.stderr, /dumping|@globals/);
    assert.equal(noBucket.stderr.trim().split('\n').length, 1, noBucket.stderr);
    // A loopback port nobody listens on: the connection is refused at once.
    const closed = `postgresql://postgres@127.0.0.1:${await freePort()}/postgres`;
    const to = s3Location('alldb-refused');
    const refused = await cli(['dump', '--all-databases', '--to', to], { DATABASE_URL: closed });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /cannot connect to postgres@127\.0\.0\.1:\d+\/postgres: connection refused/);
    assert.deepEqual(await s3Keys(to), []);
    assert.deepEqual(await openMultipartUploads(to), [], 'the write check left no upload open');
    const both = await cli(['dump', '--all-databases', '--to', missing], { DATABASE_URL: closed });
    assert.equal(both.code, 2, both.stderr);
    assert.match(both.stderr, /connection refused/);
    assert.doesNotMatch(both.stderr, /bucket/);
  });

  it('discovers every database at run time (a new one picked up by the next run), skips templates and excluded ones, ties a run together and stores the globals once its databases are stored; list, status and prune show runs and keep the globals kept backups need', { timeout: 300_000 }, async () => {
    const { dir, to } = await bucket('all');
    // Run 0: one database (a run too: its globals and the database share a run id).
    const single = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: urlOf(source, 'app_one') });
    assert.equal(single.code, 0, single.stderr);
    const singleJson = JSON.parse(single.stdout);
    assert.equal(singleJson.database, 'app_one');
    assert.match(singleJson.run.id, /^run-\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    assert.equal(singleJson.globalsBackup.ok, true);
    assert.equal(singleJson.globalsBackup.rolePasswords, true);

    // Run 1: all databases, skip_* excluded, two at a time.
    const first = await cli(['dump', '--all-databases', '--exclude-database', 'skip*', '--parallel-databases', '2', '--to', to, '--json'], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(first.code, 0, first.stderr);
    const run1 = JSON.parse(first.stdout);
    const expected1 = ['app_one', 'app_three', 'app_two', 'locked_db', 'owned_by_backup', 'postgres'];
    assert.deepEqual(run1.run.databases, expected1);
    assert.equal(run1.run.allDatabases, true);
    assert.deepEqual(run1.run.skipped.map((s: { database: string }) => s.database).sort(), ['skip_scratch', 'template1']);
    assert.deepEqual(run1.backups.map((b: { database: string; ok: boolean; run: string }) => [b.database, b.ok, b.run]), expected1.map((d) => [d, true, run1.run.id]));
    assert.match(first.stderr, new RegExp(`run ${run1.run.id}: 6 databases \\(all the role can connect to\\) and the globals`));
    // The globals come once a database is stored (a run that stored none leaves nothing); two at
    // a time, they start beside the remaining databases.
    const firstStored = Math.min(...expected1.map((d) => first.stderr.indexOf(`${d}: OK`)).filter((i) => i >= 0));
    assert.ok(first.stderr.indexOf('@globals: OK') > firstStored, first.stderr);

    // A database created between two runs is picked up by the next; a dropped one is not looked for.
    await clusterSql(source, 'postgres', 'CREATE DATABASE app_new;\nDROP DATABASE app_three');
    // Keys are stamped to the second: run 2 starts in a later second than run 1 ended, so its
    // backups are the newer ones for prune below (within one second the order is the keys').
    await new Promise((resolve) => setTimeout(resolve, 1_005 - (Date.now() % 1_000)));
    const second = await cli(['dump', '--all-databases', '--exclude-database', 'SKIP_*', '--to', to, '--json'], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(second.code, 0, second.stderr);
    const run2 = JSON.parse(second.stdout);
    // Unquoted letters match lower case (pg_dump's pattern rules): SKIP_* excludes skip_scratch.
    assert.deepEqual(run2.run.databases, ['app_new', 'app_one', 'app_two', 'locked_db', 'owned_by_backup', 'postgres']);
    assert.notEqual(run2.run.id, run1.run.id);

    // Every manifest of a run carries its id; the globals' manifest the planned databases.
    const all = await manifests(dir);
    const ofRun = (id: string) => all.filter((m) => m.run?.id === id);
    assert.deepEqual(ofRun(run1.run.id).filter((m) => m.kind !== 'globals').map((m) => m.database).sort(), expected1);
    const globals1 = ofRun(run1.run.id).filter((m) => m.kind === 'globals');
    assert.equal(globals1.length, 1);
    assert.equal(globals1[0].database, '@globals');
    assert.deepEqual(globals1[0].run.databases, expected1);
    assert.equal(globals1[0].run.allDatabases, true);
    assert.equal(globals1[0].globals.rolePasswords, true);
    assert.deepEqual(globals1[0].globals.roles, ['app_owner', 'app_reader', 'backup_user', 'postgres']);
    assert.equal(globals1[0].format, 'plain');
    assert.ok(!all.some((m) => m.database === 'template1' || m.database === 'template0'), 'a template was dumped');
    // The globals object: plain SQL with the roles, their memberships, settings and SCRAM verifiers.
    const globalsKey = (await bucketKeys(dir)).find((k) => k.includes(globals1[0].id) && k.endsWith('.sql.zst'))!;
    assert.match(globalsKey, /^default\/default\/@globals\/\d{4}\/\d{2}\/\d{2}\/@globals-\d{8}T\d{6}Z-[0-9a-f]{6}\.sql\.zst$/);
    const sql = spawnSync('zstd', ['-dc', path.join(dir, globalsKey)], { encoding: 'utf8' }).stdout;
    assert.match(sql, /CREATE ROLE app_owner;/);
    assert.match(sql, /ALTER ROLE app_owner WITH .*PASSWORD 'SCRAM-SHA-256\$/);
    assert.match(sql, /GRANT app_reader TO app_owner/);
    assert.match(sql, /ALTER ROLE app_reader SET statement_timeout TO '45s'/);

    // verify: a globals object is checked to pg_dumpall's trailer; latest never picks it.
    const v = await cli(['verify', '--from', to, '--database', '@globals', '--level', 'archive']);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stderr, /the SQL is complete/);
    const latest = await cli(['verify', '--from', to, '--database', 'app_one', '--level', 'checksum', '--json']);
    assert.equal(latest.code, 0, latest.stderr);
    assert.match(JSON.parse(latest.stdout).backupUri, /\/default\/default\/app_one\//);
    // drill and restore of the globals alone: refused, pointing at --server.
    const drill = await cli(['drill', '--from', to, '--database', '@globals']);
    assert.equal(drill.code, 2, drill.stderr);
    assert.match(drill.stderr, /holds a run's globals \(roles, tablespaces\), not a database: drill a whole run with "pg-backup drill --server"/);

    // list: the run of each backup, globals marked as such.
    const listed = await cli(['list', '--from', to, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const entries = JSON.parse(listed.stdout);
    const globalsListed = entries.filter((e: { kind: string }) => e.kind === 'globals');
    assert.equal(globalsListed.length, 3);
    assert.ok(globalsListed.every((g: { rolePasswords: boolean; run: string }) => g.rolePasswords === true && /^run-/.test(g.run)));
    assert.ok(entries.filter((e: { kind: string }) => e.kind === 'database').every((e: { run: string }) => [singleJson.run.id, run1.run.id, run2.run.id].includes(e.run)));
    const table = await cli(['list', '--from', to]);
    assert.match(table.stdout, /RUN/);
    assert.match(table.stdout, new RegExp(`default/default globals\\s+${run2.run.id}`));

    // status: the newest globals of default/default, with passwords; never a database.
    const status = await cli(['status', '--from', to, '--json']);
    const fleet = JSON.parse(status.stdout);
    assert.ok(!fleet.databases.some((d: { database: string }) => d.database === '@globals'));
    assert.equal(fleet.globals.length, 1);
    assert.equal(fleet.globals[0].newest.runId, run2.run.id);
    assert.equal(fleet.globals[0].newest.rolePasswords, true);
    assert.equal(fleet.globals[0].count, 3);

    // prune --keep-last 1, two days on: run 2's backups are kept, and run 1's app_three (the
    // only backup of a database dropped since) — so run 1's globals stay; run 0's go.
    const lines: string[] = [];
    const logger = { info: (m: string) => void lines.push(m), warn: (m: string) => void lines.push(m), group: <T>(_n: string, fn: () => Promise<T>) => fn() };
    const pruned = await prune({ from: to, keepLast: 1, apply: true, logger, now: () => new Date(Date.now() + 2 * 86_400_000) });
    assert.equal(pruned.ok, true, pruned.reason);
    const after = await manifests(dir);
    const globalsRuns = after.filter((m) => m.kind === 'globals').map((m) => m.run.id).sort();
    assert.deepEqual(globalsRuns, [run1.run.id, run2.run.id].sort());
    assert.deepEqual(after.filter((m) => m.run.id === run1.run.id && m.kind !== 'globals').map((m) => m.database), ['app_three']);
    assert.equal(after.filter((m) => m.run.id === singleJson.run.id).length, 0);
    const globalsGroup = pruned.plan.groups.find((g) => g.database === '@globals')!;
    assert.ok(globalsGroup.backups.some((b) => b.action === 'keep' && b.reasons[0]!.includes(`globals of ${run1.run.id}, whose kept database backups need them`)));
    // Retention never counted the globals as a database: no "@globals" among the databases' groups' keeps by rule.
    assert.ok(globalsGroup.backups.every((b) => !b.reasons.some((r) => r.startsWith('last '))));
  });

  it('as a non-superuser: databases without CONNECT are skipped and named, the globals come without role passwords (recorded, one warning)', { timeout: 180_000 }, async () => {
    const { to } = await bucket('nonsuper');
    const r = await cli(['dump', '--all-databases', '--exclude-database', 'app_*', '--exclude-database', 'skip_*', '--verify', 'archive', '--to', to, '--json'], { DATABASE_URL: urlOf(source, 'postgres', 'backup_user') });
    assert.equal(r.code, 0, r.stderr);
    // --verify reads the globals back too: to pg_dumpall's trailer.
    assert.match(r.stderr, /@globals-\S+\.sql\.zst \([^)]*\) at level archive\n(?:verify @globals: read [^\n]*\n)?.*the SQL is complete/);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.run.databases, ['owned_by_backup', 'postgres']);
    assert.deepEqual(out.run.skipped.find((s: { database: string }) => s.database === 'locked_db'), { database: 'locked_db', reason: 'no CONNECT privilege' });
    assert.match(r.stderr, /--all-databases: not dumped, the role may not connect to it \(no CONNECT privilege\): locked_db/);
    assert.equal(out.globals.ok, true);
    assert.equal(out.globals.rolePasswords, false);
    const warnings = r.stderr.split('\n').filter((l) => /^warning: .*role passwords NOT included/.test(l));
    assert.equal(warnings.length, 1, r.stderr);
    assert.match(warnings[0]!, /role backup_user cannot read pg_authid .* --no-role-passwords/);
    const m = JSON.parse(await readFile(new URL(out.globals.manifestUri), 'utf8'));
    assert.equal(m.globals.rolePasswords, false);
    const sql = spawnSync('zstd', ['-dc', new URL(out.globals.backupUri).pathname], { encoding: 'utf8' }).stdout;
    assert.match(sql, /CREATE ROLE app_owner;/);
    assert.doesNotMatch(sql, /SCRAM-SHA-256/);
  });

  it('encrypts the globals with age like the dumps; --no-globals stores none', { timeout: 180_000 }, async () => {
    const key = await run('age-keygen', []);
    const identity = /AGE-SECRET-KEY-\S+/.exec(key.stdout)![0];
    const recipient = /public key: (age1\S+)/.exec(key.stderr + key.stdout)![1]!;
    const { dir, to } = await bucket('age');
    const r = await cli(['dump', '--databases', 'app_one,app_two', '--age-recipient', recipient, '--to', to, '--json'], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(r.code, 0, r.stderr);
    const keys = await bucketKeys(dir);
    const globalsObject = keys.find((k) => /^default\/default\/@globals\/.*\.sql\.zst\.age$/.test(k));
    assert.ok(globalsObject, keys.join('\n'));
    const bytes = await readFile(path.join(dir, globalsObject));
    assert.match(bytes.subarray(0, 40).toString('latin1'), /^age-encryption\.org\/v1/);
    assert.ok(!bytes.includes('CREATE ROLE') && !bytes.includes('SCRAM-SHA-256'));
    const m = (await manifests(dir)).find((x) => x.kind === 'globals');
    assert.deepEqual(m.encryption, { scheme: 'age', recipients: [recipient] });
    // With the identity, it reads back to the end.
    const v = await cli(['verify', '--from', to, '--database', '@globals', '--level', 'archive'], { PG_BACKUP_AGE_IDENTITY: identity });
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stderr, /the SQL is complete/);

    const { dir: plainDir, to: plainTo } = await bucket('noglobals');
    const n = await cli(['dump', '--no-globals', '--to', plainTo], { DATABASE_URL: urlOf(source, 'app_two') });
    assert.equal(n.code, 0, n.stderr);
    assert.ok(!(await bucketKeys(plainDir)).some((k) => k.includes('@globals')));
    assert.doesNotMatch(n.stderr, /@globals/);
  });

  it('from the dump action: databases: all with exclude-database, the run id and the globals in the outputs and the summary', { timeout: 180_000 }, async () => {
    const { dir, to } = await bucket('action');
    const r = await runActionBundle('dump', { 'database-url': urlOf(source, 'postgres'), databases: 'all', 'exclude-database': 'app_*\nskip_*', 'parallel-databases': '2', globals: 'true', to, compression: 'zstd:3' });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.outputs['run-id']!, /^run-\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    assert.equal(r.outputs['globals-role-passwords'], 'true');
    assert.match(r.outputs['globals-uri']!, /\/default\/default\/@globals\/.*\.sql\.zst$/);
    const backups = JSON.parse(r.outputs.backups!);
    assert.deepEqual(backups.map((b: { database: string; ok: boolean }) => [b.database, b.ok]), [['locked_db', true], ['owned_by_backup', true], ['postgres', true]]);
    assert.match(r.summary, new RegExp(`Backups \\(run ${r.outputs['run-id']}\\)`));
    assert.match(r.summary, /globals \(roles, tablespaces\)<\/td><td>✅/);
    const all = await manifests(dir);
    assert.equal(new Set(all.map((m) => m.run.id)).size, 1);
    assert.equal(all.filter((m) => m.kind === 'globals').length, 1);
    // globals: false stores none.
    const { dir: noneDir, to: noneTo } = await bucket('action-none');
    const n = await runActionBundle('dump', { 'database-url': urlOf(source, 'app_one'), globals: 'false', to: noneTo, compression: 'zstd:3' });
    assert.equal(n.code, 0, n.stdout + n.stderr);
    assert.equal(n.outputs['globals-uri'] ?? '', '');
    assert.ok(!(await bucketKeys(noneDir)).some((k) => k.includes('@globals')));
  });

  it('refuses --exclude-database without --all-databases and a bad --parallel-databases: exit 2, nothing written', async () => {
    const { dir, to } = await bucket('bad');
    const a = await cli(['dump', '--exclude-database', 'x*', '--to', to], { DATABASE_URL: urlOf(source, 'app_one') });
    assert.equal(a.code, 2, a.stderr);
    assert.match(a.stderr, /--exclude-database works with --all-databases/);
    const b = await cli(['dump', '--all-databases', '--parallel-databases', '0', '--to', to], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(b.code, 2, b.stderr);
    assert.match(b.stderr, /--parallel-databases 0 is not a count from 1 to 16/);
    const c = await cli(['dump', '--all-databases', '--exclude-database', '*', '--to', to], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(c.code, 2, c.stderr);
    assert.match(c.stderr, /--all-databases found no database to dump/);
    assert.deepEqual(await bucketKeys(dir), []);
  });

  it('SIGINT while databases are dumped two at a time (the globals may be on their way): exit 130, every object in the bucket has its manifest, no upload left open, no pg_dump or zstd left', { timeout: 180_000 }, async () => {
    // A database whose dump lasts a few seconds (30 MB of incompressible text), dumped first
    // (largest first); the small ones are stored beside it, and the globals start after the first.
    await clusterSql(source, 'postgres', 'CREATE DATABASE sig_large');
    try {
      await clusterSql(source, 'sig_large', `CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
        INSERT INTO big SELECT g, encode(sha512(g::text::bytea) || sha512((g + 1)::text::bytea), 'base64') FROM generate_series(1, 170000) g;`);
      const to = s3Location('alldb-sigint');
      const { mark, env } = leftoverMark();
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'dump', '--all-databases', '--exclude-database', 'skip*', '--parallel-databases', '2', '--to', to], { env: { ...process.env, ...s3Env(), ...env, DATABASE_URL: urlOf(source, 'postgres') } });
        let stderr = '';
        let sent = false;
        child.stderr.on('data', (d) => {
          stderr += d;
          if (!sent && /: OK in /.test(stderr)) {
            sent = true;
            child.kill('SIGINT');
          }
        });
        child.on('close', (code) => resolve({ code, stderr }));
      });
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /received SIGINT: cancelling and cleaning up/);
      const keys = await s3Keys(to);
      const objects = keys.filter((k) => /\.(dump|sql)(\.zst)?$/.test(k));
      assert.ok(objects.length >= 1, `the database stored before the signal is there: ${keys.join(', ')}`);
      for (const k of objects) assert.ok(keys.includes(k.replace(/\.(dump|sql)(\.zst)?$/, '.manifest.json')), `${k} has its manifest`);
      assert.ok(!keys.some((k) => k.includes('/sig_large/')), 'the large database, cut off, left nothing');
      assert.deepEqual(await openMultipartUploads(to), []);
      assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump, pg_dumpall or zstd process left');
    } finally {
      await clusterSql(source, 'postgres', 'DROP DATABASE sig_large');
    }
  });
});

describe('database-level properties come back with pg_restore --create', () => {
  it('encoding, locale, ALTER DATABASE … SET, ALTER ROLE … IN DATABASE … SET, the ACL and the owner, after the globals on a new server', { timeout: 240_000 }, async () => {
    await clusterSql(source, 'postgres', `
      CREATE DATABASE props_db TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' OWNER app_owner;
      ALTER DATABASE props_db SET work_mem = '12MB';
      ALTER ROLE app_reader IN DATABASE props_db SET search_path = shop, public;
      REVOKE ALL ON DATABASE props_db FROM PUBLIC;
      GRANT CONNECT ON DATABASE props_db TO app_reader;`);
    await clusterSql(source, 'props_db', `CREATE TABLE t (id int);\nINSERT INTO t VALUES (1), (2), (3)`);
    const facts = `SELECT pg_encoding_to_char(d.encoding) AS enc, d.datcollate AS collate, d.datctype AS ctype, pg_get_userbyid(d.datdba) AS owner, d.datacl::text AS acl,
        (SELECT setconfig::text FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) AS db_settings,
        (SELECT setconfig::text FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 'app_reader'::regrole) AS role_settings
      FROM pg_database d WHERE datname = 'props_db'`;
    const before = (await clusterSql(source, 'postgres', facts))[0]!;
    const passwordBefore = (await clusterSql(source, 'postgres', `SELECT rolpassword FROM pg_authid WHERE rolname = 'app_owner'`))[0]!.rolpassword;
    const { dir, to } = await bucket('props');
    const r = await cli(['dump', '--databases', 'props_db', '--to', to, '--json'], { DATABASE_URL: urlOf(source, 'postgres') });
    assert.equal(r.code, 0, r.stderr);
    const keys = await bucketKeys(dir);
    const archive = path.join(dir, keys.find((k) => k.endsWith('.dump.zst'))!);
    const globals = path.join(dir, keys.find((k) => k.endsWith('.sql.zst'))!);

    const target = await startThrowawayCluster({ minMajor: 0, workDir: work, allowSameOsUser: true });
    try {
      const bin = path.dirname(spawnSync('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim() + '/x');
      const env = { ...process.env, PGHOST: target.socketDir, PGPORT: String(target.port), PGUSER: 'postgres' };
      const sqlFile = path.join(work, 'globals.sql');
      await writeFile(sqlFile, spawnSync('zstd', ['-dc', globals]).stdout);
      // The plain-tools path: psql for the globals (the existing postgres role errors, harmlessly), then pg_restore --create.
      const psql = spawnSync(path.join(bin, 'psql'), ['-X', '-q', '-d', 'postgres', '-f', sqlFile], { env, encoding: 'utf8' });
      assert.equal(psql.status, 0, psql.stderr);
      const dump = path.join(work, 'props.dump');
      await writeFile(dump, spawnSync('zstd', ['-dc', archive]).stdout);
      const restored = spawnSync(path.join(bin, 'pg_restore'), ['--create', '--exit-on-error', '-d', 'postgres', dump], { env, encoding: 'utf8' });
      assert.equal(restored.status, 0, restored.stderr);
      const afterFacts = (await clusterSql(target, 'postgres', facts))[0]!;
      assert.deepEqual(afterFacts, before);
      assert.deepEqual(afterFacts, { enc: 'LATIN1', collate: 'C', ctype: 'C', owner: 'app_owner', acl: before.acl, db_settings: '{work_mem=12MB}', role_settings: '{"search_path=shop, public"}' });
      assert.match(String(afterFacts.acl), /app_reader=c\/app_owner/);
      assert.equal((await clusterSql(target, 'props_db', 'SELECT count(*)::int AS n FROM t'))[0]!.n, 3);
      // The role came back with its password (the same SCRAM verifier).
      assert.equal((await clusterSql(target, 'postgres', `SELECT rolpassword FROM pg_authid WHERE rolname = 'app_owner'`))[0]!.rolpassword, passwordBefore);
    } finally {
      await target.stop();
    }
  });
});
