// Alerts and metrics against real parts: a real Pushgateway (Debian prometheus-pushgateway) on
// loopback, a local HTTP receiver (node:http) standing in for Slack / Teams and healthchecks.io,
// promtool on the metrics file, and real dump / verify / drill / prune runs of the CLI against
// the suite's PostgreSQL and Ceph RGW.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminUrl, cli, createDatabase, dbUrl, dumpWithCli, fakePgBin, need, root, run, s3Env, s3Location, s3Put } from '../helpers.ts';

/** A free loopback port (bound, then released). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Received {
  method: string;
  url: string;
  body: string;
  contentType: string | undefined;
}

/** An HTTP receiver that records every request; `slow` requests are never answered. */
async function receiver(): Promise<{ url: string; requests: Received[]; close: () => Promise<void> }> {
  const requests: Received[] = [];
  const hanging: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests.push({ method: req.method!, url: req.url!, body, contentType: req.headers['content-type'] });
      if (req.url!.startsWith('/slow')) hanging.push(res);
      else res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A real Pushgateway on a free loopback port with its own persistence file; killed by `stop`. */
async function startPushgateway(): Promise<{ url: string; stop: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-pushgateway-'));
  const port = await freePort();
  const child: ChildProcess = spawn('prometheus-pushgateway', [`--web.listen-address=127.0.0.1:${port}`, `--persistence.file=${path.join(dir, 'metrics.db')}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    const ready = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
    if (ready) return { url, stop };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await stop();
  throw new Error(`prometheus-pushgateway did not start: ${log}`);
}

/** The value of the series `name` whose labels include `labels`, from exposition text. */
function valueOf(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** `promtool check metrics` on a metrics file (lint of names, units, help). */
async function promtoolCheckMetrics(file: string): Promise<void> {
  const r = await run('bash', ['-c', `promtool check metrics < "$1"`, 'promtool', file]);
  assert.equal(r.code, 0, `promtool check metrics: ${r.stdout}${r.stderr}`);
}

const github = { GITHUB_SERVER_URL: 'https://github.example', GITHUB_REPOSITORY: 'acme/infra', GITHUB_RUN_ID: '4242' };
const RUN_URL = 'https://github.example/acme/infra/actions/runs/4242';

describe('alerts and metrics: dump, verify, drill, prune', () => {
  let gateway: Awaited<ReturnType<typeof startPushgateway>>;
  let hooks: Awaited<ReturnType<typeof receiver>>;
  let dir: string;
  before(async () => {
    gateway = await startPushgateway();
    hooks = await receiver();
    dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-metrics-'));
  });
  after(async () => {
    await gateway?.stop();
    await hooks?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('dump: textfile and Pushgateway carry the run; a failed dump keeps the last success; webhook and pings in order, no secret', { timeout: 120_000 }, async () => {
    const db = await createDatabase('notifydump');
    const to = s3Location('notifydump');
    const file = path.join(dir, 'pg_backup_dump.prom');
    const token = 'T0000/B0000/hook-secret-token-1234';
    const check = 'ping-uuid-5678-secret';
    const reporting = ['--metrics-file', file, '--pushgateway-url', gateway.url, '--notify-url', `${hooks.url}/hook/${token}`, '--healthcheck-url', `${hooks.url}/hc/${check}`];
    const labels = { command: 'dump', service: 'api', environment: 'production', database: db };
    const from = hooks.requests.length;

    const ok = await cli(['dump', '--to', to, '--service', 'api', '--environment', 'production', '--json', ...reporting], { DATABASE_URL: dbUrl(db), ...github });
    assert.equal(ok.code, 0, ok.stderr);
    const manifest = JSON.parse(ok.stdout);
    const afterOk = hooks.requests.slice(from);
    assert.deepEqual(afterOk.map((r) => `${r.method} ${r.url.replace(/\?.*/, '')}`), [`POST /hc/${check}/start`, `POST /hc/${check}`], 'start ping, then success ping; no webhook on success by default');
    assert.equal(new URL(afterOk[0]!.url, hooks.url).searchParams.get('rid'), new URL(afterOk[1]!.url, hooks.url).searchParams.get('rid'), 'one run id ties start and end');

    await promtoolCheckMetrics(file);
    const text1 = await readFile(file, 'utf8');
    assert.equal(valueOf(text1, 'pg_backup_last_run_success', labels), 1);
    assert.equal(valueOf(text1, 'pg_backup_size_bytes', labels), manifest.object.sizeBytes);
    const success1 = valueOf(text1, 'pg_backup_last_success_timestamp_seconds', labels)!;
    assert.ok(Math.abs(success1 - Date.now() / 1000) < 120, `last success is now (${success1})`);
    assert.equal(valueOf(text1, 'pg_backup_last_run_timestamp_seconds', labels), success1);
    assert.ok(valueOf(text1, 'pg_backup_duration_seconds', labels)! > 0);
    assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith('.tmp')), [], 'no temp file left');

    const pushed1 = await (await fetch(`${gateway.url}/metrics`)).text();
    const group = { ...labels, job: 'pg_backup_dump' };
    assert.equal(valueOf(pushed1, 'pg_backup_last_run_success', group), 1);
    assert.ok(Math.abs(valueOf(pushed1, 'pg_backup_last_success_timestamp_seconds', group)! - success1) < 1e-3);

    // The same job fails (pg_dump exits 1): exit 1, the last success stays, the run is marked failed.
    const bin = await fakePgBin('echo "pg_dump: error: simulated failure for the alert test" >&2; exit 1');
    const failed = await cli(['dump', '--to', to, '--service', 'api', '--environment', 'production', ...reporting], { DATABASE_URL: dbUrl(db), PG_BIN_DIR: bin, ...github });
    await rm(bin, { recursive: true, force: true });
    assert.equal(failed.code, 1, failed.stderr);
    await promtoolCheckMetrics(file);
    const text2 = await readFile(file, 'utf8');
    assert.equal(valueOf(text2, 'pg_backup_last_run_success', labels), 0);
    assert.equal(valueOf(text2, 'pg_backup_last_success_timestamp_seconds', labels), success1, 'the textfile keeps the previous success');
    assert.equal(valueOf(text2, 'pg_backup_size_bytes', labels), manifest.object.sizeBytes, 'and the last good size');
    assert.ok(valueOf(text2, 'pg_backup_last_run_timestamp_seconds', labels)! > success1);
    const pushed2 = await (await fetch(`${gateway.url}/metrics`)).text();
    assert.equal(valueOf(pushed2, 'pg_backup_last_run_success', group), 0);
    assert.ok(Math.abs(valueOf(pushed2, 'pg_backup_last_success_timestamp_seconds', group)! - success1) < 1e-3, 'the Pushgateway keeps the previous success');

    const afterFail = hooks.requests.slice(from + afterOk.length);
    const order = afterFail.map((r) => `${r.method} ${r.url.replace(/\?.*/, '')}`);
    assert.equal(order[0], `POST /hc/${check}/start`);
    assert.deepEqual(order.slice(1).sort(), [`POST /hc/${check}/fail`, `POST /hook/${token}`].sort());
    const fail = afterFail.find((r) => r.url.startsWith(`/hc/${check}/fail`))!;
    assert.match(fail.body, /^pg-backup dump failed: .*simulated failure for the alert test/);
    assert.equal(fail.body.includes('\n'), false, 'the fail ping carries one line');
    const hook = afterFail.find((r) => r.url.startsWith('/hook/'))!;
    assert.equal(hook.contentType, 'application/json');
    const message = JSON.parse(hook.body);
    assert.match(message.text, new RegExp(`FAILED: api/production/${db}: .*simulated failure`));
    assert.match(message.text, new RegExp(RUN_URL.replace(/[./]/g, '\\$&')));
    assert.equal(message.command, 'dump');
    assert.equal(message.result, 'failed');
    assert.equal(message.service, 'api');
    assert.equal(message.environment, 'production');
    assert.equal(message.database, db);
    assert.match(message.reason, /simulated failure/);
    assert.equal(message.runUrl, RUN_URL);

    // No secret anywhere: not the database password, the S3 key, the webhook token or the check id.
    const password = decodeURIComponent(new URL(adminUrl()).password);
    for (const secret of [password, need('PGB_TEST_S3_SECRET_KEY')]) {
      for (const r of [...afterOk, ...afterFail]) assert.equal(`${r.url} ${r.body}`.includes(secret), false, `a request carries a secret: ${r.url}`);
      assert.equal(text2.includes(secret), false);
    }
    for (const secret of [token, check]) {
      assert.equal(`${ok.stderr}${failed.stderr}`.includes(secret), false, 'the webhook and healthcheck URLs never reach the log');
      assert.equal(JSON.stringify(message).includes(secret), false);
    }
  });

  it('verify, drill and prune: metrics per command, webhook with --notify-on always, a failed verify alerts', { timeout: 180_000 }, async () => {
    const db = await createDatabase('notifycmds');
    const to = s3Location('notifycmds');
    const { manifest, objectKey } = await dumpWithCli(db, to, ['--service', 'web', '--environment', 'staging']);
    const scope = ['--service', 'web', '--environment', 'staging', '--database', db];
    const file = (name: string) => path.join(dir, `${name}.prom`);
    const labels = (command: string) => ({ command, service: 'web', environment: 'staging', database: db });
    const from = hooks.requests.length;

    const verified = await cli(['verify', '--from', to, ...scope, '--metrics-file', file('verify'), '--pushgateway-url', gateway.url, '--notify-url', `${hooks.url}/hook/verify`, '--notify-on', 'always'], github);
    assert.equal(verified.code, 0, verified.stderr);
    await promtoolCheckMetrics(file('verify'));
    const v = await readFile(file('verify'), 'utf8');
    assert.equal(valueOf(v, 'pg_backup_last_run_success', labels('verify')), 1);
    assert.equal(valueOf(v, 'pg_backup_size_bytes', labels('verify')), manifest.object.sizeBytes);
    const okMessage = JSON.parse(hooks.requests.slice(from).find((r) => r.url === '/hook/verify')!.body);
    assert.equal(okMessage.result, 'ok');
    assert.equal(okMessage.command, 'verify');
    assert.equal(okMessage.backupKey, objectKey);
    assert.equal(okMessage.runUrl, RUN_URL);
    assert.match(okMessage.text, /✅ pg-backup verify OK/);

    const drilled = await cli(['drill', '--from', to, ...scope, '--max-rto', '30m', '--metrics-file', file('drill'), '--pushgateway-url', gateway.url], github);
    assert.equal(drilled.code, 0, drilled.stderr);
    await promtoolCheckMetrics(file('drill'));
    const d = await readFile(file('drill'), 'utf8');
    assert.equal(valueOf(d, 'pg_backup_drill_success', labels('drill')), 1);
    assert.equal(valueOf(d, 'pg_backup_drill_rto_budget_seconds', labels('drill')), 1800);
    const rto = valueOf(d, 'pg_backup_drill_rto_seconds', labels('drill'))!;
    assert.ok(rto > 0 && rto < 1800, `RTO ${rto}`);
    const pushed = await (await fetch(`${gateway.url}/metrics`)).text();
    assert.equal(valueOf(pushed, 'pg_backup_drill_rto_seconds', { ...labels('drill'), job: 'pg_backup_drill' }), rto);

    const pruned = await cli(['prune', '--from', to, '--keep-last', '1', '--metrics-file', file('prune'), '--pushgateway-url', gateway.url]);
    assert.equal(pruned.code, 0, pruned.stderr);
    await promtoolCheckMetrics(file('prune'));
    const p = await readFile(file('prune'), 'utf8');
    assert.equal(valueOf(p, 'pg_backup_prune_kept_backups', labels('prune')), 1);
    assert.equal(valueOf(p, 'pg_backup_prune_deleted_backups', labels('prune')), 0);
    assert.equal(valueOf(p, 'pg_backup_last_run_success', labels('prune')), 1);

    // A corrupt backup: verify exits 1, the webhook says why, the verify's last success stays.
    await s3Put(to, objectKey, Buffer.from('not a dump'));
    const broken = await cli(['verify', '--from', to, ...scope, '--level', 'checksum', '--metrics-file', file('verify'), '--notify-url', `${hooks.url}/hook/broken`], github);
    assert.equal(broken.code, 1, broken.stderr);
    const b = await readFile(file('verify'), 'utf8');
    assert.equal(valueOf(b, 'pg_backup_last_run_success', labels('verify')), 0);
    assert.equal(valueOf(b, 'pg_backup_last_success_timestamp_seconds', labels('verify')), valueOf(v, 'pg_backup_last_success_timestamp_seconds', labels('verify')));
    const failMessage = JSON.parse(hooks.requests.find((r) => r.url === '/hook/broken')!.body);
    assert.equal(failMessage.result, 'failed');
    assert.equal(failMessage.database, db);
    assert.equal(failMessage.backupKey, objectKey);
    assert.match(failMessage.reason, /size|sha256/);

    // The drill of that backup fails too: drill_success 0, the drill's last success stays.
    const failedDrill = await cli(['drill', '--from', to, ...scope, '--metrics-file', file('drill')], github);
    assert.equal(failedDrill.code, 1, failedDrill.stderr);
    const fd = await readFile(file('drill'), 'utf8');
    assert.equal(valueOf(fd, 'pg_backup_drill_success', labels('drill')), 0);
    assert.equal(valueOf(fd, 'pg_backup_last_success_timestamp_seconds', labels('drill')), valueOf(d, 'pg_backup_last_success_timestamp_seconds', labels('drill')));
  });

  it('a dead and a slow endpoint: warnings, bounded retries, the result unchanged', { timeout: 60_000 }, async () => {
    const db = await createDatabase('notifydead', false);
    const to = s3Location('notifydead');
    await dumpWithCli(db, to);
    const dead = `http://127.0.0.1:${await freePort()}`;
    const from = hooks.requests.length;
    const r = await cli([
      'verify', '--from', to, '--level', 'checksum', '--json',
      '--notify-url', `${hooks.url}/slow/hook`, '--notify-on', 'always',
      '--healthcheck-url', `${dead}/hc/x`,
      '--pushgateway-url', dead,
      '--metrics-file', path.join(dir, 'missing-dir', 'x.prom'),
      '--notify-timeout', '1s',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).ok, true, 'stdout stays the verify result');
    assert.match(r.stderr, /warning: webhook notification \(verify\) not delivered to http:\/\/127\.0\.0\.1:\d+ \(no answer within 1 s\)/);
    assert.match(r.stderr, /warning: healthcheck ping \(start\) not delivered to http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED/);
    assert.match(r.stderr, /warning: healthcheck ping \(success\) not delivered/);
    assert.match(r.stderr, /warning: Pushgateway push \(verify .*\) not delivered to http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED/);
    assert.match(r.stderr, /warning: metrics file .* not written/);
    assert.equal(hooks.requests.slice(from).filter((q) => q.url === '/slow/hook').length, 3, 'three attempts, then it gives up');
  });

  it('bad reporting options: one line, exit 2, nothing run', { timeout: 30_000 }, async () => {
    const to = s3Location('notifybad');
    const from = hooks.requests.length;
    const bad = await cli(['verify', '--from', to, '--notify-url', 'ftp://hooks.example/x', '--healthcheck-url', `${hooks.url}/hc/bad`]);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /--notify-url must be an http:\/\/ or https:\/\/ URL/);
    assert.equal(hooks.requests.length, from, 'no ping for a run that never started');
    const on = await cli(['verify', '--from', to, '--notify-on', 'sometimes']);
    assert.equal(on.code, 2);
    assert.match(on.stderr, /--notify-on/);
  });

  it('actions/verify: reporting inputs, webhook URL masked', { timeout: 60_000 }, async () => {
    const db = await createDatabase('notifyaction', false);
    const to = s3Location('notifyaction');
    const { objectKey } = await dumpWithCli(db, to);
    const work = await mkdtemp(path.join(os.tmpdir(), 'pgb-action-'));
    const outputFile = path.join(work, 'output');
    const summaryFile = path.join(work, 'summary');
    await writeFile(outputFile, '');
    await writeFile(summaryFile, '');
    const hookUrl = `${hooks.url}/hook/action-secret-9876`;
    const inputs: Record<string, string> = {
      from: to, backup: objectKey, level: 'checksum', 'issue-on-failure': 'false',
      'metrics-file': path.join(dir, 'action.prom'), 'pushgateway-url': gateway.url, 'notify-url': hookUrl, 'notify-on': 'always', 'healthcheck-url': `${hooks.url}/hc/action`,
    };
    const env: Record<string, string> = { GITHUB_OUTPUT: outputFile, GITHUB_STEP_SUMMARY: summaryFile, ...s3Env(), ...github };
    for (const [k, v] of Object.entries(inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
    // The action's source entry (the bundles are rebuilt by the integrator).
    const r = await run(process.execPath, [path.join(root, 'src/github/verify-action.ts')], { env: { ...env, DATABASE_URL: undefined } });
    await rm(work, { recursive: true, force: true });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(r.stdout.includes(`::add-mask::${hookUrl}`), 'the webhook URL is masked before anything is logged');
    const message = JSON.parse(hooks.requests.find((q) => q.url === '/hook/action-secret-9876')!.body);
    assert.equal(message.result, 'ok');
    assert.equal(message.database, db);
    assert.equal(message.runUrl, RUN_URL);
    assert.ok(hooks.requests.some((q) => q.url.startsWith('/hc/action/start')) && hooks.requests.some((q) => /^\/hc\/action\?/.test(q.url)));
    await promtoolCheckMetrics(path.join(dir, 'action.prom'));
    assert.equal(valueOf(await readFile(path.join(dir, 'action.prom'), 'utf8'), 'pg_backup_last_run_success', { command: 'verify', database: db }), 1);
    const bad = await run(process.execPath, [path.join(root, 'src/github/verify-action.ts')], { env: { ...env, 'INPUT_NOTIFY-ON': 'never', DATABASE_URL: undefined } });
    assert.equal(bad.code, 2);
    assert.match(bad.stdout, /::error::input "notify-on" must be failure or always/);
  });
});
