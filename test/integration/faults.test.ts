import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { addBigTable, cli, createDatabase, dbUrl, dumpWithCli, openMultipartUploads, root, run, s3Env, s3Keys, s3Location } from '../helpers.ts';
import { tempDir, tempFakePgBin, tempLocation } from '../infra/temp.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

/** Runs the CLI and sends `signal` once stderr matches `when`; resolves with the exit code and stderr. */
function interrupt(args: string[], env: Record<string, string>, when: RegExp, signal: NodeJS.Signals): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), ...args], { env: { ...process.env, ...s3Env(), ...env } });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!sent && when.test(stderr)) {
        sent = true;
        setTimeout(() => child.kill(signal), 300);
      }
    });
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('signals (a cancelled workflow run)', () => {
  for (const { faultId, signal } of [{ faultId: 'signal-dump-sigterm', signal: 'SIGTERM' }, { faultId: 'signal-dump-sigint', signal: 'SIGINT' }] as const) {
    it(`${signal} during a dump aborts the multipart upload and exits non-zero, leaving nothing`, { timeout: 60_000 }, async () => {
      const db = await createDatabase('sigdump', false);
      const bin = await tempFakePgBin('head -c 20000000 /dev/urandom; exec sleep 30');
      const to = s3Location('sigdump');
      const { mark, env } = leftoverMark();
      const r = await interrupt(['dump', '--verbose', '--to', to], { DATABASE_URL: dbUrl(db), PG_BIN_DIR: bin, ...env }, /snapshot \S+ exported/, signal);
      assert.equal(r.code, signal === 'SIGTERM' ? 143 : 130, r.stderr);
      assert.match(r.stderr, new RegExp(`received ${signal}: cancelling and cleaning up`));
      assert.deepEqual(await s3Keys(to), []);
      assert.deepEqual(await openMultipartUploads(to), []);
      assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
      await recordFault({ faultId, fault: `${signal} during a dump (20 MB uploaded)`, outcome: 'pg_dump stopped, multipart upload aborted', exit: r.code ?? 'killed', left: `${await leftBehind(to)}; no pg_dump or zstd process`, file: import.meta.url, message: lastLine(r.stderr) });
    });
  }

  it('SIGTERM during a drill removes the throwaway cluster and its files', { timeout: 120_000 }, async () => {
    const db = await createDatabase('sigdrill', false);
    await addBigTable(db, 60);
    const to = await tempLocation();
    await dumpWithCli(db, to);
    const work = await tempDir('pgb-sigwork-');
    await chmod(work, 0o777);
    const r = await interrupt(['drill', '--from', to, '--work-dir', work, '--jobs', '1'], {}, /restoring into/, 'SIGTERM');
    assert.equal(r.code, 143, r.stderr);
    assert.match(r.stderr, /throwaway cluster removed/);
    assert.deepEqual(await readdir(work), [], 'no cluster or archive left behind');
    const ps = await run('ps', ['-eo', 'comm=,args=']);
    const left = ps.stdout.split('\n').filter((l) => /^postgres\s/.test(l) && l.includes(work));
    assert.deepEqual(left, [], 'no postgres process left');
    await recordFault({ faultId: 'signal-drill-sigterm', fault: 'SIGTERM during a drill\'s restore (60 MB table)', outcome: 'restore stopped, throwaway cluster stopped and its files removed, no postgres process left', exit: r.code ?? 'killed', left: await leftBehind(to), file: import.meta.url, message: lastLine(r.stderr) });
  });
});

describe('disk', () => {
  it('a drill whose work dir runs out of space fails clearly, naming the space needed, and cleans up', { timeout: 180_000 }, async () => {
    const db = await createDatabase('diskfull', false);
    await addBigTable(db, 150);
    const to = await tempLocation();
    const { manifest } = await dumpWithCli(db, to);
    const work = await tempDir('pgb-small-');
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=80m,mode=0777', 'tmpfs', work]);
    assert.equal(mounted.code, 0, `mounting a small tmpfs (the tests run as root): ${mounted.stderr}`);
    try {
      const r = await cli(['drill', '--from', to, '--work-dir', work, '--json']);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout);
      // Refused by the free-space check before initdb and the download (src/postgres/disk.ts).
      assert.match(report.reason, new RegExp(`^not enough free space in ${work} for the drill \\(archive ${(manifest.archiveSizeBytes / 1e6).toFixed(0)}(\\.\\d)? MB \\+ .*\\): needs about \\S+ MB, \\S+ MB left`));
      assert.deepEqual(await readdir(work), [], 'the cluster and the partial archive are removed');
      await recordFault({ faultId: 'disk-drill-full', fault: 'the drill\'s work dir runs out of space (80 MB tmpfs, 150 MB table)', outcome: 'refused before initdb and the download, naming the room needed and the room left; nothing written to the work dir', exit: r.code, left: await leftBehind(to), file: import.meta.url, message: report.reason });
    } finally {
      await run('umount', [work]);
    }
  });
});
