import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError, registerSecret } from '../../src/errors.ts';
import { pingUrl } from '../../src/notify/healthcheck.ts';
import { reportingSettings } from '../../src/notify/index.ts';
import { parseKeptSeries, pushgatewayGroupUrl, registryOf, seriesOf } from '../../src/notify/metrics.ts';
import { buildReport, type RunReport } from '../../src/notify/report.ts';
import { webhookMessage } from '../../src/notify/webhook.ts';
import { deliver, shownUrl, urlSecrets, withBasicAuth } from '../../src/notify/deliver.ts';
import { redact } from '../../src/errors.ts';

const started = new Date('2026-12-02T03:00:00Z');
const finished = new Date('2026-12-02T03:00:10Z');

function report(ok: boolean, extra: Partial<RunReport> = {}): RunReport {
  return {
    command: 'dump',
    ok,
    reason: ok ? undefined : 'pg_dump exited 1',
    startedAt: started,
    finishedAt: finished,
    targets: [{ labels: { service: 'api', environment: 'production', database: 'app' }, ok, reason: ok ? undefined : 'pg_dump exited 1', sizeBytes: 1234, backupKey: 'api/production/app/2026/12/02/app-x.dump.zst', durationSeconds: 10 }],
    ...extra,
  };
}

describe('metrics', () => {
  it('a success sets last success and size; a failure sets neither, so the previous values survive', () => {
    const ok = report(true);
    const names = (r: RunReport) => seriesOf(r, r.targets[0]!).map((s) => s.name).sort();
    assert.deepEqual(names(ok), ['pg_backup_duration_seconds', 'pg_backup_last_run_success', 'pg_backup_last_run_timestamp_seconds', 'pg_backup_last_success_timestamp_seconds', 'pg_backup_size_bytes']);
    assert.deepEqual(names(report(false)), ['pg_backup_duration_seconds', 'pg_backup_last_run_success', 'pg_backup_last_run_timestamp_seconds']);
    const success = seriesOf(ok, ok.targets[0]!).find((s) => s.name === 'pg_backup_last_success_timestamp_seconds')!;
    assert.equal(success.value, finished.getTime() / 1000);
    assert.deepEqual(success.labels, { command: 'dump', service: 'api', environment: 'production', database: 'app' }, 'empty stanza/major left off');
  });

  it('reads back what it wrote, escaped label values included', async () => {
    const r = report(true);
    r.targets[0]!.labels = { service: 'a"b', environment: 'back\\slash', database: 'new\nline', major: '17' };
    const text = await registryOf(seriesOf(r, r.targets[0]!)).metrics();
    const kept = parseKeptSeries(text);
    assert.deepEqual(kept.map((s) => s.name).sort(), ['pg_backup_last_success_timestamp_seconds', 'pg_backup_size_bytes']);
    assert.deepEqual(kept[0]!.labels, { command: 'dump', service: 'a"b', environment: 'back\\slash', database: 'new\nline', major: '17' });
  });

  it('Pushgateway groups: job per command, database in the key, base64 for a slash or an empty value, no credentials in the URL', () => {
    const t = report(true).targets[0]!;
    assert.equal(pushgatewayGroupUrl(new URL('https://u:p@push.example/prefix/'), 'dump', t).href, 'https://push.example/prefix/metrics/job/pg_backup_dump/service/api/environment/production/database/app');
    const slash = { ...t, labels: { ...t.labels, database: 'a/b', stanza: 'main' } };
    assert.equal(pushgatewayGroupUrl(new URL('http://push:9091'), 'drill', slash).pathname, `/metrics/job/pg_backup_drill/service/api/environment/production/database@base64/${Buffer.from('a/b').toString('base64url')}/stanza/main`);
  });
});

describe('healthcheck pings', () => {
  it('appends /start and /fail to the path, keeps the query, adds the run id', () => {
    assert.equal(pingUrl('https://hc-ping.com/abc', 'start', 'r1').href, 'https://hc-ping.com/abc/start?rid=r1');
    assert.equal(pingUrl('https://hc-ping.com/abc/', 'success', 'r1').href, 'https://hc-ping.com/abc?rid=r1');
    assert.equal(pingUrl('https://hc-ping.com/key/backup-api?create=1', 'fail', 'r1').href, 'https://hc-ping.com/key/backup-api/fail?create=1&rid=r1');
  });
});

describe('webhook message', () => {
  it('has Slack/Teams text and the structured fields; secrets redacted', () => {
    registerSecret('s3cr3t-value');
    registerSecret('pa"ss\\word');
    const r = report(false, { reason: 'connection to postgresql://u:pw@db/app failed: s3cr3t-value', runUrl: 'https://github.com/o/r/actions/runs/1' });
    const m = webhookMessage(r);
    assert.match(m.text, /^❌ pg-backup dump FAILED: api\/production\/app: FAILED: pg_dump exited 1\nRun: https:\/\/github.com\/o\/r\/actions\/runs\/1$/);
    assert.equal(m.result, 'failed');
    assert.equal(m.backupKey, 'api/production/app/2026/12/02/app-x.dump.zst');
    assert.equal(m.reason, 'connection to postgresql://u:***@db/app failed: ***');
    assert.equal(JSON.stringify(m).includes('s3cr3t-value'), false);
    assert.equal(JSON.stringify(m).includes(':pw@'), false);
    const quoted = webhookMessage(report(false, { reason: 'auth failed for pa"ss\\word' }));
    assert.equal(quoted.reason, 'auth failed for ***', 'a secret with a quote and a backslash is found before JSON escaping');
  });
});

describe('URLs with credentials', () => {
  it('user:password@ becomes a Basic Authorization header (decoded), the URL loses it; a given header wins', () => {
    const { url, headers } = withBasicAuth(new URL('https://a%20b:p%40ss%3Aw@hooks.example:8443/x?token=t'));
    assert.equal(url.href, 'https://hooks.example:8443/x?token=t');
    assert.equal(headers.get('authorization'), `Basic ${Buffer.from('a b:p@ss:w').toString('base64')}`);
    assert.equal(withBasicAuth(new URL('https://u:p@h/'), { authorization: 'Bearer k' }).headers.get('authorization'), 'Bearer k');
    assert.equal(withBasicAuth(new URL('https://h/x')).headers.has('authorization'), false);
  });

  it('shows scheme://host:port only; every part that may be a token is a secret', () => {
    assert.equal(shownUrl(new URL('https://u:p@hc-ping.com/0f2c-uuid?create=1')), 'https://hc-ping.com');
    assert.equal(shownUrl(new URL('http://127.0.0.1:9091/x')), 'http://127.0.0.1:9091');
    const url = 'https://user:pa%24s@hooks.example/services/T0/B0/tok?token=qq';
    for (const part of urlSecrets(url)) registerSecret(part);
    const shown = redact(`failed: ${url} /services/T0/B0/tok?token=qq pa$s token=qq`);
    for (const leak of ['tok', 'qq', 'pa$s', 'pa%24s', 'user:']) assert.ok(!shown.includes(leak), `${leak} in ${shown}`);
  });

  it('a delivery that fails warns with scheme://host:port, never the path or query', async () => {
    const warnings: string[] = [];
    const logger = { info: () => undefined, warn: (m: string) => warnings.push(m), group: <T>(_n: string, fn: () => Promise<T>) => fn() };
    const ok = await deliver('webhook notification (dump)', new URL('http://u:pw@127.0.0.1:9/never/tok-123?token=zz'), { method: 'POST' }, { timeoutMs: 2000, attempts: 1, logger });
    assert.equal(ok, false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^webhook notification \(dump\) not delivered to http:\/\/127\.0\.0\.1:9 \(/);
    for (const leak of ['tok-123', 'zz', 'pw', 'u:']) assert.ok(!warnings[0]!.includes(leak), `${leak} in ${warnings[0]}`);
  });
});

describe('run reports', () => {
  it('a dump that fails before any outcome is labelled from DATABASE_URL and the flags', () => {
    const saved = process.env.DATABASE_URL;
    process.env.DATABASE_URL = 'postgresql://u:pw@db.internal:5432/shop';
    try {
      const r = buildReport('dump', { service: 'api', environment: 'production' }, undefined, new Error('pg_dump: error: boom\nmore detail'), started, finished);
      assert.equal(r.ok, false);
      assert.equal(r.reason, 'pg_dump: error: boom');
      assert.deepEqual(r.targets.map((t) => [t.labels, t.ok, t.durationSeconds]), [[{ service: 'api', environment: 'production', database: 'shop', stanza: undefined, major: undefined }, false, 10]]);
    } finally {
      if (saved === undefined) delete process.env.DATABASE_URL;
      else process.env.DATABASE_URL = saved;
    }
  });

  it('a dump of several databases: one target each, the run failed when one failed', () => {
    const manifest = { service: 'api', environment: 'production', database: 'a', durationMs: 2000, object: { sizeBytes: 10 } };
    const outcomes = [
      { database: 'a', ok: true, result: { manifest, objectKey: 'api/production/a/k.dump.zst', backupUri: 's3://b/p/api/production/a/k.dump.zst' } },
      { database: 'b', ok: false, error: 'pg_dump: error: permission denied\ndetail' },
    ];
    const error = Object.assign(new Error('1 of 2 databases failed: b (pg_dump: error: permission denied)'), { outcomes });
    const r = buildReport('dump', { service: 'api', environment: 'production', databases: ['a', 'b'] }, undefined, error, started, finished);
    assert.equal(r.ok, false);
    assert.deepEqual(r.targets.map((t) => [t.labels.database, t.ok, t.reason, t.sizeBytes, t.durationSeconds]), [
      ['a', true, undefined, 10, 2],
      ['b', false, 'pg_dump: error: permission denied', undefined, 10], // the run's time when the command did not time the target
    ]);
    const m = webhookMessage(r);
    assert.equal(m.database, 'a,b');
    assert.match(m.text, /^❌ pg-backup dump FAILED: 1 of 2 databases failed.*\n• api\/production\/a: OK: backup api\/production\/a\/k.dump.zst, 10 B\n• api\/production\/b: FAILED: pg_dump: error: permission denied$/);
  });

  it('a check that returns ok: false is a failed run', () => {
    const r = buildReport('verify', { from: 's3://b/p', database: 'app' }, { ok: false, reason: 'sha256 mismatch', manifest: undefined, durationMs: 5, sizeBytes: 0, backupUri: 's3://b/p/k.dump.zst' }, undefined, started, finished);
    assert.equal(r.ok, false);
    assert.equal(r.reason, 'sha256 mismatch');
    assert.equal(r.targets[0]!.backupKey, 'k.dump.zst');
  });
});

describe('reporting options', () => {
  it('nothing asked: no reporting', () => assert.equal(reportingSettings({}), undefined));
  for (const [options, message] of [
    [{ notifyUrl: 'ftp://x' }, /--notify-url must be an http/],
    [{ healthcheckUrl: 'not a url' }, /--healthcheck-url must be an http/],
    [{ pushgatewayUrl: 'file:///x' }, /--pushgateway-url must be/],
    [{ metricsFile: '/x.prom', notifyOn: 'sometimes' }, /--notify-on must be failure or always/],
    [{ metricsFile: '/x.prom', notifyTimeout: 'soon' }, /--notify-timeout/],
  ] as const) {
    it(`refuses ${JSON.stringify(options)}`, () => assert.throws(() => reportingSettings(options), (e: unknown) => e instanceof UsageError && message.test(e.message)));
  }
  it('names action inputs in its messages', () => {
    assert.throws(() => reportingSettings({ notifyUrl: 'x', optionNames: { notifyUrl: 'input "notify-url"' } }), /^UsageError: input "notify-url" must be/);
  });
});
