// Read-back as parallel ranged GETs against Ceph RGW (src/storage/ranged.ts, S3Storage.get):
// an object of many ranges (PG_BACKUP_S3_READ_RANGE_SIZE shrinks them to 64 KiB) verifies and
// drills intact; a byte flipped inside a middle range is a sha256 mismatch; an object replaced
// while it is read fails with one line ("changed while it was being read", exit 1 for verify);
// SIGTERM in the middle of the ranges leaves no process and no temp directory.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { before, describe, it } from 'node:test';
import { downloadArchive, readbackProblems, streamBackup } from '../../src/backup/readback.ts';
import type { StoredPart } from '../../src/backup/parts.ts';
import { resolveBackup } from '../../src/backup/catalog.ts';
import { S3Storage } from '../../src/storage/s3/s3.ts';
import { addBigTable, cli, createDatabase, dumpWithCli, root, s3Env, s3Get, s3Location, s3Put } from '../helpers.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';

/** 64 KiB ranges: a ~3 MB object is read as ~50 of them. */
const SMALL_RANGES = { PG_BACKUP_S3_READ_RANGE_SIZE: '64KiB', PG_BACKUP_S3_READ_CONCURRENCY: '4' };

let db: string;
let to: string;
let objectKey: string;
let bytes: Buffer;

function storageOf(location: string): S3Storage {
  const [bucket, ...prefix] = location.replace('s3://', '').split('/');
  const env = s3Env();
  return new S3Storage(bucket!, prefix.join('/'), { endpoint: env.AWS_ENDPOINT_URL_S3, credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY } });
}

/** A copy of the backup under a fresh prefix (each case damages or replaces its own). */
async function copyOfBackup(label: string): Promise<string> {
  const copy = s3Location(label);
  const { manifestKey } = await resolveBackup(storageOf(to), objectKey);
  await s3Put(copy, manifestKey, await s3Get(to, manifestKey));
  await s3Put(copy, objectKey, bytes);
  return copy;
}

before(async () => {
  db = await createDatabase('ranges', false);
  await addBigTable(db, 4);
  to = s3Location('ranges');
  ({ objectKey } = await dumpWithCli(db, to));
  bytes = await s3Get(to, objectKey);
  assert.ok(bytes.length > 20 * 64 * 1024, `the object spans many 64 KiB ranges (${bytes.length} bytes)`);
}, { timeout: 120_000 });

describe('read-back in ranges (Ceph RGW)', () => {
  it('verify (archive) and drill read an object of many ranges intact', { timeout: 180_000 }, async () => {
    const verify = await cli(['verify', '--from', to, '--backup', objectKey, '--json'], SMALL_RANGES);
    assert.equal(verify.code, 0, verify.stderr);
    const result = JSON.parse(verify.stdout);
    assert.equal(result.ok, true);
    assert.equal(result.sizeBytes, bytes.length);

    const checksum = await cli(['verify', '--from', to, '--backup', objectKey, '--level', 'checksum', '--json'], SMALL_RANGES);
    assert.equal(checksum.code, 0, checksum.stderr);

    const tmp = await mkdtemp(path.join(os.tmpdir(), 'pgb-ranges-'));
    await chmod(tmp, 0o777);
    try {
      const drill = await cli(['drill', '--from', to, '--backup', objectKey, '--json'], { ...SMALL_RANGES, TMPDIR: tmp, PG_BACKUP_WORK_DIR: tmp });
      assert.equal(drill.code, 0, drill.stderr);
      assert.equal(JSON.parse(drill.stdout).ok, true);
      assert.deepEqual(await readdir(tmp), [], 'the download directory is removed');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('the drill-style download (downloadArchive) of many ranges writes the archive pg_restore reads', async () => {
    process.env.PG_BACKUP_S3_READ_RANGE_SIZE = '64KiB'; // read when the storage opens
    const storage = storageOf(to);
    delete process.env.PG_BACKUP_S3_READ_RANGE_SIZE;
    const backup = await resolveBackup(storage, objectKey);
    const scratch = await mkdtemp(path.join(os.tmpdir(), 'pgb-ranges-dl-'));
    try {
      const local = await downloadArchive(storage, backup, scratch);
      assert.deepEqual(local.problems, []);
      assert.equal(local.sizeBytes, bytes.length);
      assert.equal((await stat(local.path)).size, backup.manifest.archiveSizeBytes, 'the decompressed archive has the size the manifest records');
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });

  it('a byte flipped in a middle range is a sha256 mismatch (exit 1)', { timeout: 60_000 }, async () => {
    const copy = await copyOfBackup('ranges-flip');
    const damaged = Buffer.from(bytes);
    const at = Math.floor(damaged.length / 2) + 1234; // inside a middle 64 KiB range
    damaged[at]! ^= 0xff;
    await s3Put(copy, objectKey, damaged);
    const r = await cli(['verify', '--from', copy, '--backup', objectKey], SMALL_RANGES);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /verify failed: sha256 mismatch: the object hashes to [0-9a-f]{64}, the manifest says [0-9a-f]{64}/);
    assert.doesNotMatch(r.stderr, /EPIPE|killed by SIG|stopped before the end|premature close/i);
  });

  it('an object replaced while it is read fails with one line (If-Match), nothing reaches the sink as complete', async () => {
    const copy = await copyOfBackup('ranges-replaced');
    const storage = storageOf(copy);
    const backup = await resolveBackup(storage, objectKey);
    const part: StoredPart = { key: backup.objectKey, compression: backup.manifest.compression, sizeBytes: backup.manifest.object.sizeBytes, sha256: backup.manifest.object.sha256 };
    let replaced = false;
    let ended = false;
    // The sink replaces the object on its first write and only then takes more: every range
    // after the first is asked for after the replacement.
    const sink = () => {
      const stream = new Writable({
        write(_chunk, _enc, callback) {
          if (replaced) return callback();
          replaced = true;
          s3Put(copy, objectKey, Buffer.concat([bytes, Buffer.from('x')])).then(() => callback(), callback);
        },
        final(callback) {
          ended = true;
          callback();
        },
      });
      return { stream, done: new Promise<void>((resolve, reject) => stream.on('finish', resolve).on('close', () => (ended ? resolve() : reject(new Error('stopped'))))) };
    };
    const outcome = await streamBackup(storage, part, sink, undefined, undefined, { rangeBytes: 64 * 1024, concurrency: 1 });
    assert.equal(replaced, true);
    assert.equal(ended, false, 'the sink never saw the end of its input');
    const problems = readbackProblems(outcome, part);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0]!, /^download failed: s3:\/\/\S+ changed while it was being read \(its ETag no longer matches "?[0-9a-f-]+"?\): another writer replaced the object; read it again$/);
  });

  it('SIGTERM in the middle of the ranges: exit 143, no zstd/pg_restore left, no temp dir', { timeout: 60_000 }, async () => {
    const { mark, env: markEnv } = leftoverMark();
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'pgb-ranges-sig-'));
    await chmod(tmp, 0o777);
    // 64 KiB ranges, one at a time: the object takes many round trips, the signal lands among them.
    const child = spawn(process.execPath, [path.join(root, 'bin/pg-backup.js'), 'verify', '--from', to, '--backup', objectKey], {
      env: { ...process.env, ...s3Env(), ...markEnv, TMPDIR: tmp, PG_BACKUP_S3_READ_RANGE_SIZE: '64KiB', PG_BACKUP_S3_READ_CONCURRENCY: '1' } as NodeJS.ProcessEnv,
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    // zstd starts once the first range answered: the read is then under way.
    let sent = false;
    while (!sent) {
      if ((await markedProcesses(mark)).some((p) => / zstd /.test(`${p} `))) {
        child.kill('SIGTERM');
        sent = true;
      } else if (child.exitCode !== null) break;
      else await new Promise((r) => setTimeout(r, 10));
    }
    const code = await exited;
    assert.ok(sent, `the verify ran long enough to be interrupted: ${stderr}`);
    assert.equal(code, 143, stderr);
    assert.deepEqual(await markedProcesses(mark), [], 'no zstd or pg_restore left');
    assert.deepEqual(await readdir(tmp), [], 'nothing left in TMPDIR');
    await rm(tmp, { recursive: true, force: true });
  });
});
