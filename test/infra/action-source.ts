// Runs an action's source entry the way the runner runs its bundle (shared by the tests that
// check an action's outputs and job summary before the integrator rebuilds the bundles).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseOutputFile, root, run, type RunResult } from '../helpers.ts';

/**
 * Runs `src/github/<name>-action.ts` with `inputs` as `INPUT_<NAME>` and `env`; outputs and
 * summary through `GITHUB_OUTPUT` / `GITHUB_STEP_SUMMARY` files, read back and removed.
 * (The committed bundles are rebuilt by the integrator after merging.)
 */
export async function runActionSource(name: 'dump' | 'drill' | 'verify' | 'prune', inputs: Record<string, string>, env: Record<string, string | undefined>): Promise<RunResult & { outputs: Record<string, string>; summary: string }> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'pgb-action-'));
  try {
    const outputFile = path.join(work, 'output');
    const summaryFile = path.join(work, 'summary');
    await writeFile(outputFile, '');
    await writeFile(summaryFile, '');
    const inputEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries(inputs)) inputEnv[`INPUT_${k.toUpperCase()}`] = v;
    const r = await run(process.execPath, [path.join(root, 'src', 'github', `${name}-action.ts`)], { env: { GITHUB_OUTPUT: outputFile, GITHUB_STEP_SUMMARY: summaryFile, ...inputEnv, ...env } });
    return { ...r, outputs: parseOutputFile(await readFile(outputFile, 'utf8')), summary: await readFile(summaryFile, 'utf8') };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
