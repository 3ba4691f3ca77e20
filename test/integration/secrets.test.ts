// No password or key in any message, log, report or object, whatever form the connection string
// takes (libpq key=value with quoted values, URL with percent-encoded or unencoded specials,
// ?password=, PGPASSWORD) and for S3 secret keys; connection errors name the real cause in one
// line, exit 2. Every case runs the CLI as a user would, against the real PostgreSQL and Ceph RGW.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { adminUrl, cli, createDatabase, s3Location, sql, type RunResult } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

const server = () => new URL(adminUrl());
const hex = () => randomBytes(5).toString('hex');

/** Every file under a directory, recursively, as text. */
async function filesText(dir: string): Promise<string> {
  let out = '';
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out += `${(await readFile(path.join(e.parentPath, e.name))).toString('latin1')}\n`;
  }
  return out;
}

/** Asserts that none of `secrets` (nor their percent-encoding) appears in a run's stdout and stderr. */
function assertClean(r: RunResult, secrets: string[], label: string): void {
  const text = `${r.stdout}\n${r.stderr}`;
  for (const s of secrets) {
    for (const form of new Set([s, encodeURIComponent(s)])) assert.ok(!text.includes(form), `${label}: ${JSON.stringify(form)} appears in the output:\n${text}`);
  }
}

/** A libpq key=value value, single-quoted with \' and \\ escaped (PostgreSQL docs 32.1.1.1). */
const quoted = (v: string) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

describe('secrets never reach the output or the bucket', () => {
  it('dump, restore, drill --target-url and verify, for every connection string form and S3 keys', { timeout: 240_000 }, async () => {
    const tail = hex();
    // A password with a space, a quote, an @ and a / — the characters that break naive parsing.
    const password = `Kx7 @ss/w'd-${tail}`;
    const role = `sec_${hex()}`;
    await sql('postgres', `CREATE ROLE ${role} LOGIN SUPERUSER PASSWORD '${password.replace(/'/g, "''")}'`);
    const source = await createDatabase('secsrc', false);
    await sql(source, 'CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50) g;');
    const { hostname: host, port } = server();
    const kv = (db: string, pw = quoted(password)) => `host=${host} port=${port} user=${role} password=${pw} dbname=${db}`;
    const url = (db: string) => `postgresql://${role}:${encodeURIComponent(password)}@${host}:${port}/${db}`;
    const queryUrl = (db: string) => `postgresql://${role}@${host}:${port}/${db}?password=${encodeURIComponent(password)}`;
    const wrong = `Wr0ng-${hex()}`;
    const s3Wrong = `S3wrong-${hex()}`;
    const secrets = [password, tail, 'Kx7', wrong, s3Wrong, 'BACKUPSECRET'];
    const to = await tempLocation();
    const runs: [string, RunResult][] = [];
    const run = async (label: string, args: string[], env: Record<string, string | undefined> = {}) => {
      const r = await cli(args, env);
      runs.push([label, r]);
      assertClean(r, secrets, label);
      return r;
    };

    // Success paths: each form connects, and nothing it prints holds the password.
    const dumped = await run('dump key=value', ['dump', '--database-url', kv(source), '--to', to, '--json']);
    assert.equal(dumped.code, 0, dumped.stderr);
    const backupKey = JSON.parse(dumped.stdout).backupUri.replace(`${to}/`, '');
    const viaEnv = await run('dump PGPASSWORD', ['dump', '--database-url', `postgresql://${role}@${host}:${port}/${source}`, '--to', to, '--quiet'], { PGPASSWORD: password });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    const target = await createDatabase('secrestore', false);
    const restored = await run('restore key=value', ['restore', '--from', to, '--backup', backupKey, '--target-url', kv(target)]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await sql(target, 'SELECT count(*)::int AS n FROM t'), [{ n: 50 }]);
    const drillTarget = await createDatabase('secdrill', false);
    const drilled = await run('drill ?password=', ['drill', '--from', to, '--backup', backupKey, '--target-url', queryUrl(drillTarget)]);
    assert.equal(drilled.code, 0, drilled.stderr);
    assert.match(drilled.stderr, /restore drill OK/);

    // Failure paths: refused or failed connections never show the password.
    const unencoded = `postgresql://${role}:${password}@${host}:${port}/${source}`;
    for (const [label, args, env, expect] of [
      ['dump URL with unencoded @ and /', ['dump', '--database-url', unencoded, '--to', to], {}, /malformed database URL/],
      ['dump key=value unquoted', ['dump', '--database-url', kv(source, password), '--to', to], {}, /malformed libpq connection string/],
      ['dump key=value wrong password', ['dump', '--database-url', kv(source, wrong), '--to', to], {}, /authentication failed/],
      ['dump ?password= bad sslmode', ['dump', '--database-url', `${queryUrl(source)}&sslmode=bogus`, '--to', to], {}, /invalid sslmode "bogus"/],
      ['dump PGPASSWORD wrong', ['dump', '--database-url', `postgresql://${role}@${host}:${port}/${source}`, '--to', to], { PGPASSWORD: wrong }, /authentication failed/],
      ['restore URL unencoded', ['restore', '--from', to, '--backup', backupKey, '--target-url', unencoded], {}, /malformed database URL/],
      ['restore key=value wrong password', ['restore', '--from', to, '--backup', backupKey, '--target-url', kv(target, `'${wrong}'`)], {}, /authentication failed/],
      ['drill key=value unquoted', ['drill', '--from', to, '--backup', backupKey, '--target-url', kv(drillTarget, password)], {}, /malformed libpq connection string/],
      ['drill ?password= wrong', ['drill', '--from', to, '--backup', backupKey, '--target-url', `postgresql://${role}@${host}:${port}/${drillTarget}?password=${wrong}`], {}, /authentication failed/],
    ] as const) {
      const r = await run(label, [...args], { ...env });
      assert.equal(r.code, 2, `${label}: ${r.stderr}`);
      assert.match(r.stderr, expect, label);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${label}: no stack trace`);
    }

    // S3 secret keys: a wrong one fails verify and dump without being shown; the right one is never printed.
    const s3 = s3Location('secrets');
    const s3Dump = await run('dump to S3', ['dump', '--database-url', kv(source), '--to', s3, '--quiet']);
    assert.equal(s3Dump.code, 0, s3Dump.stderr);
    const verified = await run('verify S3', ['verify', '--from', s3, '--level', 'checksum']);
    assert.equal(verified.code, 0, verified.stderr);
    for (const args of [['verify', '--from', s3], ['dump', '--database-url', kv(source), '--to', s3]]) {
      const denied = await run(`${args[0]} wrong S3 key`, args, { AWS_SECRET_ACCESS_KEY: s3Wrong });
      assert.equal(denied.code, 2, denied.stderr);
    }

    // Nothing written to the bucket (manifests, drill logs and reports, dumps) holds a secret.
    const stored = await filesText(fileURLToPath(to));
    assert.match(stored, /restore drill OK/, 'the drill log is in the bucket');
    for (const s of [password, tail, wrong]) assert.ok(!stored.includes(s) && !stored.includes(encodeURIComponent(s)), `${s} is stored in the bucket`);
    assert.ok(runs.length >= 15);
  });
});

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

describe('connection errors name the real cause', () => {
  it('invalid sslmode, SSL the server lacks, unknown host, refused, wrong password, missing database: one line each, exit 2', { timeout: 120_000 }, async () => {
    const u = server();
    const to = await tempLocation();
    const refusedPort = await closedPort();
    const cases: [string, string, RegExp][] = [
      ['sslmode=bogus', `${adminUrl()}?sslmode=bogus`, /^pg-backup: invalid sslmode "bogus" in the database URL: use one of disable, allow, prefer, require, verify-ca, verify-full$/],
      ['sslmode=require on a server without SSL', `${adminUrl()}?sslmode=require`, /cannot connect to .*: the server does not support SSL and sslmode=require asks for it; enable ssl on the server, or use sslmode=prefer/],
      ['unknown host', `postgresql://postgres:pgtestpw@no-such-host.invalid:${u.port}/postgres`, /cannot connect to postgres@no-such-host\.invalid:\d+\/postgres: (unknown host|the host name could not be resolved)/],
      ['connection refused', `postgresql://postgres:pgtestpw@127.0.0.1:${refusedPort}/postgres`, /cannot connect to postgres@127\.0\.0\.1:\d+\/postgres: connection refused/],
      ['wrong password', `postgresql://postgres:not-the-pw-${hex()}@${u.host}/postgres`, /authentication failed \(password authentication failed for user "postgres"\); check the user and password/],
      ['missing database', `postgresql://postgres:pgtestpw@${u.host}/nodb_${hex()}`, /database "nodb_[0-9a-f]+" does not exist; create it first/],
    ];
    for (const [label, databaseUrl, expect] of cases) {
      const r = await cli(['dump', '--database-url', databaseUrl, '--to', to]);
      assert.equal(r.code, 2, `${label}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${label}: one line, got:\n${r.stderr}`);
      assert.match(lines[0]!, expect, label);
      assert.ok(!r.stderr.includes('pgtestpw') && !r.stderr.includes('not-the-pw'), `${label}: password shown`);
    }
  });
});
