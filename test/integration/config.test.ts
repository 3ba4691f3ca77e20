import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { createDatabase, dbUrl, root, run, runActionBundle, type RunResult } from '../helpers.ts';

// pg-backup.yml end to end: the CLI run in a directory holding only the settings file (no
// --from/--to, --service, --environment on the command line), a file:// bucket and the shared
// PostgreSQL; an action bundle given `config:`; backup ids wherever a key is taken.

/** A temp working directory (removed after the test) with `pg-backup.yml` holding `text`; `bucket`: a file:// location inside it. */
async function workdir(t: TestContext, text: (dir: string) => string): Promise<{ dir: string; bucket: (name: string) => string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-config-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const b of ['staging', 'production']) await mkdir(path.join(dir, b));
  await writeFile(path.join(dir, 'pg-backup.yml'), text(dir));
  return { dir, bucket: (name) => `file://${path.join(dir, name)}` };
}

/** Runs `pg-backup` in `cwd`, with no S3 or database variables but those given. */
function pgBackup(cwd: string, args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  return run(process.execPath, [path.join(root, 'bin/pg-backup.js'), ...args], {
    cwd,
    env: { DATABASE_URL: undefined, PG_BACKUP_CONFIG: undefined, PG_BACKUP_NOTIFY_URL: undefined, PG_BACKUP_HEALTHCHECK_URL: undefined, AWS_ENDPOINT_URL_S3: undefined, AWS_ENDPOINT_URL: undefined, AWS_REGION: undefined, ...env },
  });
}

/** The keys under a file:// bucket directory (relative, `/`-separated). */
async function keys(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

describe('pg-backup.yml: the CLI with only a settings file', () => {
  it('dump, list, verify and drill read location, service, environment, databases and the drill budget from the file', async (t) => {
    const db = await createDatabase('cfg');
    const w = await workdir(t, (dir) => `location: file://${dir}/staging
service: api
environment: staging
databases: [${db}]
drill:
  max-rto: 1ms
  jobs: 2
environments:
  production:
    location: file://${dir}/production
    drill:
      max-rto: 1h
`);
    const env = { DATABASE_URL: dbUrl('postgres') };
    const dumped = await pgBackup(w.dir, ['dump', '--json'], env);
    assert.equal(dumped.code, 0, dumped.stderr);
    const manifest = JSON.parse(dumped.stdout);
    assert.equal(manifest.database, db, 'databases: from the file');
    assert.match(manifest.backupUri, new RegExp(`^${w.bucket('staging')}/api/staging/${db}/`));

    const listed = await pgBackup(w.dir, ['list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const [entry, ...rest] = JSON.parse(listed.stdout).filter((b: { kind: string }) => b.kind === 'database'); // the run's globals beside it
    assert.equal(rest.length, 0);
    assert.deepEqual([entry.id, entry.service, entry.environment], [manifest.id, 'api', 'staging']);

    // The id list --json shows is accepted wherever a key is.
    const verified = await pgBackup(w.dir, ['verify', '--backup', entry.id, '--json']);
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(JSON.parse(verified.stdout).backupId, manifest.id);

    // drill.max-rto: 1ms from the top level: the drill restores, then fails its budget (exit 1).
    const drilled = await pgBackup(w.dir, ['drill', '--backup', entry.id, '--json']);
    assert.equal(drilled.code, 1, drilled.stderr);
    const report = JSON.parse(drilled.stdout);
    assert.equal(report.backupId, manifest.id);
    assert.match(report.reason, /exceeds the budget --max-rto 1ms/);
    // A flag wins over the file.
    const withFlag = await pgBackup(w.dir, ['drill', '--backup', report.backupId, '--max-rto', '1h', '--json']);
    assert.equal(withFlag.code, 0, withFlag.stderr);
    assert.equal(JSON.parse(withFlag.stdout).ok, true);
  });

  it('--environment chooses the section of environments:, and a flag overrides the file', async (t) => {
    const db = await createDatabase('cfgenv', false);
    const w = await workdir(t, (dir) => `location: file://${dir}/staging
service: api
environment: staging
environments:
  production:
    location: file://${dir}/production
    service: billing
`);
    const env = { DATABASE_URL: dbUrl(db) };
    const prod = await pgBackup(w.dir, ['dump', '--environment', 'production', '--json'], env);
    assert.equal(prod.code, 0, prod.stderr);
    assert.match(JSON.parse(prod.stdout).backupUri, new RegExp(`^${w.bucket('production')}/billing/production/${db}/`));
    const staging = await pgBackup(w.dir, ['dump', '--service', 'web', '--json'], env);
    assert.equal(staging.code, 0, staging.stderr);
    assert.match(JSON.parse(staging.stdout).backupUri, new RegExp(`^${w.bucket('staging')}/web/staging/${db}/`), '--service wins over the file');
    assert.equal((await keys(path.join(w.dir, 'production'))).filter((k) => k.endsWith('.manifest.json') && !k.includes('/@globals/')).length, 1);
    assert.equal((await keys(path.join(w.dir, 'staging'))).filter((k) => k.endsWith('.manifest.json') && !k.includes('/@globals/')).length, 1);

    // list in production sees billing's backup; the default (staging) section with the file's service sees none.
    const listedProd = JSON.parse((await pgBackup(w.dir, ['list', '--environment', 'production', '--json'])).stdout);
    assert.deepEqual(listedProd.filter((b: { kind: string }) => b.kind === 'database').map((b: { service: string }) => b.service), ['billing']);
    const listedApi = await pgBackup(w.dir, ['list', '--json']);
    assert.deepEqual(JSON.parse(listedApi.stdout), []);
    const listedWeb = JSON.parse((await pgBackup(w.dir, ['list', '--service', 'web', '--json'])).stdout);
    assert.equal(listedWeb.filter((b: { kind: string }) => b.kind === 'database').length, 1);
    // --config names another file; --from overrides its location.
    await writeFile(path.join(w.dir, 'other.yml'), `location: file://${w.dir}/production\n`);
    const other = JSON.parse((await pgBackup(w.dir, ['list', '--config', 'other.yml', '--json'])).stdout);
    assert.deepEqual(other.filter((b: { kind: string }) => b.kind === 'database').map((b: { service: string }) => b.service), ['billing']);
    const fromFlag = JSON.parse((await pgBackup(w.dir, ['list', '--config', 'other.yml', '--from', w.bucket('staging'), '--json'])).stdout);
    assert.deepEqual(fromFlag.filter((b: { kind: string }) => b.kind === 'database').map((b: { service: string }) => b.service), ['web']);
  });

  it('an invalid file stops every command with one line naming file, line and column (exit 2), before any work', async (t) => {
    const w = await workdir(t, (dir) => `location: file://${dir}/staging\nretention:\n  keep-lats: 3\n`);
    for (const args of [['list'], ['prune'], ['config', 'check']]) {
      const r = await pgBackup(w.dir, args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, 'pg-backup: pg-backup.yml:3:3: unknown key "keep-lats" in retention (did you mean "keep-last"?): fix or remove it (known here: keep-last, keep-daily, keep-weekly, keep-monthly, max-age, keep-proven, incomplete-grace, keep-safety-dumps)\n');
      assert.equal(r.stdout, '');
    }
    // --help still works.
    assert.equal((await pgBackup(w.dir, ['list', '--help'])).code, 0);
  });

  it('config check prints every effective setting with its source, passwords and webhook URLs redacted', async (t) => {
    const w = await workdir(t, (dir) => `location:
  url: file://${dir}/staging
  endpoint: https://backup:\${PGB_TEST_S3_PASSWORD}@s3.internal.example
service: api
environment: staging
notify:
  url: \${PGB_TEST_WEBHOOK}
  pushgateway-url: https://push:\${PGB_TEST_PUSH_PASSWORD}@push.example:9091
retention:
  keep-daily: 7
environments:
  production:
    retention:
      keep-daily: 30
`);
    const env = { PGB_TEST_S3_PASSWORD: 'Sup3rS3cret', PGB_TEST_WEBHOOK: 'https://hooks.slack.com/services/T00/B00/w3bh00kt0ken', PGB_TEST_PUSH_PASSWORD: 'pushpa55', AWS_REGION: 'eu-central-1' };
    const text = await pgBackup(w.dir, ['config', 'check', '--environment', 'production'], env);
    assert.equal(text.code, 0, text.stderr);
    for (const secret of Object.values(env).slice(0, 3)) assert.ok(!text.stdout.includes(secret) && !text.stderr.includes(secret), `${secret} is redacted`);
    const line = (key: string) => text.stdout.split('\n').find((l) => l.startsWith(`${key} `)) ?? '';
    assert.match(text.stdout, /^configuration file: pg-backup\.yml\nenvironment: production; environments\.production overrides the top level\n/);
    assert.match(line('location.endpoint'), /^location\.endpoint +https:\/\/backup:\*\*\*@s3\.internal\.example +file +pg-backup\.yml:3:13 \(top level, \$\{PGB_TEST_S3_PASSWORD\}\)$/);
    assert.match(line('notify.url'), /^notify\.url +\*\*\* +file +pg-backup\.yml:7:8/);
    assert.match(line('notify.pushgateway-url'), /https:\/\/push:\*\*\*@push\.example:9091 +file/);
    assert.match(line('environment'), /production +flag +flag --environment$/);
    assert.match(line('location.region'), /eu-central-1 +env +env AWS_REGION$/);
    assert.match(line('retention.keep-daily'), /30 +file +pg-backup\.yml:14:19 \(environments\.production\)$/);
    assert.match(line('retention.keep-proven'), /1 +default +default$/);
    assert.match(line('service'), /api +file/);

    const json = await pgBackup(w.dir, ['config', 'check', '--json'], env);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout);
    assert.equal(parsed.environment, 'staging');
    assert.equal(parsed.section, null);
    const setting = (key: string) => parsed.settings.find((s: { key: string }) => s.key === key);
    assert.deepEqual([setting('retention.keep-daily').value, setting('retention.keep-daily').source], ['7', 'file']);
    assert.deepEqual([setting('notify.url').value, setting('notify.url').source], ['***', 'file']);
    for (const secret of Object.values(env).slice(0, 3)) assert.ok(!json.stdout.includes(secret));

    // A variable the file refers to that is not set: exit 2, one line.
    const unset = await pgBackup(w.dir, ['config', 'check'], { ...env, PGB_TEST_WEBHOOK: undefined });
    assert.equal(unset.code, 2);
    assert.equal(unset.stderr, 'pg-backup: pg-backup.yml:7:8: notify.url refers to ${PGB_TEST_WEBHOOK}, which is not set: set the environment variable PGB_TEST_WEBHOOK, or remove the key\n');
  });

  it('backup ids: verify, drill and restore take one; an unknown or ambiguous id is one line, exit 2', async (t) => {
    const db = await createDatabase('cfgid');
    const w = await workdir(t, (dir) => `location: file://${dir}/staging\nenvironment: staging\n`);
    const dumped = await pgBackup(w.dir, ['dump', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(dumped.code, 0, dumped.stderr);
    const { id } = JSON.parse(dumped.stdout);
    const drilled = await pgBackup(w.dir, ['drill', '--backup', id]);
    assert.equal(drilled.code, 0, drilled.stderr);
    assert.match(drilled.stdout + drilled.stderr, /restore drill OK/);
    const target = await createDatabase('cfgidtarget', false);
    const restored = await pgBackup(w.dir, ['restore', '--backup', `${id}.manifest.json`, '--target-url', dbUrl(target), '--json']);
    assert.equal(restored.code, 0, restored.stderr);

    const unknown = await pgBackup(w.dir, ['verify', '--backup', `${db}-20200101T000000Z-000000`]);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr, `pg-backup: no complete backup with id "${db}-20200101T000000Z-000000" under ${w.bucket('staging')} for staging: copy an id or key from "pg-backup list", or give --backup latest\n`);
    // The same backup copied under another service: the id alone is ambiguous there; --service decides.
    await cp(path.join(w.dir, 'staging', 'default'), path.join(w.dir, 'staging', 'copy'), { recursive: true });
    await writeFile(path.join(w.dir, 'wide.yml'), `location: file://${w.dir}/staging\n`);
    const ambiguous = await pgBackup(w.dir, ['verify', '--config', 'wide.yml', '--backup', id]);
    assert.equal(ambiguous.code, 2);
    assert.match(ambiguous.stderr, new RegExp(`^pg-backup: backup id "${id}" is ambiguous: 2 backups under ${w.bucket('staging')} have it \\(.+\\); give the key instead, or narrow with --service/--environment/--database\\n$`));
    assert.ok(ambiguous.stderr.includes(`copy/staging/${db}/`) && ambiguous.stderr.includes(`default/staging/${db}/`), ambiguous.stderr);
    const narrowed = await pgBackup(w.dir, ['verify', '--config', 'wide.yml', '--backup', id, '--service', 'copy', '--level', 'checksum']);
    assert.equal(narrowed.code, 0, narrowed.stderr);
  });
});

describe('pg-backup.yml in the actions (config: input)', () => {
  it('dump and prune bundles take location, service, environment and retention from the file; inputs win', async (t) => {
    const db = await createDatabase('cfgaction', false);
    const w = await workdir(t, (dir) => `location: file://${dir}/staging
service: api
environment: staging
retention:
  keep-last: 1
environments:
  production:
    location: file://${dir}/production
`);
    const workspace = { GITHUB_WORKSPACE: w.dir };
    const first = await runActionBundle('dump', { config: 'pg-backup.yml', 'database-url': dbUrl(db) }, workspace);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.outputs['backup-uri']!, new RegExp(`^${w.bucket('staging')}/api/staging/${db}/`));
    assert.match(first.stdout, /settings from pg-backup\.yml: to, service, environment/);
    await new Promise((r) => setTimeout(r, 1100)); // a second backup in another second
    const second = await runActionBundle('dump', { config: 'pg-backup.yml', 'database-url': dbUrl(db) }, workspace);
    assert.equal(second.code, 0, second.stdout + second.stderr);
    const prod = await runActionBundle('dump', { config: 'pg-backup.yml', 'database-url': dbUrl(db), environment: 'production', service: 'billing' }, workspace);
    assert.equal(prod.code, 0, prod.stdout + prod.stderr);
    assert.match(prod.outputs['backup-uri']!, new RegExp(`^${w.bucket('production')}/billing/production/${db}/`), 'the environment input chooses the section; the service input wins');

    // prune: keep-last 1 from the file, applied.
    const pruned = await runActionBundle('prune', { config: 'pg-backup.yml', apply: 'true' }, workspace);
    assert.equal(pruned.code, 0, pruned.stdout + pruned.stderr);
    assert.equal(pruned.outputs.deleted, '1');
    assert.equal((await keys(path.join(w.dir, 'staging'))).filter((k) => k.endsWith('.manifest.json') && !k.includes('/@globals/')).length, 1);

    // An invalid file fails the step with the file's line.
    await writeFile(path.join(w.dir, 'bad.yml'), 'service: api\nretention:\n  keep-last: many\n');
    const bad = await runActionBundle('verify', { config: 'bad.yml' }, workspace);
    assert.equal(bad.code, 2);
    assert.match(bad.stdout, /^::error::bad\.yml:3:14: retention\.keep-last must be a whole number, e\.g\. 7 \(got "many"\): fix the value$/m);
  });
});
