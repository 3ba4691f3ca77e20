// The drill's speed work, checked on real servers: the throwaway cluster runs with the bulk
// restore settings (read back by the drill's own smoke SQL), a --target-url server's settings
// are left alone, the phases are in the JSON report, the drill log and the CLI's output and add
// up with the RTO, and --jobs defaults to the cores (2 to 8).
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, dumpWithCli, sql } from '../helpers.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';
import { defaultDrillJobs } from '../../src/commands/drill.ts';

let to: string;
let scratch: string;

before(async () => {
  const db = await createDatabase('fastdrill');
  to = await tempLocation();
  await dumpWithCli(db, to);
  scratch = await tempDir('pgb-fastdrill-');
}, { timeout: 120_000 });
after(async () => rm(scratch, { recursive: true, force: true }));

/** A smoke SQL file that expects `setting` to have `value` on the drill's target, one query per setting. */
async function settingsSmoke(name: string, settings: Record<string, string>): Promise<string> {
  const file = path.join(scratch, name);
  await writeFile(file, Object.entries(settings).map(([k, v]) => `-- expect: value = ${v}\nSELECT current_setting('${k}');\n`).join('\n'));
  return file;
}

const BULK = ['wal_level', 'max_wal_senders', 'archive_mode', 'autovacuum', 'max_parallel_maintenance_workers', 'fsync'];

describe('a fast drill', () => {
  it('runs the throwaway cluster with the bulk restore settings and reports every phase', { timeout: 180_000 }, async () => {
    const cores = os.availableParallelism();
    const smoke = await settingsSmoke('bulk.sql', {
      wal_level: 'minimal',
      max_wal_senders: '0',
      archive_mode: 'off',
      autovacuum: 'off',
      max_parallel_maintenance_workers: String(Math.min(7, cores - 1)),
      fsync: 'off',
    });
    const r = await cli(['drill', '--from', to, '--smoke-sql', smoke, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true, report.reason);
    assert.equal(report.smoke.length, BULK.length);
    assert.ok(report.smoke.every((s: { ok: boolean }) => s.ok), JSON.stringify(report.smoke));

    // Phases: all five, the RTO covers the overlapped start, the restore and the checks.
    const p = report.phases;
    assert.deepEqual(Object.keys(p).sort(), ['checksMs', 'clusterReadyMs', 'downloadMs', 'restoreMs', 'shutdownMs']);
    for (const k of ['clusterReadyMs', 'downloadMs', 'restoreMs', 'checksMs']) assert.ok(p[k] > 0, `${k} = ${p[k]}`);
    assert.ok(p.shutdownMs >= 0);
    // Each phase is its own Date.now() difference: allow 1 ms of rounding per phase.
    assert.ok(report.rtoMs + 3 >= Math.max(p.downloadMs, p.clusterReadyMs) + p.restoreMs + p.checksMs, JSON.stringify({ rtoMs: report.rtoMs, ...p }));
    assert.ok(report.rtoMs <= p.downloadMs + p.clusterReadyMs + p.restoreMs + p.checksMs + 60_000, 'the RTO is the restore work, not the whole run');

    // The same phases in the drill log and in the CLI's last lines.
    const log = await readFile(fileURLToPath(report.drillLogUri), 'utf8');
    for (const line of [/download phase: [\d.]+ s for /, /cluster ready: [\d.]+ s \(initdb, server start, CREATE DATABASE\), while the download ran/, /restore phase: [\d.]+ s/, /checks phase: [\d.]+ s/, /throwaway cluster removed/]) {
      assert.match(log, line);
      assert.match(r.stderr, line);
    }
    const rtoLine = /RTO ([\d.]+) s \(download ([\d.]+) s ∥ cluster ready ([\d.]+) s, restore ([\d.]+) s, checks ([\d.]+) s; shutdown ([\d.]+) s after\)/;
    assert.match(log, rtoLine);
    const shown = rtoLine.exec(r.stderr);
    assert.ok(shown, r.stderr);
    assert.equal(shown[1], (report.rtoMs / 1000).toFixed(1));
    assert.equal(shown[6], (p.shutdownMs / 1000).toFixed(1));
    assert.match(r.stderr.trimEnd().split('\n').at(-1)!, /restore drill OK/);
    assert.match(log, /row counts: \d+\/\d+ tables match the manifest \(counted over [2-8] connections\)/);

    // --jobs defaults to the cores, 2 to 8.
    assert.equal(defaultDrillJobs(1), 2);
    assert.equal(defaultDrillJobs(4), 4);
    assert.equal(defaultDrillJobs(64), 8);
    assert.match(log, new RegExp(`with pg_restore [\\d.]+, ${defaultDrillJobs()} jobs`));
    const help = await cli(['drill', '--help']);
    assert.match(help.stdout.replace(/\s+/g, ' '), /--jobs <n> .*default: the cores, 2 to 8\)/);
  });

  it('leaves a --target-url server\'s settings as they were', { timeout: 180_000 }, async () => {
    const target = await createDatabase('fasttarget', false);
    const read = async () =>
      sql<{ name: string; setting: string }>(target, `SELECT name, setting FROM pg_settings WHERE name IN (${BULK.map((b) => `'${b}'`).join(', ')}) ORDER BY name`);
    const autoConf = async () => (await sql<{ n: string }>(target, "SELECT count(*)::text AS n FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"))[0]!.n;
    const before = await read();
    const autoBefore = await autoConf();
    assert.notEqual(before.find((s) => s.name === 'wal_level')?.setting, 'minimal', 'the test server is not itself a minimal-WAL server');
    // The drill's smoke SQL sees the target's own settings.
    const smoke = await settingsSmoke('target.sql', Object.fromEntries(before.map((s) => [s.name, s.setting])));
    const r = await cli(['drill', '--from', to, '--target-url', dbUrl(target), '--smoke-sql', smoke, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.phases.clusterReadyMs, 0, 'no throwaway cluster');
    assert.match(r.stderr, /RTO [\d.]+ s \(download [\d.]+ s, restore [\d.]+ s, checks [\d.]+ s; shutdown [\d.]+ s after\)/);
    assert.deepEqual(await read(), before);
    assert.equal(await autoConf(), autoBefore, 'no ALTER SYSTEM');
  });
});
