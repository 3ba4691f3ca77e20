// Preloaded into every test file's process by scripts/test.ts (`node --import`): when
// PGB_TEST_TMP_ROOT is set, the file gets a temp directory of its own under it as its TMPDIR, so
// os.tmpdir() — and every CLI run it starts, which inherits TMPDIR — makes its directories there.
// The directory's name is short (`<root>/XXXXXX`: Unix socket paths, such as Chromium's
// SingletonSocket, must stay under 108 bytes); the test file's path is written into it as
// `.pgb-test-file`. After the run, scripts/test.ts lists what is left in each
// (test/infra/leftovers.ts `testTmpLeftovers`) and fails naming the file. Only in the test
// runner's children (NODE_TEST_CONTEXT), once per process.
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The file in each test file's temp directory that names the test file. */
export const TEST_FILE_MARKER = '.pgb-test-file';

const tmpRoot = process.env.PGB_TEST_TMP_ROOT;
const file = process.argv[1];
if (tmpRoot && file && process.env.NODE_TEST_CONTEXT && !process.env.PGB_TEST_FILE_TMP) {
  const dir = mkdtempSync(`${tmpRoot}${path.sep}`);
  writeFileSync(path.join(dir, TEST_FILE_MARKER), path.relative(process.cwd(), file));
  chmodSync(dir, 0o1777); // like /tmp: throwaway clusters run as postgres when the tests run as root
  process.env.TMPDIR = dir;
  process.env.PGB_TEST_FILE_TMP = dir;
}
