// Finds what tests leave behind.
// Processes: a test's CLI run gets a random marker in its environment (PGB_LEFTOVER_MARK), which
// every child inherits — pg_dump, zstd, pg_restore, and the postgres of a throwaway cluster — so
// a scan of /proc/<pid>/environ finds them even after they were re-parented to init.
// Temp directories: scripts/test.ts gives each test file a temp directory of its own
// (test/infra/test-tmpdir.ts) and lists what is left in them after the run (testTmpLeftovers).
import { randomBytes } from 'node:crypto';
import { lstat, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';

/** A fresh marker and the environment variable that carries it into a run. */
export function leftoverMark(): { mark: string; env: Record<string, string> } {
  const mark = randomBytes(8).toString('hex');
  return { mark, env: { PGB_LEFTOVER_MARK: mark } };
}

/** `pid command line` of every live process whose environment holds the marker (Linux /proc). */
export async function markedProcesses(mark: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const environ = await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => '');
    if (environ.split('\0').includes(`PGB_LEFTOVER_MARK=${mark}`)) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '');
      found.push(`${pid} ${cmd.replace(/\0/g, ' ').trim()}`);
    }
  }
  return found;
}

/** A directory (or file) a test left in its temp directory, with the test file that made it. */
export interface TmpLeftover {
  /** The test file (`test/integration/dump.test.ts`), from its temp directory's name. */
  file: string;
  /** Full path of what was left. */
  path: string;
  /** Its size in bytes (files under it, symlinks not followed). */
  bytes: number;
}

/** Bytes under `p` (lstat sizes; unreadable entries count 0). */
async function sizeOf(p: string): Promise<number> {
  const s = await lstat(p).catch(() => undefined);
  if (!s) return 0;
  if (!s.isDirectory()) return s.size;
  let total = 0;
  for (const e of await readdir(p).catch(() => [] as string[])) total += await sizeOf(path.join(p, e));
  return total;
}

/**
 * What the tests left under `tmpRoot`, the run's temp root in which test/infra/test-tmpdir.ts
 * gave each test file its own directory (named in its `.pgb-test-file`): every other entry still
 * in one of those, attributed to its file. Entries directly under `tmpRoot` (a process that ran
 * without the preload) are attributed to `(unknown test file)`.
 */
export async function testTmpLeftovers(tmpRoot: string): Promise<TmpLeftover[]> {
  const found: TmpLeftover[] = [];
  for (const entry of (await readdir(tmpRoot, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = path.join(tmpRoot, entry.name);
    const file = entry.isDirectory() ? await readFile(path.join(full, '.pgb-test-file'), 'utf8').catch(() => undefined) : undefined;
    if (file === undefined) {
      found.push({ file: '(unknown test file)', path: full, bytes: await sizeOf(full) });
      continue;
    }
    // node-compile-cache: Node's own module compile cache, which npm and tsc (run by some tests)
    // enable in the temp dir — a cache of those tools, not a directory a test made.
    for (const inner of (await readdir(full)).filter((n) => n !== '.pgb-test-file' && n !== 'node-compile-cache').sort()) {
      found.push({ file, path: path.join(full, inner), bytes: await sizeOf(path.join(full, inner)) });
    }
  }
  return found;
}
