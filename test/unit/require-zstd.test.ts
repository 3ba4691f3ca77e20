// requireZstd finds zstd by looking through PATH (no process is started) and names the package
// to install when it is not there.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { requireZstd } from '../../src/backup/compression.ts';
import { UsageError } from '../../src/errors.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pgb-zstd-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('requireZstd', () => {
  it('finds an executable zstd in a PATH directory', async () => {
    const bin = path.join(dir, 'with');
    mkdirSync(bin);
    writeFileSync(path.join(bin, 'zstd'), '#!/bin/sh\nexit 0\n');
    chmodSync(path.join(bin, 'zstd'), 0o755);
    await requireZstd({ PATH: `${path.join(dir, 'nothing-here')}${path.delimiter}${bin}` });
  });

  it('refuses when no PATH directory holds an executable zstd file, naming what to install', async () => {
    const plain = path.join(dir, 'plain');
    mkdirSync(plain);
    writeFileSync(path.join(plain, 'zstd'), 'not executable\n'); // mode 644
    mkdirSync(path.join(dir, 'adir', 'zstd'), { recursive: true }); // a directory named zstd
    for (const PATH of [plain, path.join(dir, 'adir'), '']) {
      await assert.rejects(requireZstd({ PATH }), (err: unknown) => err instanceof UsageError && /zstd is not installed: install it \(apt-get install zstd/.test(err.message));
    }
  });

  it('finds the zstd this machine has', async () => {
    await requireZstd();
  });
});
