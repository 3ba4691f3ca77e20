// Finds processes a test's CLI run left behind: the run gets a random marker in its environment
// (PGB_LEFTOVER_MARK), which every child inherits — pg_dump, zstd, pg_restore, and the postgres
// of a throwaway cluster — so a scan of /proc/<pid>/environ finds them even after they were
// re-parented to init.
import { randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';

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
