import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { isBackupIdRef, manifestKeyOfId } from '../../src/backup/backup-id.ts';
import { applyConfigFile, scanFlag } from '../../src/cli/config.ts';
import { buildProgram } from '../../src/cli/main.ts';
import { findConfigFile, loadConfigFile } from '../../src/config/file.ts';
import { SETTINGS, configFills, effectiveSettings, fileValues, type ConfigConsumer } from '../../src/config/settings.ts';
import { UsageError } from '../../src/errors.ts';
import { root } from '../helpers.ts';

/** Writes `text` as a settings file in a temp dir removed after the test; returns its path. */
async function configFile(t: TestContext, text: string, name = 'pg-backup.yml'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-config-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

/** The one-line UsageError `fn` throws. */
function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UsageError, `a UsageError, not ${String(err)}`);
    assert.doesNotMatch(err.message, /\n/, 'one line');
    return err.message;
  }
  assert.fail('no error thrown');
}

/** A consumer for `command` with these flags, of which `given` were given on the command line. */
function consumer(command: string, flags: string[], given: string[] = [], environment?: string): ConfigConsumer {
  return { command, has: (f) => flags.includes(f), given: (f) => given.includes(f), environment };
}

const FULL = `# every key
location:
  url: s3://backups/pg
  endpoint: https://r2.example.com
  region: auto
service: api
environment: staging
databases: [app]
profile: neon
retention:
  keep-last: 7
  keep-daily: 14
  max-age: 90d
  keep-proven: 2
notify:
  url: \${PGB_TEST_SLACK}
  on: always
  pushgateway-url: https://push:\${PGB_TEST_PUSH_PW}@push.example.com
drill:
  max-rto: 30m
  max-rpo: 30h
  smoke-sql: checks/smoke.sql
  jobs: 4
environments:
  production:
    location: s3://backups-prod/pg
    retention:
      keep-last: 30
    drill:
      max-rto: 15m
`;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('settings file: schema and line-numbered errors', () => {
  it('accepts every documented key', async (t) => {
    const config = loadConfigFile(await configFile(t, FULL));
    assert.equal(config.content.location?.url, 's3://backups/pg');
    assert.deepEqual(config.content.databases, ['app']);
    assert.equal(config.content.retention?.['keep-daily'], 14);
    assert.equal(config.content.environments?.production?.location?.url, 's3://backups-prod/pg');
    assert.deepEqual(loadConfigFile(await configFile(t, '')).content, {}, 'an empty file is no settings');
  });

  it('an unknown key (a typo) names the file, line and column, and suggests the key', async (t) => {
    const file = await configFile(t, 'service: api\nretention:\n  keep-last: 3\n  keep_daily: 7\n');
    assert.match(usageError(() => loadConfigFile(file)), new RegExp(`^${escape(file)}:4:3: unknown key "keep_daily" in retention \\(did you mean "keep-daily"\\?\\): fix or remove it \\(known here: keep-last, keep-daily,`));
    const top = await configFile(t, 'locaton: s3://b/p\n');
    assert.match(usageError(() => loadConfigFile(top)), /:1:1: unknown key "locaton" \(did you mean "location"\?\)/);
    const section = await configFile(t, 'environments:\n  production:\n    service: api\n    environment: prod\n');
    assert.match(usageError(() => loadConfigFile(section)), /:4:5: unknown key "environment" in environments\.production: fix or remove it/);
  });

  it('a wrong type or value names the key, line, column and what is expected', async (t) => {
    const count = await configFile(t, 'retention:\n  keep-last: seven\n');
    assert.match(usageError(() => loadConfigFile(count)), /:2:14: retention\.keep-last must be a whole number, e.g\. 7 \(got "seven"\): fix the value$/);
    const duration = await configFile(t, 'drill:\n  max-rto: soon\n');
    assert.match(usageError(() => loadConfigFile(duration)), /:2:12: drill\.max-rto must be a duration: .*\(got "soon"\)/);
    const list = await configFile(t, 'databases:\n  nested: true\n');
    assert.match(usageError(() => loadConfigFile(list)), /:2:3: databases must be a list of database names/);
    const scheme = await configFile(t, 'location: http://bucket/prefix\n');
    assert.match(usageError(() => loadConfigFile(scheme)), /:1:11: location must be s3:\/\/BUCKET\/PREFIX or file:\/\/\/DIR: fix the value$/);
    const on = await configFile(t, 'notify:\n  on: sometimes\n');
    assert.match(usageError(() => loadConfigFile(on)), /:2:7: notify\.on must be failure or always \(got "sometimes"\)/);
  });

  it('bad YAML names the line and column of the syntax error', async (t) => {
    const file = await configFile(t, 'service: api\nretention:\n  keep-last: [1\n');
    assert.match(usageError(() => loadConfigFile(file)), new RegExp(`^${escape(file)}:\\d+:\\d+: not valid YAML: .+: fix the file's syntax$`));
    const dup = await configFile(t, 'service: api\nservice: web\n');
    assert.match(usageError(() => loadConfigFile(dup)), /:2:1: not valid YAML: Map keys must be unique/);
  });

  it('refuses credentials written into the file, without echoing them', async (t) => {
    const password = await configFile(t, 'location:\n  url: s3://bucket/p\n  endpoint: https://user:hunter22@minio.internal\n');
    const m1 = usageError(() => loadConfigFile(password));
    assert.match(m1, /:3:13: location\.endpoint holds a literal password: .* write \$\{NAME\} in its place$/);
    assert.doesNotMatch(m1, /hunter22/);
    const webhook = await configFile(t, 'notify:\n  url: https://hooks.slack.com/services/T0/B0/tok3n\n');
    const m2 = usageError(() => loadConfigFile(webhook));
    assert.match(m2, /:2:8: notify\.url is a credential .* write \$\{NAME\} and set the environment variable NAME/);
    assert.doesNotMatch(m2, /tok3n/);
    // A reference is fine, also in a URL's password place.
    loadConfigFile(await configFile(t, 'notify:\n  url: ${SLACK}\n  pushgateway-url: https://u:${PW}@push.example\n'));
  });

  it('finds the file: --config, then $PG_BACKUP_CONFIG, then ./pg-backup.yml; a named file must exist', async (t) => {
    const file = await configFile(t, 'service: api\n');
    const dir = path.dirname(file);
    assert.equal(findConfigFile(undefined, dir, {}), file);
    assert.equal(findConfigFile(undefined, os.tmpdir() + '/pgb-no-such-dir', {}), undefined);
    const other = path.join(dir, 'other.yml');
    await writeFile(other, 'service: web\n');
    assert.equal(findConfigFile(undefined, dir, { PG_BACKUP_CONFIG: 'other.yml' }), other);
    assert.equal(findConfigFile('pg-backup.yml', dir, { PG_BACKUP_CONFIG: 'other.yml' }), file, 'the flag wins');
    assert.match(usageError(() => findConfigFile('missing.yml', dir, {})), /^configuration file missing\.yml not found or not readable: /);
    assert.match(usageError(() => findConfigFile(undefined, dir, { PG_BACKUP_CONFIG: 'gone.yml' })), /named by \$PG_BACKUP_CONFIG/);
  });
});

describe('settings file: merge and precedence', () => {
  it('the environment section overrides the top level, key by key; location as a whole', async (t) => {
    const config = loadConfigFile(await configFile(t, FULL));
    const staging = fileValues(config, 'staging');
    assert.equal(staging.get('location')!.raw, 's3://backups/pg');
    assert.equal(staging.get('retention.keep-last')!.raw, '7');
    const production = fileValues(config, 'production');
    assert.equal(production.get('location')!.raw, 's3://backups-prod/pg');
    assert.equal(production.get('location')!.section, 'environments.production');
    assert.equal(production.get('location')!.line, 26);
    assert.equal(production.get('location.endpoint'), undefined, "the section's location replaces the endpoint too");
    assert.equal(production.get('retention.keep-last')!.raw, '30');
    assert.equal(production.get('retention.keep-daily')!.raw, '14', 'keys the section does not set come from the top level');
    assert.equal(production.get('drill.max-rto')!.raw, '15m');
    assert.equal(production.get('drill.max-rpo')!.raw, '30h');
  });

  it('fills only the flags a command has and the user did not give; environment variables of a setting win', async (t) => {
    const config = loadConfigFile(await configFile(t, FULL));
    const env = { PGB_TEST_SLACK: 'https://hooks.slack.com/services/T/B/x', PGB_TEST_PUSH_PW: 'pushpw' };
    const prune = configFills(config, consumer('prune', ['from', 'service', 'environment', 'database', 'keep-last', 'keep-daily', 'max-age', 'keep-proven', 'endpoint', 'region', 'notify-url', 'notify-on'], ['keep-daily']), env);
    const byFlag = Object.fromEntries(prune.map((f) => [f.flag, f.value]));
    assert.deepEqual(byFlag, {
      from: 's3://backups/pg',
      endpoint: 'https://r2.example.com',
      region: 'auto',
      service: 'api',
      environment: 'staging',
      database: 'app',
      'keep-last': '7',
      'max-age': '90d',
      'keep-proven': '2',
      'notify-url': env.PGB_TEST_SLACK,
      'notify-on': 'always',
    });
    // verify's --max-age is freshness, not retention; dump takes --to and --databases.
    const verify = configFills(config, consumer('verify', ['from', 'max-age']), env);
    assert.deepEqual(verify.map((f) => f.flag), ['from']);
    const dump = configFills(config, consumer('dump', ['to', 'databases', 'jobs']), env);
    assert.deepEqual(dump.map((f) => [f.flag, f.value]), [['to', 's3://backups/pg'], ['databases', 'app']]);
    // An environment variable of the setting wins over the file (AWS_REGION over location.region).
    const region = configFills(config, consumer('list', ['from', 'region']), { ...env, AWS_REGION: 'eu-west-1' });
    assert.deepEqual(region.map((f) => f.flag), ['from']);
    // `verify --wal-prefix` checks a WAL archive: the file's location does not become --from.
    assert.deepEqual(configFills(config, consumer('verify', ['from', 'wal-prefix'], ['wal-prefix']), env).map((f) => f.flag), []);
  });

  it('the environment given chooses the section; the drill section fills the drill only, smoke SQL relative to the file', async (t) => {
    const file = await configFile(t, FULL);
    const config = loadConfigFile(file);
    const drill = configFills(config, consumer('drill', ['from', 'environment', 'max-rto', 'max-rpo', 'smoke-sql', 'jobs'], ['environment'], 'production'));
    assert.deepEqual(Object.fromEntries(drill.map((f) => [f.flag, f.value])), {
      from: 's3://backups-prod/pg',
      'max-rto': '15m',
      'max-rpo': '30h',
      'smoke-sql': path.join(path.dirname(file), 'checks/smoke.sql'),
      jobs: '4',
    });
    assert.deepEqual(configFills(config, consumer('status', ['from', 'rto-budget', 'max-age'])).map((f) => [f.flag, f.value]), [['from', 's3://backups/pg'], ['rto-budget', '30m']]);
  });

  it('several databases fill dump --databases, not the --database filter', async (t) => {
    const config = loadConfigFile(await configFile(t, 'location: file:///b\ndatabases: app, billing\n'));
    assert.deepEqual(configFills(config, consumer('dump', ['to', 'databases'])).map((f) => f.value), ['file:///b', 'app,billing']);
    assert.deepEqual(configFills(config, consumer('verify', ['from', 'database'])).map((f) => f.flag), ['from']);
  });

  it('an unset ${VAR} fails only a command that uses the setting, naming the line', async (t) => {
    const config = loadConfigFile(await configFile(t, 'location: file:///b\nnotify:\n  url: ${PGB_TEST_UNSET_HOOK}\n'));
    assert.deepEqual(configFills(config, consumer('list', ['from']), {}).map((f) => f.flag), ['from']);
    assert.match(usageError(() => configFills(config, consumer('dump', ['to', 'notify-url']), {})), /:3:8: notify\.url refers to \$\{PGB_TEST_UNSET_HOOK\}, which is not set: set the environment variable PGB_TEST_UNSET_HOOK, or remove the key$/);
  });

  it('effective settings: flag > env > file > default, secrets redacted', async (t) => {
    const config = loadConfigFile(await configFile(t, FULL));
    const rows = effectiveSettings(config, { environment: 'production', defaults: new Map([['notify.timeout', '10s'], ['service', 'default']]) }, { PGB_TEST_SLACK: 'https://hooks.slack.com/services/T/B/s3cr3t', PGB_TEST_PUSH_PW: 'pushpw', AWS_REGION: 'eu-west-1' });
    const row = (key: string) => rows.find((r) => r.key === key)!;
    assert.deepEqual([row('environment').source, row('environment').value], ['flag', 'production']);
    assert.deepEqual([row('location.region').source, row('location.region').value, row('location.region').origin], ['env', 'eu-west-1', 'env AWS_REGION']);
    assert.equal(row('location').source, 'file');
    assert.match(row('location').origin, /:26:15 \(environments\.production\)$/);
    assert.equal(row('notify.url').value, '***');
    assert.match(row('notify.url').origin, /\(top level, \$\{PGB_TEST_SLACK\}\)/);
    assert.equal(row('notify.pushgateway-url').value, 'https://push:***@push.example.com');
    assert.deepEqual([row('notify.timeout').source, row('notify.timeout').value], ['default', '10s']);
    assert.equal(row('notify.healthcheck-url').source, 'unset');
    assert.doesNotMatch(JSON.stringify(rows), /s3cr3t|pushpw/);
  });
});

describe('settings file in the CLI (commander sources)', () => {
  /** Parses `args` with the real program, as main() does, after applying the file; returns the command's options and sources. */
  async function parsed(args: string[]) {
    const program = buildProgram(new AbortController().signal, () => undefined);
    let seen: { values: Record<string, unknown>; sources: Record<string, string | undefined> } | undefined;
    const name = args[0]!;
    const command = program.commands.find((c) => c.name() === name)!;
    command.hook('preAction', (cmd) => {
      const values = cmd.opts();
      seen = { values, sources: Object.fromEntries(Object.keys(values).map((k) => [k, cmd.getOptionValueSource(k)])) };
      throw new Error('stop before the action');
    });
    program.exitOverride();
    await assert.rejects(program.parseAsync(['node', 'pg-backup', ...args]), /stop before the action/);
    return seen!;
  }

  it('fills what the command line leaves out; a flag wins, then an environment variable, then the file, then the default', async (t) => {
    const file = await configFile(t, 'location: file:///tmp/pgb-config-unit\nservice: api\nenvironment: staging\nretention:\n  keep-last: 5\nnotify:\n  url: ${PGB_TEST_HOOK}\n  on: always\nenvironments:\n  production:\n    location: file:///tmp/pgb-config-unit-prod\n');
    process.env.PGB_TEST_HOOK = 'https://hooks.example/from-file';
    t.after(() => {
      delete process.env.PGB_TEST_HOOK;
      delete process.env.PG_BACKUP_NOTIFY_URL;
    });
    const a = await parsed(['prune', '--config', file, '--keep-last', '9']);
    assert.deepEqual([a.values.from, a.sources.from], ['file:///tmp/pgb-config-unit', 'config']);
    assert.deepEqual([a.values.keepLast, a.sources.keepLast], ['9', 'cli']);
    assert.deepEqual([a.values.service, a.sources.service], ['api', 'config']);
    assert.deepEqual([a.values.notifyOn, a.sources.notifyOn], ['always', 'config']);
    assert.deepEqual([a.values.notifyUrl, a.sources.notifyUrl], ['https://hooks.example/from-file', 'config']);
    assert.deepEqual([a.values.incompleteGrace, a.sources.incompleteGrace], ['1d', 'default']);
    process.env.PG_BACKUP_NOTIFY_URL = 'https://hooks.example/from-env';
    const b = await parsed(['prune', `--config=${file}`, '--environment', 'production']);
    assert.deepEqual([b.values.notifyUrl, b.sources.notifyUrl], ['https://hooks.example/from-env', 'env']);
    assert.deepEqual([b.values.from, b.values.environment, b.sources.environment], ['file:///tmp/pgb-config-unit-prod', 'production', 'cli']);
    // dump: --to is required, and the file gives it; --service's default gives way to the file.
    const c = await parsed(['dump', '--config', file]);
    assert.deepEqual([c.values.to, c.values.service, c.sources.service], ['file:///tmp/pgb-config-unit', 'api', 'config']);
  });

  it('scans the raw arguments for --config and --environment as commander reads them', () => {
    assert.equal(scanFlag(['--from', 'x', '--config', 'a.yml'], 'config'), 'a.yml');
    assert.equal(scanFlag(['--config=b.yml'], 'config'), 'b.yml');
    assert.equal(scanFlag(['--config', 'a.yml', '--', '--config', 'z'], 'config'), 'a.yml');
    assert.equal(scanFlag(['--json'], 'config'), undefined);
    assert.equal(scanFlag(['--config'], 'config'), true);
  });

  it('leaves demo and --help alone', async (t) => {
    const file = await configFile(t, 'nonsense: [\n');
    const program = buildProgram(new AbortController().signal, () => undefined);
    const list = program.commands.find((c) => c.name() === 'list')!;
    assert.equal(await applyConfigFile(list, ['--config', file, '--help']), undefined);
    assert.equal(await applyConfigFile(program.commands.find((c) => c.name() === 'demo')!, ['--config', file]), undefined);
    await assert.rejects(applyConfigFile(list, ['--config', file]), UsageError);
  });
});

describe('backup ids', () => {
  const entries = [
    { id: 'app-20261207T101500Z-0a1b2c', manifestKey: 'api/production/app/2026/12/07/app-20261207T101500Z-0a1b2c.manifest.json' },
    { id: 'app-20261206T101500Z-ffffff', manifestKey: 'api/production/app/2026/12/06/app-20261206T101500Z-ffffff.manifest.json' },
    { id: 'app-20261206T101500Z-ffffff', manifestKey: 'web/production/app/2026/12/06/app-20261206T101500Z-ffffff.manifest.json' },
  ];

  it('tells an id from a key, a URI and latest', () => {
    assert.equal(isBackupIdRef('app-20261207T101500Z-0a1b2c'), true);
    assert.equal(isBackupIdRef('app-20261207T101500Z-0a1b2c.dump.zst'), true);
    assert.equal(isBackupIdRef('latest'), false);
    assert.equal(isBackupIdRef(entries[0]!.manifestKey), false);
    assert.equal(isBackupIdRef('s3://b/p/x.manifest.json'), false);
  });

  it('resolves an id (or its file name) to its manifest key; unknown and ambiguous ids are usage errors', () => {
    assert.equal(manifestKeyOfId('s3://b/p', 'app-20261207T101500Z-0a1b2c', entries), entries[0]!.manifestKey);
    assert.equal(manifestKeyOfId('s3://b/p', 'app-20261207T101500Z-0a1b2c.manifest.json', entries), entries[0]!.manifestKey);
    assert.match(usageError(() => manifestKeyOfId('s3://b/p', 'app-20250101T000000Z-000000', entries, { service: 'api' })), /^no complete backup with id "app-20250101T000000Z-000000" under s3:\/\/b\/p for api: copy an id or key from "pg-backup list"/);
    assert.match(usageError(() => manifestKeyOfId('s3://b/p', 'app-20261206T101500Z-ffffff', entries)), /^backup id "app-20261206T101500Z-ffffff" is ambiguous: 2 backups under s3:\/\/b\/p have it \(api\/.*, web\/.*\); give the key instead/);
  });
});

describe('the documented example', () => {
  it('docs/examples/config/pg-backup.yml is valid and means what docs/configuration.md says', async () => {
    const config = loadConfigFile(path.join(root, 'docs/examples/config/pg-backup.yml'));
    const production = fileValues(config, 'production');
    assert.equal(production.get('location')!.raw, 's3://acme-backups-prod/pg');
    assert.equal(production.get('location.endpoint'), undefined);
    assert.equal(production.get('retention.keep-daily')!.raw, '30');
    assert.equal(production.get('retention.keep-last')!.raw, '7');
    const docs = await readFile(path.join(root, 'docs/configuration.md'), 'utf8');
    for (const spec of SETTINGS) assert.ok(docs.includes(`\`${spec.key}\``), `docs/configuration.md documents ${spec.key}`);
  });
});
