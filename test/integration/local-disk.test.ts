import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { addBigTable, createDatabase, dbUrl, root, run, s3Env, s3Keys, s3Location } from '../helpers.ts';
import { tempDir } from '../infra/temp.ts';
import { leftBehind, recordFault } from '../reliability.ts';

/** Syscalls that create, write or move a file (or make a directory, link or node). */
const TRACED = ['open', 'openat', 'openat2', 'creat', 'rename', 'renameat', 'renameat2', 'mkdir', 'mkdirat', 'link', 'linkat', 'symlink', 'symlinkat', 'mknod', 'mknodat', 'truncate', 'execve'];

/**
 * The local writes in an `strace -f` log: every open with a write/create/truncate flag, and
 * every creat/rename/mkdir/link/symlink/mknod/truncate, whose path is not under /dev or /proc
 * (attempts count too, failed or not: the dump must not even try — but for the compile cache's
 * existing directory, below). Relative paths count.
 */
function localWrites(trace: string): string[] {
  const out: string[] = [];
  for (const line of trace.split('\n')) {
    const m = /^\d+\s+(\w+)\((.*)$/.exec(line);
    if (!m) continue;
    const [, call, rest] = m as unknown as [string, string, string];
    if (call === 'execve') continue;
    const writing = /^open/.test(call) ? /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_TMPFILE/.test(rest) : true;
    if (!writing) continue;
    // The one exception: Node's mkdir of the compile cache's existing directory, which the
    // launcher allows dump only when the build warmed the cache (every lookup then hits); it
    // fails with EEXIST and writes nothing.
    if (/^mkdir/.test(call) && rest.includes(`${root}/dist/compile-cache/`) && /= -1 EEXIST/.test(rest)) continue;
    const paths = [...rest.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((p) => p[1]!);
    if (paths.some((p) => !/^\/(dev|proc)\//.test(p))) out.push(line);
  }
  return out;
}

/** Runs `pg-backup dump` under `strace -f` with an empty TMPDIR and HOME; returns its exit code, the local writes and the programs it ran. */
async function tracedDump(db: string, to: string, args: string[]): Promise<{ code: number; stderr: string; writes: string[]; programs: string[]; tmp: string[]; home: string[] }> {
  const scratch = await tempDir('pgb-strace-');
  const tmp = await mkdtemp(path.join(scratch, 'tmp-'));
  const home = await mkdtemp(path.join(scratch, 'home-'));
  const log = path.join(scratch, 'trace');
  // --seccomp-bpf stops only at the traced calls, so the dump runs at nearly full speed.
  const r = await run('strace', ['-f', '--seccomp-bpf', '-qq', '-e', `trace=${TRACED.join(',')}`, '-o', log, process.execPath, path.join(root, 'bin/pg-backup.js'), 'dump', '--to', to, ...args], {
    env: { ...s3Env(), DATABASE_URL: dbUrl(db), TMPDIR: tmp, HOME: home, PG_BACKUP_WORK_DIR: undefined },
  });
  const trace = await readFile(log, 'utf8');
  const programs = [...trace.matchAll(/execve\("([^"]+)"/g)].map((m) => path.basename(m[1]!));
  return { code: r.code, stderr: r.stderr, writes: localWrites(trace), programs, tmp: await readdir(tmp), home: await readdir(home) };
}

describe('local disk', () => {
  it('the streaming dump (custom and plain × zstd, gzip, none) opens no local file for writing, creates and renames none; TMPDIR and HOME stay empty', { timeout: 300_000 }, async () => {
    const db = await createDatabase('nodisk');
    await addBigTable(db, 12); // more than one 5 MiB part: the multipart path is traced too
    const checked: string[] = [];
    for (const format of ['custom', 'plain']) {
      for (const compression of ['zstd', 'gzip', 'none']) {
        const to = s3Location('nodisk');
        const r = await tracedDump(db, to, ['--format', format, '--compression', compression]);
        const what = `${format} × ${compression}`;
        assert.equal(r.code, 0, `${what}: ${r.stderr}`);
        assert.ok(r.programs.includes('pg_dump'), `${what}: pg_dump ran under the trace (${r.programs.join(', ')})`);
        if (compression === 'zstd') assert.ok(r.programs.includes('zstd'), `${what}: zstd ran under the trace`);
        assert.deepEqual(r.writes, [], `${what}: no local write`);
        assert.deepEqual(r.tmp, [], `${what}: TMPDIR stays empty`);
        assert.deepEqual(r.home, [], `${what}: HOME stays empty`);
        assert.equal((await s3Keys(to)).filter((k) => k.endsWith('.manifest.json') && !k.includes('/@globals/')).length, 1, `${what}: a complete backup was written`);
        checked.push(`${what}: ${await leftBehind(to)}`);
      }
    }
    await recordFault({ faultId: 'disk-no-local-file', fault: 'local disk: every streaming dump (custom and plain × zstd, gzip, none) traced with `strace -f`', outcome: 'no file opened for writing, created, renamed or linked outside /dev and /proc (pg_dump and zstd included); TMPDIR and HOME stay empty', exit: 0, left: `per run: ${checked[0]!.split(': ').slice(1).join(': ')}`, file: import.meta.url, figures: { runs: checked } });
  });

  it('the check sees local writes: a dump to a file:// bucket is flagged', { timeout: 120_000 }, async () => {
    const db = await createDatabase('diskctl', false);
    const bucket = await tempDir('pgb-bucket-');
    const r = await tracedDump(db, `file://${bucket}`, []);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.writes.some((l) => l.includes(bucket) && /O_CREAT/.test(l)), `the file bucket's writes are seen:\n${r.writes.join('\n')}`);
    assert.ok(r.writes.some((l) => /^\d+\s+(rename|link)/.test(l)), 'the move into place (rename, or link with no-overwrite) is seen');
  });
});
