import assert from 'node:assert/strict';
import { chmod, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { addBigTable, createDatabase, dbUrl, openMultipartUploads, root, run, s3Client, s3Env, s3Keys, s3Location } from '../helpers.ts';
import { tempDir } from '../infra/temp.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { recordFault } from '../reliability.ts';

/** Cycles to run: `SOAK_CYCLES` (npm test: 5; `npm run soak`: 50). */
const CYCLES = Number(process.env.SOAK_CYCLES || 5);
/** The last third's median peak RSS may exceed the first third's by at most this factor. */
const RSS_TOLERANCE = 1.25;

interface Step {
  code: number;
  stdout: string;
  stderr: string;
  /** Peak RSS of the CLI's Node process, KiB. */
  maxRssKiB: number;
  durationMs: number;
}

/** Runs the CLI as a child with the RSS reporter preloaded. */
async function step(args: string[], env: Record<string, string>): Promise<Step> {
  const scratch = await tempDir('pgb-rss-');
  const rssFile = path.join(scratch, 'rss');
  const started = Date.now();
  const r = await run(process.execPath, ['--import', pathToFileURL(path.join(root, 'test/infra/report-rss.js')).href, path.join(root, 'bin/pg-backup.js'), ...args], {
    env: { ...s3Env(), DATABASE_URL: undefined, ...env, PGB_RSS_FILE: rssFile },
  });
  const durationMs = Date.now() - started;
  const maxRssKiB = Number((await readFile(rssFile, 'utf8').catch(() => '')).trim().split('\n').at(-1));
  return { ...r, maxRssKiB, durationMs };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Deletes every object under an `s3://` location (keeps Ceph's in-memory store small over many cycles). */
async function emptyLocation(location: string): Promise<void> {
  const [bucket, ...rest] = location.replace('s3://', '').split('/');
  const keys = await s3Keys(location);
  if (!keys.length) return;
  const client = s3Client();
  await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((k) => ({ Key: `${rest.join('/')}/${k}` })) } }));
  client.destroy();
}

describe('soak', () => {
  it(`${CYCLES} dump → verify (schema level: full archive read and a schema replay in a throwaway cluster) cycles: flat peak RSS, nothing left behind`, { timeout: 120_000 + CYCLES * 90_000 }, async () => {
    assert.ok(CYCLES >= 3, 'SOAK_CYCLES must be at least 3');
    const db = await createDatabase('soak');
    await addBigTable(db, 12); // two 5 MiB parts after zstd: the multipart path every cycle
    const to = s3Location('soak');
    const tmp = await tempDir('pgb-soaktmp-');
    await chmod(tmp, 0o755); // the throwaway cluster runs as the postgres OS user when the tests run as root
    const { mark, env: markEnv } = leftoverMark();
    const env = { TMPDIR: tmp, ...markEnv, PG_BACKUP_WORK_DIR: '' };
    const cycles: { cycle: number; dumpRssMiB: number; verifyRssMiB: number; dumpMs: number; verifyMs: number; storedMB: number }[] = [];
    for (let i = 1; i <= CYCLES; i++) {
      const dumped = await step(['dump', '--to', to, '--json'], { ...env, DATABASE_URL: dbUrl(db) });
      assert.equal(dumped.code, 0, `cycle ${i} dump: ${dumped.stderr}`);
      const manifest = JSON.parse(dumped.stdout);
      const objectKey = manifest.backupUri.replace(`${to}/`, '');
      const verified = await step(['verify', '--from', to, '--backup', objectKey, '--level', 'schema'], env);
      assert.equal(verified.code, 0, `cycle ${i} verify: ${verified.stderr}`);
      assert.ok(dumped.maxRssKiB > 0 && verified.maxRssKiB > 0, 'peak RSS reported');
      assert.deepEqual(await markedProcesses(mark), [], `cycle ${i}: no pg_dump, zstd, pg_restore or postgres left running`);
      assert.deepEqual(await readdir(tmp), [], `cycle ${i}: no temp dir left (pg-backup-*)`);
      assert.deepEqual(await openMultipartUploads(to), [], `cycle ${i}: no open multipart upload`);
      await emptyLocation(to);
      const row = { cycle: i, dumpRssMiB: +(dumped.maxRssKiB / 1024).toFixed(1), verifyRssMiB: +(verified.maxRssKiB / 1024).toFixed(1), dumpMs: dumped.durationMs, verifyMs: verified.durationMs, storedMB: +(manifest.object.sizeBytes / 1e6).toFixed(1) };
      cycles.push(row);
      console.log(`soak cycle ${String(i).padStart(3)}: dump ${row.dumpRssMiB} MiB peak RSS, ${(row.dumpMs / 1000).toFixed(1)} s; verify ${row.verifyRssMiB} MiB, ${(row.verifyMs / 1000).toFixed(1)} s; ${row.storedMB} MB stored`);
    }
    const third = Math.ceil(CYCLES / 3);
    const summary: Record<string, number> = {};
    for (const key of ['dumpRssMiB', 'verifyRssMiB'] as const) {
      const first = median(cycles.slice(0, third).map((c) => c[key]));
      const last = median(cycles.slice(-third).map((c) => c[key]));
      summary[`${key}FirstThirdMedian`] = first;
      summary[`${key}LastThirdMedian`] = last;
      summary[`${key}Max`] = Math.max(...cycles.map((c) => c[key]));
      assert.ok(last <= first * RSS_TOLERANCE, `${key}: last third's median ${last} MiB > first third's ${first} MiB × ${RSS_TOLERANCE}`);
    }
    summary.dumpSecondsMedian = median(cycles.map((c) => c.dumpMs)) / 1000;
    summary.verifySecondsMedian = median(cycles.map((c) => c.verifyMs)) / 1000;
    console.log(`soak summary: ${JSON.stringify(summary)}`);
    assert.deepEqual(await openMultipartUploads(to), []);
    assert.deepEqual(await markedProcesses(mark), []);
    assert.deepEqual(await readdir(tmp), []);
    await recordFault({
      faultId: 'soak',
      fault: `soak: ${CYCLES} dump → verify (schema level) cycles in a row, each CLI run a fresh process`,
      outcome: `peak RSS flat (last third's median within ×${RSS_TOLERANCE} of the first third's); no process, temp dir or multipart upload left after any cycle`,
      exit: 0,
      left: 'no open multipart upload; no pg-backup-* temp dir; no pg_dump, zstd, pg_restore or postgres process',
      file: import.meta.url,
      figures: { cycles: CYCLES, summary, perCycle: cycles },
    });
  });
});
