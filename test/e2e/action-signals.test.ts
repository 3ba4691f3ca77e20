// A cancelled workflow run: the runner sends SIGINT, then SIGTERM, to the action's Node
// process. The dump action must stop pg_dump, abort its multipart upload and exit 130/143.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDatabase, dbUrl, need, openMultipartUploads, root, s3Keys, s3Location } from '../helpers.ts';
import { tempDir, tempFakePgBin } from '../infra/temp.ts';
import { leftoverMark, markedProcesses } from '../infra/leftovers.ts';

describe('actions/dump cancelled by the runner', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} during the upload: pg_dump stopped, multipart upload aborted, exit ${signal === 'SIGINT' ? 130 : 143}`, { timeout: 90_000 }, async () => {
      const db = await createDatabase('actsig', false);
      const bin = await tempFakePgBin('head -c 20000000 /dev/urandom; exec sleep 30');
      const to = s3Location('actsig');
      const { mark, env: markEnv } = leftoverMark();
      const dir = await tempDir('pgb-action-');
      await writeFile(path.join(dir, 'output'), '');
      await writeFile(path.join(dir, 'summary'), '');
      const inputs = {
        INPUT_TO: to,
        'INPUT_DATABASE-URL': dbUrl(db),
        INPUT_ENDPOINT: need('PGB_TEST_S3_ENDPOINT'),
        'INPUT_AWS-ACCESS-KEY-ID': need('PGB_TEST_S3_ACCESS_KEY'),
        'INPUT_AWS-SECRET-ACCESS-KEY': need('PGB_TEST_S3_SECRET_KEY'),
        INPUT_REGION: 'us-east-1',
      };
      const child = spawn(process.execPath, [path.join(root, 'actions/dump/dist/index.js')], {
        env: { ...process.env, DATABASE_URL: '', GITHUB_OUTPUT: path.join(dir, 'output'), GITHUB_STEP_SUMMARY: path.join(dir, 'summary'), PG_BIN_DIR: bin, ...markEnv, ...inputs },
      });
      let out = '';
      let sent = false;
      const onData = (d: Buffer) => {
        out += d;
        if (!sent && /snapshot \S+ exported/.test(out)) {
          sent = true;
          setTimeout(() => child.kill(signal), 500);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
      assert.ok(sent, out);
      assert.equal(code, signal === 'SIGINT' ? 130 : 143, out);
      assert.match(out, new RegExp(`received ${signal}: cancelling and cleaning up`));
      assert.deepEqual(await s3Keys(to), [], 'nothing stored');
      assert.deepEqual(await openMultipartUploads(to), [], 'the multipart upload was aborted');
      assert.deepEqual(await markedProcesses(mark), [], 'no pg_dump or zstd process left');
    });
  }
});
