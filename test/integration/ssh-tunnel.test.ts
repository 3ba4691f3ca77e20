// --ssh-tunnel against a real OpenSSH server of the test's own on loopback (test/infra/sshd.ts),
// the shared PostgreSQL playing the private database behind it: a good key dumps (and restores)
// through the tunnel; a wrong host key, an unknown one, none at all and a dead bastion are each
// refused in one line with nothing written; a database the bastion cannot reach names that
// cause; SIGTERM mid-run ends the run. After every run no ssh process is left (found by pid
// through the run's environment marker).
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/postgres/cluster.ts';
import { withSshTunnel } from '../../src/postgres/ssh-tunnel.ts';
import { adminUrl, cli, createDatabase, dbUrl, parseOutputFile, root, run, s3Env, sql } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { startSshd, type TestSshd } from '../infra/sshd.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';
import { startTlsPostgres, type TlsPostgres } from '../infra/tls-postgres.ts';

async function filesIn(location: string): Promise<string[]> {
  return (await readdir(fileURLToPath(location), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
}

/** The CLI with a leftover marker; asserts afterwards that no process of the run (ssh) is left. */
async function cliLeavingNothing(args: string[], env: Record<string, string | undefined> = {}) {
  const { mark, env: markEnv } = leftoverMark();
  const r = await cli(args, { ...markEnv, ...env });
  assert.deepEqual(await markedProcesses(mark), [], 'a process of the run is left');
  return r;
}

describe('--ssh-tunnel through a real sshd', () => {
  let sshd: TestSshd;
  let database: string;
  before(async () => {
    sshd = await startSshd();
    database = await createDatabase('ssh_tunnel');
  });
  after(async () => {
    await sshd?.stop();
    if (database) await sql('postgres', `DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  });
  const tunnelArgs = (knownHosts?: string) => ['--ssh-tunnel', sshd.destination, '--ssh-private-key-file', sshd.keyFile, ...(knownHosts ? ['--ssh-known-hosts-file', knownHosts] : [])];

  it('a good key: the dump goes through the tunnel, then a restore and a drill --target-url do too; no ssh left', async () => {
    const to = await tempLocation();
    // The database URL names the server as the bastion sees it (here: its own loopback).
    const r = await cliLeavingNothing(['dump', '--to', to, '--json', ...tunnelArgs(sshd.knownHostsFile)], { DATABASE_URL: dbUrl(database) });
    assert.equal(r.code, 0, r.stderr);
    const pgPort = new URL(adminUrl()).port;
    assert.match(r.stderr, new RegExp(`ssh tunnel: 127\\.0\\.0\\.1:\\d+ → 127\\.0\\.0\\.1:${pgPort} through ${sshd.user}@\\[127\\.0\\.0\\.1\\]:${sshd.port} \\(host key checked\\)`));
    const manifest = JSON.parse(r.stdout);
    assert.equal(manifest.database, database);
    const direct = await sql<{ n: string }>(database, 'SELECT count(*)::text AS n FROM customers');
    assert.equal(manifest.tables.find((t: { table: string }) => t.table === 'customers').rows, Number(direct[0]!.n));
    // The connections came in from sshd's side (application_name is ours, the client address loopback), not straight from here: checked by the log line above.
    const target = await createDatabase('ssh_restore', false);
    try {
      const restored = await cliLeavingNothing(['restore', '--from', to, '--backup', manifest.backupUri.replace(`${to}/`, ''), '--target-url', dbUrl(target), ...tunnelArgs(sshd.knownHostsFile)]);
      assert.equal(restored.code, 0, restored.stderr);
      assert.match(restored.stderr, /ssh tunnel: 127\.0\.0\.1:\d+ →/);
      assert.deepEqual(await sql(target, 'SELECT count(*)::int AS n FROM customers'), [{ n: Number(direct[0]!.n) }]);
    } finally {
      await sql('postgres', `DROP DATABASE IF EXISTS "${target}" WITH (FORCE)`);
    }
    // A drill into a database behind the bastion (--target-url).
    const drillTarget = await createDatabase('ssh_drill', false);
    try {
      const drilled = await cliLeavingNothing(['drill', '--from', to, '--backup', manifest.backupUri.replace(`${to}/`, ''), '--target-url', dbUrl(drillTarget), '--json', ...tunnelArgs(sshd.knownHostsFile)]);
      assert.equal(drilled.code, 0, drilled.stderr);
      assert.equal(JSON.parse(drilled.stdout).ok, true);
      assert.match(drilled.stderr, /ssh tunnel: 127\.0\.0\.1:\d+ →/);
    } finally {
      await sql('postgres', `DROP DATABASE IF EXISTS "${drillTarget}" WITH (FORCE)`);
    }
  });

  it('a wrong host key in known_hosts: refused in one line, nothing dumped, no ssh left', async () => {
    const dir = await tempDir('pgb-ssh-wrong-');
    const wrong = path.join(dir, 'known_hosts');
    await writeFile(wrong, `${sshd.wrongKnownHostsLine}\n`);
    const to = await tempLocation();
    const r = await cliLeavingNothing(['dump', '--to', to, ...tunnelArgs(wrong)], { DATABASE_URL: dbUrl(database) });
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /ssh tunnel to .* failed: the bastion's host key does not match the one in --ssh-known-hosts-file .*nothing was sent to it; get it with `ssh-keyscan -p \d+ 127\.0\.0\.1`/);
    assert.deepEqual(await filesIn(to), []);
  });

  it('a known_hosts without the bastion\'s key: refused, never trusted on first use', async () => {
    const dir = await tempDir('pgb-ssh-other-');
    const other = path.join(dir, 'known_hosts');
    await writeFile(other, `${sshd.wrongKnownHostsLine.replace(/^\[127\.0\.0\.1\]:\d+/, 'bastion.example.org')}\n`);
    const to = await tempLocation();
    const r = await cliLeavingNothing(['dump', '--to', to, ...tunnelArgs(other)], { DATABASE_URL: dbUrl(database) });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /has no host key for \[127\.0\.0\.1\]:\d+: nothing was sent to it; add the bastion's line \(it starts with \[127\.0\.0\.1\]:\d+\)/);
    assert.deepEqual(await filesIn(to), []);
  });

  it('no known hosts at all: refused before ssh runs', async () => {
    const to = await tempLocation();
    const r = await cliLeavingNothing(['dump', '--to', to, ...tunnelArgs()], { DATABASE_URL: dbUrl(database) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim(), /^pg-backup: --ssh-tunnel needs --ssh-known-hosts-file: the bastion's host key is never trusted on first use .*ssh-keyscan -p \d+ 127\.0\.0\.1/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.deepEqual(await filesIn(to), []);
  });

  it('a dead bastion (nothing listens on its port): one line', async () => {
    const dead = await freePort();
    const to = await tempLocation();
    const r = await cliLeavingNothing(['dump', '--to', to, '--ssh-tunnel', `${sshd.user}@127.0.0.1:${dead}`, '--ssh-private-key-file', sshd.keyFile, '--ssh-known-hosts-file', sshd.knownHostsFile], { DATABASE_URL: dbUrl(database) });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`ssh tunnel to ${sshd.user}@\\[127\\.0\\.0\\.1\\]:${dead} failed: the bastion refused the connection on port ${dead} \\(nothing listens there\\)`));
    assert.deepEqual(await filesIn(to), []);
  });

  it('a database the bastion cannot reach: the tunnel\'s own reason, not "closed during start-up"', async () => {
    const nothing = await freePort();
    const to = await tempLocation();
    const r = await cliLeavingNothing(['dump', '--to', to, ...tunnelArgs(sshd.knownHostsFile)], { DATABASE_URL: `postgresql://postgres:pgtestpw@127.0.0.1:${nothing}/postgres` });
    assert.equal(r.code, 2, r.stderr);
    const last = r.stderr.trim().split('\n').at(-1)!;
    assert.match(last, new RegExp(`cannot reach the database through the SSH tunnel: the bastion 127\\.0\\.0\\.1 could not open a connection to 127\\.0\\.0\\.1:${nothing} \\(connect failed: Connection refused\\)`));
    assert.doesNotMatch(r.stderr, /pgtestpw/);
    assert.deepEqual(await filesIn(to), []);
  });

  it('SIGTERM while the run waits on the database: exits 143, ssh ended', async () => {
    // A "database" that accepts and never answers, behind the tunnel: the run waits in its connect.
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const { mark, env } = leftoverMark();
    const to = await tempLocation();
    const tmp = await tempDir('pgb-ssh-sig-');
    try {
      const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'dump', '--to', to, ...tunnelArgs(sshd.knownHostsFile)], {
        env: { ...process.env, ...s3Env(), ...env, TMPDIR: tmp, DATABASE_URL: `postgresql://postgres:pw@127.0.0.1:${port}/postgres` },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      const connected = new Promise<void>((resolve) => silent.once('connection', () => resolve()));
      child.stderr.on('data', (d) => (stderr += d));
      const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await connected; // the tunnel is up and the run's connection reached the silent server through it
      child.kill('SIGTERM');
      assert.equal(await exit, 143, stderr);
      assert.deepEqual(await markedProcesses(mark), [], 'ssh is left');
      assert.deepEqual(await readdir(tmp), [], 'the tunnel\'s directory is removed');
      assert.deepEqual(await filesIn(to), []);
    } finally {
      silent.close();
    }
  });

  it('withSshTunnel closes the tunnel when the work throws, and the URL keeps the host name with hostaddr', async () => {
    let seen: string[] = [];
    let pidAlive = false;
    await assert.rejects(withSshTunnel({ destination: sshd.destination, privateKeyFile: sshd.keyFile, knownHostsFile: sshd.knownHostsFile }, ['postgresql://app:pw@localhost:5432/app?sslmode=verify-full'], async (urls) => {
      seen = urls;
      throw new Error('the work failed');
    }), /the work failed/);
    const u = new URL(seen[0]!);
    assert.equal(u.hostname, 'localhost');
    assert.equal(u.searchParams.get('hostaddr'), '127.0.0.1');
    assert.equal(u.searchParams.get('sslmode'), 'verify-full');
    assert.notEqual(u.port, '5432');
    // Nothing listens on the forward any more.
    pidAlive = await new Promise<boolean>((resolve) => {
      const s = net.connect(Number(u.port), '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    assert.equal(pidAlive, false);
  });

  /** Runs an action from its source (src/github/<name>-action.ts) as the runner runs its bundle: inputs as INPUT_<NAME>, outputs to GITHUB_OUTPUT. */
  async function runActionSource(name: 'dump' | 'drill', inputs: Record<string, string>, tmp: string, extraEnv: Record<string, string> = {}) {
    const outputFile = path.join(tmp, 'output');
    await writeFile(outputFile, '');
    const env: Record<string, string | undefined> = { ...s3Env(), GITHUB_OUTPUT: outputFile, GITHUB_STEP_SUMMARY: path.join(tmp, 'summary'), DATABASE_URL: undefined, TMPDIR: path.join(tmp, 'tmp'), ...extraEnv };
    for (const [k, v] of Object.entries(inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
    await import('node:fs/promises').then((fs) => fs.mkdir(path.join(tmp, 'tmp')));
    await writeFile(path.join(tmp, 'summary'), '');
    const r = await run(process.execPath, [path.join(root, 'src/github', `${name}-action.ts`)], { env });
    return { ...r, outputs: parseOutputFile(await readFile(outputFile, 'utf8')), tmpLeft: await readdir(path.join(tmp, 'tmp')) };
  }

  it('the dump action with ssh-tunnel, ssh-private-key (content, CRLF, no final newline) and ssh-known-hosts: dumps, masks the key, leaves no key file and no ssh', async () => {
    const tmp = await tempDir('pgb-ssh-action-');
    const key = (await readFile(sshd.keyFile, 'utf8')).trim().replace(/\n/g, '\r\n');
    const to = await tempLocation();
    const { mark, env } = leftoverMark();
    const r = await runActionSource('dump', {
      'database-url': dbUrl(database), to, 'ssh-tunnel': sshd.destination, 'ssh-private-key': key, 'ssh-known-hosts': await readFile(sshd.knownHostsFile, 'utf8'),
    }, tmp, env);
    assert.match(r.stdout, /ssh tunnel: 127\.0\.0\.1:\d+ → /);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.outputs['backup-uri'] ?? '', new RegExp(`^${to}/`));
    const keyLines = key.split('\r\n').filter((l) => l && !l.startsWith('-----'));
    for (const line of keyLines) assert.ok(r.stdout.includes(`::add-mask::${line}`), 'every line of the key is masked');
    const logged = r.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::')).join('\n') + r.stderr;
    for (const line of keyLines) assert.ok(!logged.includes(line), 'a key line reached the log');
    assert.deepEqual(r.tmpLeft, [], 'the key file and its directory are removed');
    assert.deepEqual(await markedProcesses(mark), []);
  });

  it('the dump action with ssh-tunnel but no ssh-known-hosts: refused in one ::error:: line, nothing written, no key file left', async () => {
    const tmp = await tempDir('pgb-ssh-action-');
    const to = await tempLocation();
    const r = await runActionSource('dump', { 'database-url': dbUrl(database), to, 'ssh-tunnel': sshd.destination, 'ssh-private-key': await readFile(sshd.keyFile, 'utf8') }, tmp);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    const errors = r.stdout.split('\n').filter((l) => l.startsWith('::error::'));
    assert.equal(errors.length, 1, r.stdout);
    assert.match(errors[0]!, /input "ssh-tunnel" needs input "ssh-known-hosts": the bastion's host key is never trusted on first use/);
    assert.deepEqual(await filesIn(to), []);
    assert.deepEqual(r.tmpLeft, []);
  });
});

describe('--ssh-tunnel with sslmode=verify-full: the certificate is checked against the URL\'s host name, not the tunnel\'s 127.0.0.1', () => {
  // The database's name, db.private.test, exists only for the bastion (its own /etc/hosts, in a
  // mount namespace: 127.0.0.1). pg-backup runs in a mount namespace where the same name is
  // 127.0.0.2, where nothing listens: were the name used to connect instead of hostaddr, the run
  // would fail; were 127.0.0.1 used to check the certificate (made for db.private.test), it would too.
  let sshd: TestSshd;
  let server: TlsPostgres;
  before(async () => {
    server = await startTlsPostgres('db.private.test');
    sshd = await startSshd({ hosts: '127.0.0.1 localhost db.private.test\n' });
  });
  after(async () => {
    await sshd?.stop();
    await server?.stop();
  });

  it('dumps through the tunnel with verify-full (node-postgres and pg_dump alike); no ssh left', async () => {
    const dir = await tempDir('pgb-ssh-tls-');
    await writeFile(path.join(dir, 'hosts'), '127.0.0.1 localhost\n127.0.0.2 db.private.test\n');
    const to = await tempLocation();
    const { mark, env } = leftoverMark();
    const r = await run('unshare', ['--mount', '--', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', path.join(dir, 'hosts'),
      process.execPath, path.join(root, 'bin/pg-backup.js'), 'dump', '--to', to, '--json',
      '--ssh-tunnel', sshd.destination, '--ssh-private-key-file', sshd.keyFile, '--ssh-known-hosts-file', sshd.knownHostsFile,
    ], { env: { ...s3Env(), ...env, DATABASE_URL: `postgresql://postgres:pgtestpw@db.private.test:${server.port}/postgres?sslmode=verify-full&sslrootcert=${encodeURIComponent(server.certFile)}` } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`ssh tunnel: 127\\.0\\.0\\.1:\\d+ → db\\.private\\.test:${server.port}`));
    assert.deepEqual(JSON.parse(r.stdout).tables.map((t: { table: string; rows: number }) => [t.table, t.rows]), [['t', 10]]);
    assert.deepEqual(await markedProcesses(mark), []);
  });
});
