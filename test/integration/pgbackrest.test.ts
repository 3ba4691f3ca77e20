// Physical drills on real parts: Debian's pgBackRest 2.45 and a PostgreSQL 15 source cluster
// started here (as the postgres OS user), archiving WAL with archive_command to two repositories:
// repo1 on the Ceph RGW over TLS (pgBackRest's S3 driver speaks TLS only; the RGW's self-signed
// certificate is the CA file) and repo2 a posix directory. The drill runs the CLI as a user would.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, chmod, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, need, realPgBin, root, run, s3Client, s3Keys, s3Location } from '../helpers.ts';
import { startFakeGitHub } from '../infra/fake-github.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { runActionSource } from '../infra/action-source.ts';

const STANZA = 'main';
const T = { timeout: 240_000 };

let dir: string;
let pgBin: string;
let conf: string;
let repoPath: string;
let pgPort: number;
const bucket = () => need('PGB_TEST_S3_BUCKET');

/** Runs a program as the postgres OS user (initdb and pgBackRest refuse or misbehave as root). */
async function asPostgres(args: string[]): Promise<string> {
  const r = await run('runuser', ['-u', 'postgres', '--', ...args], { cwd: dir });
  if (r.code !== 0) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const pgbackrest = (...args: string[]) => asPostgres(['pgbackrest', `--config=${conf}`, `--stanza=${STANZA}`, ...args]);
const psql = (sql: string) => asPostgres([path.join(pgBin, 'psql'), '-h', path.join(dir, 'socket'), '-p', String(pgPort), '-U', 'postgres', '-d', 'app', '-qAtX', '-c', sql]).then((s) => s.trim());

/** A smoke SQL file that expects `count(*) FROM t` to be `rows`. */
async function expectRows(rows: number): Promise<string> {
  const file = path.join(dir, `smoke-${rows}.sql`);
  await writeFile(file, `-- expect: value = ${rows}\nSELECT count(*) FROM t;\n`);
  return file;
}

/** Runs a physical drill with the CLI; asserts that it left no process and no directory. */
async function drill(args: string[], env: Record<string, string> = {}) {
  const { mark, env: markEnv } = leftoverMark();
  const r = await cli(['drill', '--pgbackrest-stanza', STANZA, '--pgbackrest-config', conf, '--database', 'app', '--json', ...args], { ...markEnv, ...env });
  assert.deepEqual(await markedProcesses(mark), [], 'no process of the drill remains');
  assert.deepEqual((await readdir(os.tmpdir())).filter((n) => n.startsWith('pg-backup-pitr-')), [], 'no drill directory remains');
  return { ...r, report: r.stdout ? JSON.parse(r.stdout) : undefined };
}

async function s3Object(key: string): Promise<Buffer | undefined> {
  const { GetObjectCommand } = await import('@aws-sdk/client-s3');
  const client = s3Client();
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket(), Key: key }));
    return Buffer.from(await out.Body!.transformToByteArray());
  } finally {
    client.destroy();
  }
}

let recordedAt: string;
let backupStoppedAt: number;

describe('physical drills of pgBackRest backups', { timeout: 900_000 }, () => {
  before(async () => {
    pgBin = await realPgBin();
    dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-pgbr-'));
    await chmod(dir, 0o755);
    const { default: net } = await import('node:net');
    pgPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    repoPath = `/t-pgbr-${randomBytes(4).toString('hex')}`;
    const tls = new URL(need('PGB_TEST_S3_TLS_ENDPOINT'));
    conf = path.join(dir, 'pgbackrest.conf');
    // The user's own pgBackRest configuration: the drill passes it through as it is.
    await writeFile(
      conf,
      [
        '[global]',
        'repo1-type=s3',
        `repo1-path=${repoPath}`,
        `repo1-s3-bucket=${bucket()}`,
        // pgBackRest checks the certificate against DNS names only: the RGW's names localhost.
        'repo1-s3-endpoint=localhost',
        `repo1-storage-port=${tls.port}`,
        'repo1-s3-region=us-east-1',
        `repo1-s3-key=${need('PGB_TEST_S3_ACCESS_KEY')}`,
        `repo1-s3-key-secret=${need('PGB_TEST_S3_SECRET_KEY')}`,
        'repo1-s3-uri-style=path',
        `repo1-storage-ca-file=${need('PGB_TEST_S3_CA_FILE')}`,
        'repo1-retention-full=9',
        `repo2-path=${path.join(dir, 'repo2')}`,
        'repo2-retention-full=9',
        `log-path=${path.join(dir, 'log')}`,
        `lock-path=${path.join(dir, 'lock')}`,
        `spool-path=${path.join(dir, 'spool')}`,
        'log-level-console=warn',
        'log-level-file=off',
        'start-fast=y',
        'job-retry=0',
        'compress-type=gz',
        'compress-level=1',
        'process-max=2',
        '',
        `[${STANZA}]`,
        `pg1-path=${path.join(dir, 'src')}`,
        `pg1-port=${pgPort}`,
        `pg1-socket-path=${path.join(dir, 'socket')}`,
        '',
      ].join('\n'),
    );
    for (const d of ['log', 'lock', 'spool', 'repo2', 'socket']) await run('mkdir', ['-p', path.join(dir, d)]);
    await run('chown', ['-R', 'postgres:postgres', dir]);
    await asPostgres([path.join(pgBin, 'initdb'), '-D', path.join(dir, 'src'), '-U', 'postgres', '-A', 'trust', '--no-sync']);
    const settings = [
      `port=${pgPort}`,
      "listen_addresses=''",
      `unix_socket_directories='${path.join(dir, 'socket')}'`,
      'archive_mode=on',
      `archive_command='pgbackrest --config=${conf} --stanza=${STANZA} archive-push %p'`,
      'wal_level=replica',
      'fsync=off',
      'max_wal_senders=2',
    ];
    await appendFile(path.join(dir, 'src', 'postgresql.conf'), `${settings.join('\n')}\n`);
    await asPostgres([path.join(pgBin, 'pg_ctl'), '-D', path.join(dir, 'src'), '-l', path.join(dir, 'src.log'), '-w', 'start']);
    await asPostgres([path.join(pgBin, 'psql'), '-h', path.join(dir, 'socket'), '-p', String(pgPort), '-U', 'postgres', '-qc', 'CREATE DATABASE app']);
    await pgbackrest('stanza-create');
    await psql('CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); INSERT INTO t (id) SELECT generate_series(1, 1000)');
    await pgbackrest('--type=full', '--repo=1', 'backup');
    await pgbackrest('--type=full', '--repo=2', 'backup');
    backupStoppedAt = Date.now();
    await psql('INSERT INTO t (id) SELECT generate_series(1001, 1500)');
    await new Promise((r) => setTimeout(r, 1100));
    recordedAt = new Date(await psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")).toISOString();
    await new Promise((r) => setTimeout(r, 1100));
    await psql('INSERT INTO t (id) SELECT generate_series(1501, 2200)');
    await pgbackrest('check'); // switches WAL and waits until the segment is archived
    await psql('INSERT INTO t (id) SELECT generate_series(2201, 2300)');
    await pgbackrest('check');
  });

  after(async () => {
    if (!dir) return;
    await run('runuser', ['-u', 'postgres', '--', path.join(pgBin, 'pg_ctl'), '-D', path.join(dir, 'src'), 'stop', '-m', 'immediate'], { cwd: '/' });
    await rm(dir, { recursive: true, force: true });
  });

  it('--target-time recovers exactly the rows of that moment, on S3 over TLS; the drill log lands in the drill folder, with its signed statement', T, async () => {
    const logTo = s3Location('pgbr');
    const signKey = path.join(dir, 'drill-signing.pem');
    await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', signKey]);
    await run('openssl', ['pkey', '-in', signKey, '-pubout', '-out', `${signKey}.pub`]);
    const r = await drill(['--target-time', recordedAt, '--smoke-sql', await expectRows(1500), '--log-to', logTo, '--service', 'api', '--environment', 'prod', '--sign-key', signKey]);
    assert.equal(r.code, 0, r.stderr);
    const report = r.report;
    assert.equal(report.ok, true);
    assert.equal(report.target.type, 'time');
    assert.match(report.target.pgbackrest, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{3})?\+00$/);
    assert.match(report.recovery.stopReason, /^before /);
    assert.ok(Date.parse(report.recovery.lastTransactionAt) <= Date.parse(recordedAt));
    assert.equal(report.smoke[0].actual, '1500');
    assert.ok(report.rtoMs > 0 && report.rtoMs === report.phases.restoreMs + report.phases.replayMs);
    assert.ok(report.rpoMs >= 0 && report.rpoMs < 10 * 60_000, `RPO ${report.rpoMs}`);
    const q = Math.floor(new Date(report.startedAt).getUTCMonth() / 3) + 1;
    const folder = `drills/api/prod/${STANZA}/${new Date(report.startedAt).getUTCFullYear()}-Q${q}/`;
    const keys = await s3Keys(logTo);
    // The report, the log and the statement (<report>.intoto.jsonl).
    assert.equal(keys.filter((k) => k.startsWith(folder)).length, 3, keys.join(', '));
    assert.ok(report.drillEvidenceUri.endsWith('.intoto.jsonl'));
    // The physical drill's subject is the pgBackRest backup: the signature, report and subject verify.
    const v = await cli(['evidence', 'verify', '--from', logTo, '--public-key', `${signKey}.pub`]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, new RegExp(`^signed OK +api/prod/${STANZA} +${report.backup.label} `, 'm'));
    assert.ok(report.drillLogUri.startsWith(`${logTo}/${folder}${report.backup.label}-drill-`));
    const logKey = keys.find((k) => k.endsWith('.log'))!;
    const text = (await s3Object(`${logTo.replace(`s3://${bucket()}/`, '')}/${logKey}`))!.toString();
    assert.match(text, /restore drill OK\n$/);
    assert.equal(report.history.length, 1);
  });

  it('a drill to the end of the archive sees every row: a posix repository, chosen with a PGBACKREST_* variable passed through; pgbackrest verify finds it sound', T, async () => {
    const r = await drill(['--smoke-sql', await expectRows(2300), '--pgbackrest-verify', '--max-rpo', '1h', '--max-rto', '1h'], { PGBACKREST_REPO: '2' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /repo2: restore backup set/);
    assert.equal(r.report.target.type, 'latest');
    assert.equal(r.report.recovery.stopReason, 'no recovery target specified');
    assert.deepEqual(r.report.repositoryVerify, { ok: true, problems: [] });
    assert.match(r.stderr, /recovery reached the end of the archive/);
    assert.match(r.stderr, /restore drill OK/);
  });

  it('the checks and the smoke SQL run as pg-backup-drill without the repository\'s credentials: recovery as postgres, then a restart', T, async () => {
    const marks = await mkdtemp(path.join(os.tmpdir(), 'pgb-pgbr-marks-'));
    await chmod(marks, 0o1777);
    try {
      const smoke = path.join(dir, 'smoke-attack.sql');
      // What restored code could do as superuser in the checks phase: run a program as the server's OS user.
      await writeFile(smoke, `-- expect: ok\nCOPY (SELECT 1) TO PROGRAM 'env > ${marks}/env; id > ${marks}/id; cat /proc/[0-9]*/environ > ${marks}/proc 2>/dev/null; true';\n-- expect: value = 2300\nSELECT count(*) FROM t;\n`);
      const secret = need('PGB_TEST_S3_SECRET_KEY');
      const r = await drill(['--smoke-sql', smoke], { PGBACKREST_REPO: '2', PGBACKREST_REPO1_S3_KEY_SECRET: secret });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /promoted server restarted for the checks: throwaway cluster runs as OS user pg-backup-drill \(uid \d+\), environment scrubbed, no network; repository credentials not in its environment/);
      assert.match(await readFile(path.join(marks, 'id'), 'utf8'), /uid=\d+\(pg-backup-drill\)/);
      for (const f of ['env', 'proc']) {
        const text = await readFile(path.join(marks, f), 'latin1');
        assert.equal(text.includes(secret), false, `${f}: no repository secret`);
        assert.doesNotMatch(text, /PGBACKREST_|AWS_/, `${f}: no PGBACKREST_* or AWS_* variable`);
      }
      // The test's pgbackrest.conf (0644, with the S3 key) is one the cluster user could read: said so.
      assert.match(r.stderr, new RegExp(`warning: ${conf.replace(/[.]/g, '\\.')} is readable by every OS user \\(mode 0644\\): the restored server's checks run as pg-backup-drill`));
    } finally {
      await rm(marks, { recursive: true, force: true });
    }
  });

  it('a target before the oldest backup fails with pgBackRest\'s reason', T, async () => {
    const before = new Date(backupStoppedAt - 3_600_000).toISOString();
    const r = await drill(['--target-time', before]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.report.reason, /^pgBackRest restore failed: unable to find backup set with stop time less than '\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{3})?\+00'$/);
    assert.equal(r.report.reason.includes('\n'), false);
  });

  it('a missing WAL segment fails the drill, named with pgBackRest\'s reason (posix repository)', T, async () => {
    const walDir = path.join(dir, 'repo2', 'archive', STANZA, '15-1', '0000000100000000');
    const segments = (await readdir(walDir)).filter((f) => /^[0-9A-F]{24}-[0-9a-f]{40}/.test(f)).sort();
    // The segment after the backup's: the archive holds newer ones, so replay would stop short.
    const info = JSON.parse(await pgbackrest('info', '--output=json', '--repo=2'))[0];
    const backupStop: string = info.backup.at(-1).archive.stop;
    const victim = segments.find((f) => f.slice(0, 24) > backupStop)!;
    assert.ok(victim && segments.at(-1) !== victim, `a segment between the backup and the newest: ${segments.join(', ')}`);
    await rename(path.join(walDir, victim), path.join(dir, victim));
    try {
      const r = await drill([], { PGBACKREST_REPO: '2' });
      assert.equal(r.code, 1, r.stderr);
      const segment = victim.slice(0, 24);
      assert.equal(r.report.reason, `WAL gap: recovery ended at ${r.report.recovery.switchLsn} in segment ${segment}, but the archive holds WAL up to ${segments.at(-1)!.slice(0, 24)}; pgbackrest: unable to find ${segment} in the archive`);
      assert.ok(!r.stderr.includes(r.report.reason), `with --json the reason is the report's, not repeated on stderr:\n${r.stderr}`);
    } finally {
      await rename(path.join(dir, victim), path.join(walDir, victim));
    }
  });

  it('a damaged repository file fails the restore with pgBackRest\'s reason (posix repository)', T, async () => {
    const info = JSON.parse(await pgbackrest('info', '--output=json', '--repo=2'))[0];
    const base = path.join(dir, 'repo2', 'backup', STANZA, info.backup.at(-1).label, 'pg_data', 'base', '1');
    const victim = path.join(base, (await readdir(base)).find((f) => /^\d+\.gz$/.test(f))!);
    const saved = await readFile(victim);
    const damaged = Buffer.from(saved);
    damaged.write('garbage!', 10);
    await writeFile(victim, damaged);
    try {
      const r = await drill(['--max-rpo', '1ms'], { PGBACKREST_REPO: '2' });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.report.reason, /^pgBackRest restore failed: .*(zlib|checksum|error).*/);
      assert.ok(r.report.problems.some((p: string) => /^RPO .* \(age of the newest archived WAL\) exceeds the budget --max-rpo 1ms$/.test(p)), r.report.problems.join('\n'));
      assert.equal(r.report.reason.includes('\n'), false);
      assert.doesNotMatch(r.report.reason, /retry/);
    } finally {
      await writeFile(victim, saved);
    }
  });

  it('verify --wal-prefix: the RPO alarm for WAL archiving passes when fresh and fails when stale', T, async () => {
    const prefix = `s3://${bucket()}${repoPath}/archive/${STANZA}/`;
    const fresh = await cli(['verify', '--wal-prefix', prefix, '--max-age', '30m', '--json']);
    assert.equal(fresh.code, 0, fresh.stderr);
    const ok = JSON.parse(fresh.stdout);
    assert.ok(ok.objects >= 4 && ok.newestAgeMs < 30 * 60_000, fresh.stdout);
    await new Promise((r) => setTimeout(r, 2100));
    const stale = await cli(['verify', '--wal-prefix', prefix, '--max-age', '1s']);
    assert.equal(stale.code, 1, stale.stderr);
    assert.match(stale.stderr, /verify failed: the newest WAL under s3:\/\/\S+ is [\d.]+ (s|min \d+ s) old, older than --max-age 1s/);
    const empty = await cli(['verify', '--wal-prefix', `s3://${bucket()}/t-no-wal-${randomBytes(3).toString('hex')}/`, '--max-age', '1h']);
    assert.equal(empty.code, 1, empty.stderr);
    assert.match(empty.stderr, /no WAL under s3:\/\//);
    const usage = await cli(['verify', '--wal-prefix', prefix]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--wal-prefix needs --max-age/);
  });

  it('actions/drill with pgbackrest-stanza opens the failure issue, and closes it when the drill passes again', T, async () => {
    const gh = await startFakeGitHub('acme', 'shop');
    try {
      const logTo = s3Location('pgbr-action');
      const env = { GITHUB_REPOSITORY: 'acme/shop', GITHUB_API_URL: gh.url, GITHUB_SERVER_URL: 'https://github.example', GITHUB_RUN_ID: '77' };
      const inputs = {
        'pgbackrest-stanza': STANZA,
        'pgbackrest-config': conf,
        'log-to': logTo,
        service: 'api',
        environment: 'prod',
        'github-token': gh.token,
        'issue-on-failure': 'true',
        'issue-label': 'backup-drill-failure',
        endpoint: need('PGB_TEST_S3_ENDPOINT'),
        'aws-access-key-id': need('PGB_TEST_S3_ACCESS_KEY'),
        'aws-secret-access-key': need('PGB_TEST_S3_SECRET_KEY'),
      };
      const failed = await runActionSource('drill', { ...inputs, 'target-time': new Date(backupStoppedAt - 3_600_000).toISOString() }, env);
      assert.equal(failed.code, 1, failed.stdout);
      assert.equal(failed.outputs.result, 'failed');
      assert.equal(gh.issues.length, 1);
      assert.equal(gh.issues[0]!.title, `Backup drill failed: api/prod/${STANZA}`);
      assert.match(gh.issues[0]!.body, /unable to find backup set with stop time less than/);
      assert.ok(gh.issues[0]!.body.includes(failed.outputs['drill-log-uri']!));

      const signKey = path.join(dir, 'action-signing.pem');
      await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', signKey]);
      await run('openssl', ['pkey', '-in', signKey, '-pubout', '-out', `${signKey}.pub`]);
      const passed = await runActionSource('drill', { ...inputs, 'smoke-sql': await expectRows(2300), database: 'app', 'sign-key': await readFile(signKey, 'utf8') }, { ...env, PGBACKREST_REPO: '2' });
      assert.equal(passed.code, 0, passed.stdout);
      assert.equal(passed.outputs.result, 'ok');
      // sign-key signs the physical drill's statement; the failed drill before it was unsigned.
      assert.match(passed.outputs['drill-evidence-uri']!, /\.intoto\.jsonl$/);
      const v = await cli(['evidence', 'verify', '--from', logTo, '--public-key', `${signKey}.pub`, '--json']);
      assert.deepEqual(JSON.parse(v.stdout).reports.map((x: { label: string; drillOk: boolean }) => [x.drillOk, x.label]), [[false, 'UNSIGNED'], [true, 'signed OK']]);
      assert.ok(Number(passed.outputs['rto-ms']) > 0 && Number(passed.outputs['rpo-ms']) >= 0);
      assert.equal(gh.issues[0]!.state, 'closed');
      assert.match(passed.summary, /Restore drill \(pgBackRest\): OK/);
      assert.equal((passed.summary.match(/<td>(OK|FAILED)<\/td>/g) ?? []).length, 2, 'the RTO trend shows both drills');

      // actions/verify with wal-prefix: a stale WAL archive fails the step and opens its own issue.
      await new Promise((r) => setTimeout(r, 1100));
      const wal = await runActionSource('verify', { ...inputs, 'wal-prefix': `s3://${bucket()}${repoPath}/archive/${STANZA}/`, 'max-age': '1s' }, env);
      assert.equal(wal.code, 1, wal.stdout);
      assert.equal(wal.outputs.result, 'failed');
      assert.ok(Number(wal.outputs['newest-age-ms']) > 1000);
      assert.match(wal.summary, /WAL archive freshness: FAILED/);
      assert.equal(gh.issues.length, 2);
      assert.match(gh.issues[1]!.title, /^Backup verify failed: api\/prod\/WAL s3:\/\//);
    } finally {
      await gh.close();
    }
  });

  it('SIGINT while WAL replays stops the restored server and removes its directory (exit 130)', T, async () => {
    const { spawn } = await import('node:child_process');
    const { mark, env: markEnv } = leftoverMark();
    const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'drill', '--pgbackrest-stanza', STANZA, '--pgbackrest-config', conf], {
      env: { ...process.env, ...markEnv, PGBACKREST_REPO: '2' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const code = await new Promise<number | null>((resolve) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        if (/replaying WAL/.test(stderr) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', (c) => resolve(c));
    });
    assert.match(stderr, /replaying WAL/);
    assert.equal(code, 130, stderr);
    assert.deepEqual(await markedProcesses(mark), [], 'no process of the drill remains');
    assert.deepEqual((await readdir(os.tmpdir())).filter((n) => n.startsWith('pg-backup-pitr-')), [], 'no drill directory remains');
  });

  it('bad input is one line and exit 2, before anything runs', T, async () => {
    const time = await cli(['drill', '--pgbackrest-stanza', STANZA, '--target-time', '2026-12-02T09:30:00']);
    assert.equal(time.code, 2);
    assert.equal(time.stderr.trim(), 'pg-backup: --target-time "2026-12-02T09:30:00" is not an ISO 8601 time with a zone: use e.g. 2026-12-02T09:30:00Z or 2026-12-02T10:30:00.250+01:00 (or latest)');
    const mixed = await cli(['drill', '--pgbackrest-stanza', STANZA, '--from', 's3://b/p']);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /--from belongs to a drill of a logical backup/);
    const none = await cli(['drill']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--from is required .* or give --pgbackrest-stanza/);
  });
});
