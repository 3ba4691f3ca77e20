// Preloaded into every test file's process by scripts/test.ts (`node --import`): when
// PGB_TEST_TMP_ROOT is set, the file gets a temp directory of its own under it, named after the
// file (`test__integration__dump.test.ts-XXXXXX`), as its TMPDIR, so os.tmpdir() — and every CLI
// run it starts, which inherits TMPDIR — makes its directories there. After the run,
// scripts/test.ts lists what is left in each (test/infra/leftovers.ts `testTmpLeftovers`) and
// fails naming the file. Only in the test runner's children (NODE_TEST_CONTEXT), once per process.
import { chmodSync, mkdtempSync } from 'node:fs';
import path from 'node:path';

const tmpRoot = process.env.PGB_TEST_TMP_ROOT;
const file = process.argv[1];
if (tmpRoot && file && process.env.NODE_TEST_CONTEXT && !process.env.PGB_TEST_FILE_TMP) {
  const name = path.relative(process.cwd(), file).replace(/[/\\]/g, '__');
  const dir = mkdtempSync(path.join(tmpRoot, `${name}-`));
  chmodSync(dir, 0o1777); // like /tmp: throwaway clusters run as postgres when the tests run as root
  process.env.TMPDIR = dir;
  process.env.PGB_TEST_FILE_TMP = dir;
}
