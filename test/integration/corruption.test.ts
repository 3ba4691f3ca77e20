// Damage deep inside multi-MB backups: verify, restore and drill must fail with exit 1 and the
// first real reason, whatever the compression, position or kind of damage, and leave no process
// and no temp directory behind. Objects are ~10 MB (zstd) to ~25 MB (none) of incompressible
// md5 text, far more than a pipe buffer holds, so a stage that stops reading cannot hide behind
// buffering. One backup per compression is dumped once; each case damages a copy (file://
// storage makes copies cheap); one case runs against Ceph RGW.
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { before, describe, it } from 'node:test';
import { cli, createDatabase, dumpWithCli, s3Get, s3Keys, s3Location, s3Put, sql, dbUrl, type RunResult } from '../helpers.ts';
import { tempDir, tempLocation } from '../infra/temp.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';
import { lastLine, leftBehind, recordFault } from '../reliability.ts';

type Kind = 'zstd' | 'gzip' | 'none' | 'age';
type Damage = 'flip' | 'cut';

interface StoredBackup {
  to: string;
  objectKey: string;
  manifestKey: string;
  manifestText: string;
  bytes: Buffer;
}

/** Rows per table (4 tables): ~10 MB as zstd, ~25 MB uncompressed. */
const ROWS = 120_000;
const backups = new Map<Kind, StoredBackup>();
let db: string;
let identityFile: string;

/** The stderr lines that would mean a consequence was reported instead of the cause. */
const CONSEQUENCE = /EPIPE|was cancelled|killed by SIG|stopped before the end|premature close|ERR_STREAM/i;

/** `bytes` damaged at `at` (0–1): two bytes flipped, or everything from there on cut off. */
function damaged(bytes: Buffer, damage: Damage, at: number): Buffer {
  const i = Math.floor(bytes.length * at);
  if (damage === 'cut') return Buffer.from(bytes.subarray(0, i));
  const out = Buffer.from(bytes);
  out[i]! ^= 0xff;
  out[i + 1]! ^= 0xff;
  return out;
}

/** A fresh file:// location holding `kind`'s backup with its object damaged. */
async function damagedCopy(kind: Kind, damage: Damage, at: number): Promise<{ to: string; objectKey: string }> {
  const b = backups.get(kind)!;
  const to = await tempLocation();
  const dir = fileURLToPath(to);
  await mkdir(path.dirname(path.join(dir, b.objectKey)), { recursive: true });
  await writeFile(path.join(dir, b.manifestKey), b.manifestText);
  await writeFile(path.join(dir, b.objectKey), damaged(b.bytes, damage, at));
  return { to, objectKey: b.objectKey };
}

interface Observed extends RunResult {
  ms: number;
  leftProcesses: string[];
  leftDirs: string[];
}

/**
 * Runs the CLI with a leftover marker and its own TMPDIR (and work dir), then lists the marked
 * processes still alive and what the run left in its temp dir.
 */
async function observe(args: string[], kind: Kind, env: Record<string, string> = {}): Promise<Observed> {
  const { mark, env: markEnv } = leftoverMark();
  const tmp = await tempDir('pgb-deep-tmp-');
  await chmod(tmp, 0o777); // the throwaway cluster runs as postgres when the tests run as root
  const extra = kind === 'age' ? ['--age-identity-file', identityFile] : [];
  const started = Date.now();
  const r = await cli([...args, ...extra], { ...markEnv, TMPDIR: tmp, PG_BACKUP_WORK_DIR: tmp, ...env });
  const ms = Date.now() - started;
  const leftProcesses = await markedProcesses(mark);
  const leftDirs = await readdir(tmp);
  await rm(tmp, { recursive: true, force: true });
  return { ...r, ms, leftProcesses, leftDirs };
}

/** The assertions every damaged run must pass: exit 1, one reason line, no consequence noise, nothing left. */
function assertCleanFailure(r: Observed, prefix: string, reason: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  const last = lastLine(r.stderr);
  assert.match(last, new RegExp(`^${prefix}`), r.stderr);
  assert.match(last, reason, r.stderr);
  assert.doesNotMatch(r.stderr, CONSEQUENCE, 'only the first real reason is reported');
  assert.deepEqual(r.leftProcesses, [], 'no zstd, pg_restore, psql or postgres process left');
  assert.deepEqual(r.leftDirs, [], 'no pg-backup-* directory left in TMPDIR');
}

/** Sessions still connected to `database` once the server had 10 s to notice a killed client. */
async function sessionsLeft(database: string): Promise<number> {
  for (let i = 0; ; i++) {
    const [row] = await sql<{ n: number }>('postgres', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = '${database}'`);
    if (row!.n === 0 || i === 50) return row!.n;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** How a failed restore begins: rolled back, the target as it was, the archive to blame (src/commands/restore.ts). */
const RESTORE_ROLLED_BACK = 'pg-backup: restore failed and was rolled back, \\S+ is as it was \\(cause: the backup archive\\): ';
const FLIP_REASON = /sha256 mismatch: the object hashes to [0-9a-f]{64}, the manifest says [0-9a-f]{64}/;
const CUT_REASON = /size mismatch: the object has \d+ bytes, the manifest says \d+/;

before(async () => {
  db = await createDatabase('deep', false);
  await sql(db, ['t1', 't2', 't3', 't4'].map((t) => `CREATE TABLE ${t} AS SELECT g AS id, md5(random()::text) AS payload FROM generate_series(1, ${ROWS}) g;`).join('\n'));
  const identity = await generateX25519Identity();
  identityFile = path.join(await tempDir('pgb-deep-key-'), 'age.key');
  await writeFile(identityFile, `${identity}\n`, { mode: 0o600 });
  const recipient = await identityToRecipient(identity);
  const flags: Record<Kind, string[]> = {
    zstd: ['--compression', 'zstd'],
    gzip: ['--compression', 'gzip'],
    none: ['--compression', 'none'],
    age: ['--compression', 'zstd', '--age-recipient', recipient],
  };
  for (const kind of ['zstd', 'gzip', 'none', 'age'] as const) {
    const to = await tempLocation();
    const { objectKey, manifestKey } = await dumpWithCli(db, to, flags[kind]);
    const dir = fileURLToPath(to);
    backups.set(kind, { to, objectKey, manifestKey, manifestText: await readFile(path.join(dir, manifestKey), 'utf8'), bytes: await readFile(path.join(dir, objectKey)) });
  }
  assert.ok(backups.get('zstd')!.bytes.length > 8e6, `the zstd object is multi-MB (${backups.get('zstd')!.bytes.length} bytes)`);
}, { timeout: 240_000 });

describe('verify on damage deep inside a multi-MB backup', () => {
  const cases = [
    { faultId: 'deep-verify-zstd-flip', kind: 'zstd', damage: 'flip' },
    { faultId: 'deep-verify-zstd-cut', kind: 'zstd', damage: 'cut' },
    { faultId: 'deep-verify-gzip-flip', kind: 'gzip', damage: 'flip' },
    { faultId: 'deep-verify-gzip-cut', kind: 'gzip', damage: 'cut' },
    { faultId: 'deep-verify-none-flip', kind: 'none', damage: 'flip' },
    { faultId: 'deep-verify-none-cut', kind: 'none', damage: 'cut' },
    { faultId: 'deep-verify-age-flip', kind: 'age', damage: 'flip' },
    { faultId: 'deep-verify-age-cut', kind: 'age', damage: 'cut' },
  ] as const;
  for (const { faultId, kind, damage } of cases) {
    it(`${kind}: ${damage === 'flip' ? 'two flipped bytes' : 'a cut'} at 10 %, 50 % and 90 %: exit 1 with the reason, nothing left`, { timeout: 120_000 }, async () => {
      const runs: Observed[] = [];
      for (const at of [0.1, 0.5, 0.9]) {
        const { to, objectKey } = await damagedCopy(kind, damage, at);
        const r = await observe(['verify', '--from', to, '--backup', objectKey], kind);
        assertCleanFailure(r, 'verify failed: ', damage === 'flip' ? FLIP_REASON : CUT_REASON);
        await rm(fileURLToPath(to), { recursive: true, force: true });
        runs.push(r);
      }
      const size = (backups.get(kind)!.bytes.length / 1e6).toFixed(0);
      await recordFault({
        faultId,
        fault: `verify: ${kind === 'age' ? 'age-encrypted zstd' : kind} object (${size} MB), ${damage === 'flip' ? 'two bytes flipped' : 'cut short'} at 10 %, 50 % and 90 %`,
        outcome: 'fails with the first real reason (the checksum verdict); no zstd/pg_restore left, no temp dir',
        exit: runs[2]!.code,
        left: 'nothing (no process, no temp dir); the bucket unchanged',
        file: import.meta.url,
        message: lastLine(runs[2]!.stderr),
        durationMs: Math.max(...runs.map((x) => x.ms)),
      });
    });
  }
});

describe('restore of a damaged multi-MB backup into an empty database', () => {
  const cases = [
    { faultId: 'deep-restore-zstd', kind: 'zstd' },
    { faultId: 'deep-restore-gzip', kind: 'gzip' },
    { faultId: 'deep-restore-none', kind: 'none' },
    { faultId: 'deep-restore-age', kind: 'age' },
  ] as const;
  for (const { faultId, kind } of cases) {
    it(`${kind}: a flip at 90 % and a cut at 50 % fail with exit 1 instead of hanging; pg_restore ends`, { timeout: 120_000 }, async () => {
      const runs: Observed[] = [];
      for (const [damage, at] of [['flip', 0.9], ['cut', 0.5]] as const) {
        const target = await createDatabase(`deep_target_${kind}`, false);
        const { to, objectKey } = await damagedCopy(kind, damage, at);
        const r = await observe(['restore', '--from', to, '--backup', objectKey, '--target-url', dbUrl(target)], kind);
        assertCleanFailure(r, RESTORE_ROLLED_BACK, damage === 'flip' ? FLIP_REASON : CUT_REASON);
        assert.equal(await sessionsLeft(target), 0, 'no session left in the target (no backend waiting in COPY … FROM stdin)');
        await rm(fileURLToPath(to), { recursive: true, force: true });
        runs.push(r);
      }
      await recordFault({
        faultId,
        fault: `restore into an empty database: ${kind === 'age' ? 'age-encrypted zstd' : kind} object, two bytes flipped at 90 %; cut at 50 %`,
        outcome: 'fails with the reason; pg_restore killed before its input closed, no session left in the target',
        exit: runs[0]!.code,
        left: 'no process, no temp dir, no session in the target',
        file: import.meta.url,
        message: lastLine(runs[0]!.stderr),
        durationMs: Math.max(...runs.map((x) => x.ms)),
      });
    });
  }
});

describe('drill of a damaged multi-MB backup', () => {
  const cases = [
    { faultId: 'deep-drill-zstd-flip', kind: 'zstd', damage: 'flip', at: 0.9 },
    { faultId: 'deep-drill-gzip-cut', kind: 'gzip', damage: 'cut', at: 0.5 },
    { faultId: 'deep-drill-none-flip', kind: 'none', damage: 'flip', at: 0.1 },
    { faultId: 'deep-drill-age-flip', kind: 'age', damage: 'flip', at: 0.5 },
  ] as const;
  for (const { faultId, kind, damage, at } of cases) {
    it(`${kind}: ${damage} at ${at * 100} %: verdict written and archived, cluster and download removed`, { timeout: 120_000 }, async () => {
      const { to, objectKey } = await damagedCopy(kind, damage, at);
      const r = await observe(['drill', '--from', to, '--backup', objectKey], kind);
      assertCleanFailure(r, 'drill failed: ', damage === 'flip' ? FLIP_REASON : CUT_REASON);
      assert.match(r.stderr, /throwaway cluster removed/);
      assert.doesNotMatch(r.stderr, /restore drill FAILED: /, 'the reason is said once, in the last line (the drill log keeps the verdict line)');
      assert.match(r.stderr, /^drill log: file:\/\/\S+\.log$/m, 'the drill says where its log went');
      const left = await leftBehind(to);
      assert.match(left, /the drill log \(\.json \+ \.jsonl \+ \.log\)/, 'the drill log and report are archived');
      await rm(fileURLToPath(to), { recursive: true, force: true });
      await recordFault({
        faultId,
        fault: `drill: ${kind === 'age' ? 'age-encrypted zstd' : kind} object, ${damage === 'flip' ? 'two bytes flipped' : 'cut short'} at ${at * 100} %`,
        outcome: 'verdict FAILED with the reason, drill log and report archived; throwaway cluster and download removed',
        exit: r.code,
        left: `${left}; no process, no temp dir`,
        file: import.meta.url,
        message: lastLine(r.stderr),
        durationMs: r.ms,
      });
    });
  }
});

describe('damage deep inside a backup on S3 (Ceph RGW)', () => {
  it('zstd, two bytes flipped at 90 %: verify, restore and drill fail with the reason and leave nothing', { timeout: 180_000 }, async () => {
    const to = s3Location('deep');
    const { objectKey } = await dumpWithCli(db, to);
    await s3Put(to, objectKey, damaged(await s3Get(to, objectKey), 'flip', 0.9));
    const verify = await observe(['verify', '--from', to, '--backup', objectKey], 'zstd');
    assertCleanFailure(verify, 'verify failed: ', FLIP_REASON);
    const target = await createDatabase('deep_s3_target', false);
    const restore = await observe(['restore', '--from', to, '--backup', objectKey, '--target-url', dbUrl(target)], 'zstd');
    assertCleanFailure(restore, RESTORE_ROLLED_BACK, FLIP_REASON);
    const drill = await observe(['drill', '--from', to, '--backup', objectKey], 'zstd');
    assertCleanFailure(drill, 'drill failed: ', FLIP_REASON);
    const keys = await s3Keys(to);
    assert.ok(keys.some((k) => k.startsWith('drills/') && k.endsWith('.json')), `drill report archived: ${keys.join(', ')}`);
    await recordFault({
      faultId: 'deep-s3-zstd-flip',
      fault: 'S3: zstd object, two bytes flipped at 90 % (verify, restore, drill)',
      outcome: 'each fails with the reason; drill log archived; no process, no temp dir',
      exit: verify.code,
      left: `${await leftBehind(to)}; no process, no temp dir`,
      file: import.meta.url,
      message: lastLine(verify.stderr),
      durationMs: Math.max(verify.ms, restore.ms, drill.ms),
    });
  });
});
