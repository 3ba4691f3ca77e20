// Which test files hold fault tests, and the fault ids their sources declare. Shared by
// scripts/reliability.ts (what to run, what must have recorded) and the doc check.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { root } from './helpers.ts';

/** Test files (relative to the repository) whose tests record faults; `npm run reliability` runs these. */
export const FAULT_TEST_FILES = [
  'test/unit/bad-input.property.test.ts',
  'test/integration/dump.test.ts',
  'test/integration/dump-options.test.ts',
  'test/integration/pg-faults.test.ts',
  'test/integration/network-faults.test.ts',
  'test/integration/least-privilege.test.ts',
  'test/integration/faults.test.ts',
  'test/integration/local-disk.test.ts',
  'test/integration/verify-drill.test.ts',
  'test/integration/corruption.test.ts',
  'test/integration/drill-signals.test.ts',
  'test/integration/protection.test.ts',
  'test/integration/restore-safety.test.ts',
  'test/integration/soak.test.ts',
  'test/integration/blackhole.test.ts',
  'test/integration/cluster-private.test.ts',
];

/** Every `*.test.ts` under test/, relative to the repository. */
export function allTestFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.name.endsWith('.test.ts')) out.push(path.join(dir, e.name));
    }
  };
  walk('test');
  return out.sort();
}

/**
 * The fault ids declared in the test sources (`faultId: '<id>'` string literals), in file
 * order of {@link FAULT_TEST_FILES} then source order.
 * @throws Error when an id is declared twice, or declared in a file `npm run reliability` does not run.
 */
export function faultIdsInSources(): string[] {
  const ids: string[] = [];
  for (const file of allTestFiles()) {
    const found = [...readFileSync(path.join(root, file), 'utf8').matchAll(/faultId: '([a-z0-9-]+)'/g)].map((m) => m[1]!);
    if (found.length && !FAULT_TEST_FILES.includes(file)) throw new Error(`${file} declares fault ids (${found.join(', ')}) but is not in FAULT_TEST_FILES`);
  }
  for (const file of FAULT_TEST_FILES) {
    for (const m of readFileSync(path.join(root, file), 'utf8').matchAll(/faultId: '([a-z0-9-]+)'/g)) {
      if (ids.includes(m[1]!)) throw new Error(`fault id ${m[1]} is declared twice`);
      ids.push(m[1]!);
    }
  }
  return ids;
}
