// SIGINT during restore --server (issue #25, h10): the downloads run ahead of the restores (the
// small databases' as their stored objects, the large one's as its archive) and each database's
// checks run while its lane restores the next, so a cancellation has several stages to stop. The
// signal is sent once the run's pg_restore of the large database is alive (found by the leftover
// marker, as drill-signals.test.ts does), never after a sleep: the run ends with 130, no zstd or
// pg_restore process of it is left, and its work dir is empty.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { root, s3Env } from '../helpers.ts';
import { dumpRun, ownedItemDatabases } from '../infra/globals-fixture.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { queryEach, startTcpCluster, type TcpCluster } from '../infra/tcp-cluster.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';

const q = queryEach;

/** Polls every 20 ms until `found` returns true; throws after `ms`. */
async function until(what: string, found: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await found())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('restore --server cancelled by SIGINT', { timeout: 300_000 }, () => {
  let source: TcpCluster;
  let target: TcpCluster;
  let to: string;

  before(async () => {
    [source, target] = await Promise.all([startTcpCluster(), startTcpCluster()]);
    await ownedItemDatabases(source, { large: 1_500_000, small_a: 20, small_b: 30 });
    to = await tempLocation();
    await dumpRun({ adminUrl: source.adminUrl, urlOf: source.urlOf, databases: ['large', 'small_a', 'small_b'], to, service: 'shop', environment: 'prod' });
  });
  after(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
  });

  it('while the large database restores: exit 130, no zstd or pg_restore left, the work dir empty', async () => {
    const { mark, env } = leftoverMark();
    const work = await tempDir('pgb-h10-cancel-');
    const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'restore', '--server', '--from', to, '--service', 'shop', '--environment', 'prod', '--target-url', target.adminUrl, '--work-dir', work], {
      env: { ...process.env, ...s3Env(), DATABASE_URL: undefined, ...env } as NodeJS.ProcessEnv,
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await until('the large database\'s pg_restore', async () => stderr.includes('large: restoring with') && (await markedProcesses(mark)).some((p) => /pg_restore .*--create/.test(p)));
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 130, stderr);
    assert.match(stderr, /received SIGINT: cancelling and cleaning up/);
    assert.doesNotMatch(stderr, /large: restored and checked/);
    assert.deepEqual(await markedProcesses(mark), [], 'no zstd, pg_restore or psql process left');
    assert.deepEqual(await readdir(work), [], 'no download left in the work dir');
  });
});
