import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { formatBytes } from '../../src/format.ts';
import { CheckFailedError } from '../../src/errors.ts';
import { startThrowawayCluster } from '../../src/postgres/cluster.ts';
import { connect } from '../../src/postgres/server.ts';
import { cli, createDatabase, dbUrl, dumpWithCli, realPgBin, root, run } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

// The drill's throwaway cluster holds restored production data: only the drill may reach it.
// And a drill checks its work dir's room before initdb and before the download. Real processes:
// a second OS user (`nobody`, via runuser: the tests run as root) tries to connect; small tmpfs
// mounts stand in for a full disk.

const quietLogger = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };

/** A work dir the cluster's OS user (postgres, when root) can traverse. */
async function workDir(label: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `pgb-${label}-`));
  await chmod(dir, 0o777);
  return dir;
}

/** psql as OS user `user` to the cluster whose socket is in `socketDir`. */
async function psqlAs(user: string, socketDir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const psql = path.join(await realPgBin(), 'psql');
  return run('runuser', ['-u', user, '--', psql, '-X', '-A', '-t', '-h', socketDir, '-p', '5432', '-U', 'postgres', '-d', 'postgres', '-c', 'SELECT 42'], { cwd: '/' });
}

/** A small tmpfs at a fresh directory (root only); returns it and an unmount function. */
async function tmpfs(label: string, size: string): Promise<{ dir: string; unmount: () => Promise<void> }> {
  const dir = await workDir(label);
  const mounted = await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0777`, 'tmpfs', dir]);
  assert.equal(mounted.code, 0, `mounting a ${size} tmpfs (the tests run as root): ${mounted.stderr}`);
  return {
    dir,
    unmount: async () => {
      await run('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** postgres processes whose command line names `dir`. */
async function postgresUnder(dir: string): Promise<string[]> {
  const ps = await run('ps', ['-eo', 'comm=,args=']);
  return ps.stdout.split('\n').filter((l) => /^postgres\s/.test(l) && l.includes(dir));
}

describe("the drill's throwaway cluster is private", () => {
  it('no TCP listener, a 0770 socket in a 2710 directory of the cluster user and our group: another OS user cannot connect, the cluster user can', { timeout: 120_000 }, async () => {
    assert.equal(process.getuid?.(), 0, 'this test switches OS users with runuser: run it as root');
    const work = await workDir('private');
    const cluster = await startThrowawayCluster({ minMajor: 0, workDir: work, logger: quietLogger });
    try {
      // Ours, passable (the cluster user must reach its directories), not listable.
      assert.equal((await stat(cluster.dir)).mode & 0o7777, 0o711, 'cluster directory');
      const data = await stat(path.join(cluster.dir, 'data'));
      assert.equal(data.mode & 0o777, 0o700, 'data directory');
      assert.equal(data.uid, cluster.isolation.user.uid, 'the data directory belongs to the cluster user');
      assert.equal(cluster.isolation.user.name, 'pg-backup-drill');
      const sockDir = await stat(cluster.socketDir);
      assert.deepEqual({ mode: sockDir.mode & 0o7777, uid: sockDir.uid, gid: sockDir.gid }, { mode: 0o2710, uid: cluster.isolation.user.uid, gid: process.getgid!() }, 'socket directory: the cluster user, our group, setgid');
      const socket = await stat(path.join(cluster.socketDir, '.s.PGSQL.5432'));
      assert.deepEqual({ mode: socket.mode & 0o777, gid: socket.gid }, { mode: 0o770, gid: process.getgid!() }, 'socket: our group inherited');
      const client = await connect(cluster.connection);
      try {
        const { rows } = await client.query<{ listen: string; addr: string | null }>("SELECT current_setting('listen_addresses') AS listen, inet_server_addr()::text AS addr");
        assert.deepEqual(rows[0], { listen: '', addr: null }, 'no TCP listener; this process reaches it over the socket');
      } finally {
        await client.end();
      }
      const other = await psqlAs('nobody', cluster.socketDir);
      assert.notEqual(other.code, 0, `nobody connected: ${other.stdout}`);
      assert.match(other.stderr, /Permission denied/);
      // The control: the same command as the cluster's own OS user works, so the refusal above
      // comes from the directory's mode, not from a wrong command.
      const owner = await psqlAs('pg-backup-drill', cluster.socketDir);
      assert.equal(owner.code, 0, owner.stderr);
      assert.equal(owner.stdout.trim(), '42');
      await recordFault({ faultId: 'cluster-other-os-user', fault: 'another OS user (`nobody`) connects to a running throwaway cluster as `postgres`', outcome: 'refused: no TCP listener, and its Unix socket (0770, our group) is in a 2710 directory of the cluster user pg-backup-drill with our group; the cluster user itself connects', exit: `psql ${other.code}`, left: 'nothing (cluster stopped and removed)', file: import.meta.url, message: lastLine(other.stderr) });
    } finally {
      await cluster.stop();
      await rm(work, { recursive: true, force: true });
    }
    assert.deepEqual(await postgresUnder(work), []);
  });

  it('during a real drill: the cluster\'s data and socket directories and the downloaded archive are closed to others; nobody cannot connect', { timeout: 180_000 }, async () => {
    const db = await createDatabase('privdrill');
    const from = await tempLocation();
    await dumpWithCli(db, from);
    const work = await workDir('privdrillwork');
    const smoke = path.join(work, 'smoke.sql');
    // Holds the drill open in its checks phase long enough to look at it.
    await writeFile(smoke, '-- expect: ok\nSELECT pg_sleep(8);\n');
    await chmod(smoke, 0o644);
    const seen: { cluster?: number; socketDir?: number; scratch?: number; nobody?: { code: number; stderr: string }; archiveRead?: number } = {};
    const drill = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'drill', '--from', from, '--work-dir', work, '--smoke-sql', smoke], { env: process.env });
    let stderr = '';
    drill.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => drill.on('close', resolve));
    try {
      const deadline = Date.now() + 120_000;
      while (!/row counts:/.test(stderr) && Date.now() < deadline && drill.exitCode === null) await new Promise((r) => setTimeout(r, 100));
      assert.match(stderr, /row counts:/, `the drill reached its checks: ${stderr}`);
      const names = await readdir(work);
      const clusterDir = path.join(work, names.find((n) => n.startsWith('pg-backup-cluster-'))!);
      const scratch = path.join(work, names.find((n) => n.startsWith('pg-backup-drill-'))!);
      seen.cluster = (await stat(path.join(clusterDir, 'data'))).mode & 0o7777;
      seen.socketDir = (await stat(path.join(clusterDir, 'socket'))).mode & 0o7777;
      seen.scratch = (await stat(scratch)).mode & 0o777;
      seen.nobody = await psqlAs('nobody', path.join(clusterDir, 'socket'));
      const archive = (await readdir(scratch))[0]!;
      seen.archiveRead = (await run('runuser', ['-u', 'nobody', '--', 'head', '-c', '1', path.join(scratch, archive)], { cwd: '/' })).code;
    } finally {
      const code = await exited;
      assert.equal(code, 0, stderr);
    }
    assert.match(stderr, /restore drill OK/);
    assert.equal(seen.cluster, 0o700, 'data directory mode');
    assert.equal(seen.socketDir, 0o2710, 'socket directory mode');
    assert.equal(seen.scratch, 0o700, 'download directory mode');
    assert.notEqual(seen.nobody!.code, 0, 'nobody connected to the drill cluster');
    assert.match(seen.nobody!.stderr, /Permission denied/);
    assert.notEqual(seen.archiveRead, 0, 'nobody read the downloaded archive');
    assert.deepEqual((await readdir(work)).filter((n) => n.startsWith('pg-backup-')), [], 'cluster and archive removed');
    await recordFault({ faultId: 'cluster-drill-other-os-user', fault: 'during a drill (held in its checks), OS user `nobody` connects to its cluster and reads its downloaded archive', outcome: 'both refused (directories 0700); the drill passes and removes both', exit: 0, left: 'the backup and its drill log', file: import.meta.url, message: lastLine(seen.nobody!.stderr) });
    await rm(work, { recursive: true, force: true });
  });
});

describe("a drill's disk room", () => {
  it('a work dir with too little room fails before initdb, in one line naming the path, the room needed and the room left', { timeout: 120_000 }, async () => {
    const db = await createDatabase('roomdrill');
    const from = await tempLocation();
    const { manifest } = await dumpWithCli(db, from);
    const small = await tmpfs('room', '30m');
    try {
      const started = Date.now();
      const r = await cli(['drill', '--from', from, '--work-dir', small.dir, '--json']);
      const durationMs = Date.now() - started;
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout);
      assert.match(report.reason, new RegExp(`^not enough free space in ${small.dir} for the drill \\(archive ${formatBytes(manifest.archiveSizeBytes).replace('.', '\\.')} \\+ restored database ~[\\d.]+ MB \\+ WAL ~[\\d.]+ MB \\+ empty cluster 50\\.3 MB\\): needs about [\\d.]+ MB, 3[0-9](\\.\\d)? MB left; free space or choose another --work-dir$`));
      assert.doesNotMatch(r.stderr, /initdb|The files belonging/, 'initdb never ran');
      assert.deepEqual(await readdir(small.dir), [], 'nothing written to the work dir');
      await recordFault({ faultId: 'disk-drill-no-room', fault: "the drill's work dir has less room than an empty cluster plus the archive and the restored database (30 MB tmpfs)", outcome: 'refused before initdb and the download, one line naming the path, the room needed and the room left', exit: r.code, left: await leftBehind(from), file: import.meta.url, message: report.reason, durationMs });
    } finally {
      await small.unmount();
    }
  });

  it('with --target-url only the archive needs room: checked before the download', { timeout: 120_000 }, async () => {
    const db = await createDatabase('roomtarget');
    const from = await tempLocation();
    const { manifest } = await dumpWithCli(db, from);
    const target = await createDatabase('roomtargetdst', false);
    const small = await tmpfs('roomtarget', '16k');
    assert.ok(manifest.archiveSizeBytes > 16 * 1024, `the archive (${manifest.archiveSizeBytes} B) is larger than the tmpfs`);
    try {
      const r = await cli(['drill', '--from', from, '--work-dir', small.dir, '--target-url', dbUrl(target), '--json']);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout);
      assert.match(report.reason, new RegExp(`^not enough free space in ${small.dir} for the drill \\(archive [\\d.]+ [kM]B\\): needs about [\\d.]+ [kM]B, [\\d.]+ k?B left; free space or choose another --work-dir$`));
      assert.deepEqual(await readdir(small.dir), []);
    } finally {
      await small.unmount();
    }
  });

  it('initdb itself out of space: one line, not its output; nothing left behind', { timeout: 120_000 }, async () => {
    const small = await tmpfs('initdbfull', '8m');
    try {
      const err = await startThrowawayCluster({ minMajor: 0, workDir: small.dir, logger: quietLogger }).then(
        () => assert.fail('the cluster started on an 8 MB tmpfs'),
        (e: Error) => e,
      );
      assert.ok(err instanceof CheckFailedError, String(err));
      assert.equal(err.message.split('\n').length, 1, err.message);
      assert.match(err.message, new RegExp(`^initdb ran out of space in ${small.dir} \\(No space left on device\\): an empty cluster needs about 50 MB`));
      assert.deepEqual(await readdir(small.dir), [], 'the partial cluster is removed');
      assert.deepEqual(await postgresUnder(small.dir), []);
      await recordFault({ faultId: 'disk-initdb-full', fault: 'initdb runs out of space (8 MB tmpfs as the work dir)', outcome: 'one line naming the directory and the room an empty cluster needs; the partial cluster removed', exit: 'rejects', left: 'nothing in the work dir', file: import.meta.url, message: err.message });
    } finally {
      await small.unmount();
    }
  });
});
