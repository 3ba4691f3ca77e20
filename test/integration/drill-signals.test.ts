// SIGINT/SIGTERM at each phase of a drill (cluster start: initdb and pg_ctl start; download;
// both at once, as they overlap; restore; checks) and a closed stderr (EPIPE): the drill ends
// with 130/143 (141 for EPIPE), its throwaway cluster stopped and removed, its download directory removed, no process left,
// and its verdict ("drill cancelled: …") archived as the drill log and report.
// The moment of each signal is chosen without racing the drill: the cluster start phases are
// held at a gate (test/infra/phase-gate.ts: a PG_BIN_DIR whose initdb and pg_ctl wait for the
// test at that point), the others by the run's log lines, a throttled download or a long
// pg_restore (test/infra/leftovers.ts markers), never by sleeping.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, cp, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createDatabase, dumpWithCli, fileLocation, need, realPgBin, root, s3Env, s3Location, sql } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { phaseGate } from '../infra/phase-gate.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

let db: string;
let fileBackup: string;
/** Every file:// location this file makes, removed after it. */
const locations: string[] = [];

/** A fresh file:// location, removed after this file's tests. */
async function location(): Promise<string> {
  const to = await fileLocation();
  locations.push(to);
  return to;
}

before(async () => {
  db = await createDatabase('sigphase', false);
  await sql(db, ['t1', 't2'].map((t) => `CREATE TABLE ${t} AS SELECT g AS id, md5(random()::text) AS payload FROM generate_series(1, 100000) g;`).join('\n'));
  fileBackup = await location();
  await dumpWithCli(db, fileBackup);
}, { timeout: 120_000 });

after(async () => {
  for (const l of locations) await rm(fileURLToPath(l), { recursive: true, force: true });
});

/** A fresh file:// location holding a copy of the shared backup (each drill archives its own log). */
async function copyOfBackup(): Promise<string> {
  const to = await location();
  await cp(fileURLToPath(fileBackup), fileURLToPath(to), { recursive: true });
  return to;
}

interface Run {
  code: number | null;
  stderr: string;
  leftProcesses: string[];
  leftDirs: string[];
}

/**
 * Runs a drill with a leftover marker, its own TMPDIR / work dir, and `trigger`, which decides
 * when to interrupt it (it gets the marker, the stderr so far and the child) and does so.
 */
async function drillInterrupted(
  args: string[],
  env: Record<string, string>,
  trigger: (ctx: { mark: string; stderr: () => string; child: ReturnType<typeof spawn> }) => Promise<void>,
): Promise<Run> {
  const { mark, env: markEnv } = leftoverMark();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'pgb-sigphase-'));
  await chmod(tmp, 0o777); // the throwaway cluster runs as postgres when the tests run as root
  const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'drill', ...args], {
    env: { ...process.env, ...s3Env(), DATABASE_URL: undefined, ...markEnv, TMPDIR: tmp, PG_BACKUP_WORK_DIR: tmp, ...env } as NodeJS.ProcessEnv,
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stderr!.on('error', () => undefined);
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const triggered = trigger({ mark, stderr: () => stderr, child });
  const code = await exited;
  await triggered.catch(() => undefined);
  const leftProcesses = await markedProcesses(mark);
  const leftDirs = await readdir(tmp);
  await rm(tmp, { recursive: true, force: true });
  return { code, stderr, leftProcesses, leftDirs };
}

/** Polls every 20 ms until `found` returns true; throws after `ms`. */
async function until(what: string, found: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await found())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** True once a process of the run whose command line matches `pattern` is alive. */
const running = (mark: string, pattern: RegExp) => async () => (await markedProcesses(mark)).some((p) => pattern.test(p));

/** The asserts every interrupted drill must pass. */
async function assertCancelled(r: Run, to: string, code: number, why: RegExp): Promise<string> {
  assert.equal(r.code, code, r.stderr);
  assert.deepEqual(r.leftProcesses, [], 'no initdb, pg_ctl, postgres, zstd or pg_restore process left');
  assert.deepEqual(r.leftDirs, [], 'no cluster directory and no download directory left');
  const left = await leftBehind(to);
  assert.match(left, /the drill log \(\.json \+ \.jsonl \+ \.log\)/, `the verdict is archived: ${left}`);
  if (code !== 141) {
    assert.match(r.stderr, why, r.stderr);
    assert.match(r.stderr.trimEnd().split('\n').at(-1)!, /^drill failed: drill cancelled: cancelled by SIG(INT|TERM)$/);
  }
  return left;
}

/**
 * A TCP proxy to Ceph RGW that forwards requests at full speed and responses at
 * `bytesPerSecond` (a slow download); `downloaded` counts the bytes sent back.
 */
async function slowDownloads(bytesPerSecond: number): Promise<{ endpoint: string; downloaded: () => number; close: () => Promise<void> }> {
  const upstream = new URL(need('PGB_TEST_S3_ENDPOINT'));
  let downloaded = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const rgw = net.connect(Number(upstream.port), upstream.hostname);
    for (const s of [client, rgw]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('close', () => rgw.destroy());
    rgw.on('close', () => client.destroy());
    client.pipe(rgw);
    rgw.on('data', (chunk: Buffer) => {
      downloaded += chunk.length;
      client.write(chunk);
      if (chunk.length > 4096) {
        rgw.pause();
        setTimeout(() => rgw.resume(), (chunk.length / bytesPerSecond) * 1000);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    downloaded: () => downloaded,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('signals at each phase of a drill', () => {
  it('SIGINT during initdb (cluster start): exit 130, no process, no directory, verdict archived', { timeout: 120_000 }, async () => {
    const to = await copyOfBackup();
    const gate = await phaseGate(['initdb']);
    const r = await drillInterrupted(['--from', to], { PG_BIN_DIR: gate.binDir }, async ({ child }) => {
      await gate.arrived('initdb'); // initdb started and waits: the drill is in its cluster start
      child.kill('SIGINT');
    }).finally(() => gate.close());
    const left = await assertCancelled(r, to, 130, /received SIGINT: cancelling and cleaning up/);
    await recordFault({ faultId: 'signal-drill-phase-initdb', fault: 'SIGINT while the drill\'s throwaway cluster runs initdb', outcome: 'initdb killed, cluster directory removed, verdict "drill cancelled" archived', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('SIGTERM during pg_ctl start (cluster start): exit 143, the started server stopped and removed', { timeout: 120_000 }, async () => {
    const to = await copyOfBackup();
    // pg_ctl start has started the server and waits before it exits: the drill is inside its
    // pg_ctl start call when the signal lands, every time; it is let go once the drill has
    // taken the signal, and the drill must then stop the server it started.
    const gate = await phaseGate(['pg_ctl start']);
    const r = await drillInterrupted(['--from', to], { PG_BIN_DIR: gate.binDir }, async ({ stderr, child }) => {
      await gate.arrived('pg_ctl start');
      child.kill('SIGTERM');
      try {
        await until('the drill took the signal', () => /received SIGTERM/.test(stderr()));
      } finally {
        await gate.release();
      }
    }).finally(() => gate.close());
    const left = await assertCancelled(r, to, 143, /received SIGTERM: cancelling and cleaning up/);
    assert.match(r.stderr, /starting throwaway PostgreSQL/, 'the signal came during the cluster start');
    assert.doesNotMatch(r.stderr, /cluster ready: /, 'the cluster start did not finish');
    await recordFault({ faultId: 'signal-drill-phase-cluster-start', fault: 'SIGTERM while the throwaway cluster starts (pg_ctl start)', outcome: 'the server is stopped once started, its directory removed, verdict archived', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('SIGTERM during the download (S3, 1 MB/s): exit 143, download stopped, cluster and scratch removed', { timeout: 180_000 }, async () => {
    const to = s3Location('sigdl');
    await dumpWithCli(db, to);
    const proxy = await slowDownloads(1_000_000);
    try {
      let before = 0;
      const r = await drillInterrupted(['--from', to], { AWS_ENDPOINT_URL_S3: proxy.endpoint }, async ({ stderr, child }) => {
        await until('the download phase', () => /\ndownload \+ cluster start\n/.test(stderr()));
        before = proxy.downloaded();
        await until('1 MB downloaded', () => proxy.downloaded() - before > 1_000_000);
        child.kill('SIGTERM');
      });
      const left = await assertCancelled(r, to, 143, /received SIGTERM: cancelling and cleaning up/);
      assert.doesNotMatch(r.stderr, /download phase: /, 'the download did not finish');
      await recordFault({ faultId: 'signal-drill-phase-download', fault: 'SIGTERM during the drill\'s download (S3 at 1 MB/s)', outcome: 'download cancelled, cluster stopped and removed, download directory removed, verdict archived', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
    } finally {
      await proxy.close();
    }
  });

  it('SIGTERM while the download and the cluster start both run: both stopped, cluster and scratch removed', { timeout: 180_000 }, async () => {
    const to = s3Location('sigboth');
    await dumpWithCli(db, to);
    const proxy = await slowDownloads(1_000_000);
    try {
      // initdb is held at its gate, so the cluster start is still running when the signal lands.
      const gate = await phaseGate(['initdb']);
      const r = await drillInterrupted(['--from', to], { AWS_ENDPOINT_URL_S3: proxy.endpoint, PG_BIN_DIR: gate.binDir }, async ({ stderr, child }) => {
        await until('the download + cluster start phase', () => /\ndownload \+ cluster start\n/.test(stderr()));
        const before = proxy.downloaded();
        await gate.arrived('initdb');
        await until('bytes downloaded while initdb waits', () => proxy.downloaded() > before);
        child.kill('SIGTERM');
      }).finally(() => gate.close());
      const left = await assertCancelled(r, to, 143, /received SIGTERM: cancelling and cleaning up/);
      assert.doesNotMatch(r.stderr, /download phase: /, 'the download was cut short');
      assert.doesNotMatch(r.stderr, /cluster ready: /, 'the cluster start was cut short');
      await recordFault({ faultId: 'signal-drill-phase-download-and-cluster-start', fault: 'SIGTERM while the download (S3 at 1 MB/s) and the throwaway cluster\'s start run at once', outcome: 'both cancelled by their one owner, cluster and download directory removed, verdict archived', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
    } finally {
      await proxy.close();
    }
  });

  it('initdb failing while the download runs: the download is cancelled, the verdict names initdb', { timeout: 180_000 }, async () => {
    const to = s3Location('sigfailinit');
    await dumpWithCli(db, to);
    // Every program real, but initdb fails once asked to make a cluster.
    const real = await realPgBin();
    const bin = await mkdtemp(path.join(os.tmpdir(), 'pgb-failinit-'));
    for (const p of ['pg_restore', 'psql', 'pg_ctl', 'postgres']) await symlink(path.join(real, p), path.join(bin, p));
    await writeFile(path.join(bin, 'initdb'), `#!/bin/bash\nif [ "$1" = "--version" ]; then exec ${real}/initdb --version; fi\necho "initdb: error: simulated failure of the cluster start" >&2\nexit 1\n`, { mode: 0o755 });
    await chmod(bin, 0o755);
    const proxy = await slowDownloads(1_000_000);
    try {
      const r = await drillInterrupted(['--from', to], { AWS_ENDPOINT_URL_S3: proxy.endpoint, PG_BIN_DIR: bin }, async () => undefined);
      assert.equal(r.code, 1, r.stderr);
      assert.deepEqual(r.leftProcesses, [], 'no process left');
      assert.deepEqual(r.leftDirs, [], 'no cluster directory and no download directory left');
      assert.match(r.stderr.trimEnd().split('\n').at(-1)!, /^drill failed: initdb failed for the throwaway cluster in .*: initdb: error: simulated failure of the cluster start$/);
      assert.doesNotMatch(r.stderr, /download phase: /, 'the download was cancelled, not finished');
      const left = await leftBehind(to);
      assert.match(left, /the drill log \(\.json \+ \.jsonl \+ \.log\)/, `the verdict is archived: ${left}`);
      await recordFault({ faultId: 'cluster-initdb-fails-during-download', fault: 'initdb fails while the drill downloads the archive (S3 at 1 MB/s)', outcome: 'the download is cancelled at once, the download directory removed, the verdict names initdb\'s error', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
    } finally {
      await proxy.close();
      await rm(bin, { recursive: true, force: true });
    }
  });

  it('SIGINT during the restore (pg_restore --jobs): exit 130, pg_restore and the cluster ended', { timeout: 180_000 }, async () => {
    // A restore long enough to be seen running: the bulk-load cluster restores the shared
    // backup's 200 000 rows in about 0.1 s, less than the process poll can rely on.
    const big = await createDatabase('sigrestore', false);
    await sql(big, `CREATE TABLE t3 AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 2000000) g;
      ALTER TABLE t3 ADD PRIMARY KEY (id); CREATE INDEX ON t3 (payload);`);
    const to = await location();
    await dumpWithCli(big, to);
    const r = await drillInterrupted(['--from', to], {}, async ({ mark, child }) => {
      await until('pg_restore --jobs', running(mark, /pg_restore .*--jobs=/));
      child.kill('SIGINT');
    });
    const left = await assertCancelled(r, to, 130, /received SIGINT: cancelling and cleaning up/);
    await recordFault({ faultId: 'signal-drill-phase-restore', fault: 'SIGINT during the drill\'s restore (pg_restore --jobs 2)', outcome: 'pg_restore killed, cluster stopped and removed, verdict archived', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('SIGTERM during the checks (a 60 s smoke query): exit 143 at once, the query cancelled', { timeout: 120_000 }, async () => {
    const to = await copyOfBackup();
    const smokeDir = await mkdtemp(path.join(os.tmpdir(), 'pgb-sigsmoke-'));
    const smoke = path.join(smokeDir, 'smoke.sql');
    await writeFile(smoke, '-- expect: ok\nSELECT pg_sleep(60);\n');
    const started = Date.now();
    const r = await drillInterrupted(['--from', to, '--smoke-sql', smoke], {}, async ({ stderr, child }) => {
      await until('the checks', () => /row counts: /.test(stderr()));
      child.kill('SIGTERM');
    });
    await rm(smokeDir, { recursive: true, force: true });
    const left = await assertCancelled(r, to, 143, /received SIGTERM: cancelling and cleaning up/);
    assert.ok(Date.now() - started < 60_000, 'the 60 s smoke query did not run to its end');
    await recordFault({ faultId: 'signal-drill-phase-checks', fault: 'SIGTERM during the drill\'s checks (a 60 s smoke query)', outcome: 'the query\'s connection closed, cluster stopped and removed, verdict archived', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: lastLine(r.stderr) });
  });

  it('a closed stderr (drill 2>&1 | head -2): exit 141 after the same cleanup', { timeout: 120_000 }, async () => {
    const to = await copyOfBackup();
    const r = await drillInterrupted(['--from', to], {}, async ({ stderr, child }) => {
      await until('two lines', () => stderr().split('\n').length > 2);
      child.stderr!.destroy(); // as `head -2` exits: the drill's next write gets EPIPE
    });
    const left = await assertCancelled(r, to, 141, /./);
    const report = await (async () => {
      const dir = fileURLToPath(to);
      const { readFile } = await import('node:fs/promises');
      const walk = async (d: string): Promise<string[]> => (await Promise.all((await readdir(d, { withFileTypes: true })).map((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)])))).flat();
      const reports = (await walk(path.join(dir, 'drills'))).filter((f) => f.endsWith('.json')).sort();
      return JSON.parse(await readFile(reports.at(-1)!, 'utf8')) as { ok: boolean; cancelled?: boolean; reason?: string };
    })();
    assert.equal(report.ok, false);
    assert.equal(report.cancelled, true, JSON.stringify(report));
    assert.match(report.reason ?? '', /stderr was closed \(EPIPE\)/);
    await recordFault({ faultId: 'signal-drill-epipe', fault: 'the drill\'s stderr closed by its reader (`2>&1 | head -2`)', outcome: 'treated like a signal: cluster stopped and removed, verdict archived with the reason', exit: r.code ?? 'killed', left: `${left}; no process, no directory`, file: import.meta.url, message: report.reason });
  });
});
