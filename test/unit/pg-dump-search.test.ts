import assert from 'node:assert/strict';
import { mkdtemp, realpath, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { clearBinaryCache, findAll } from '../../src/postgres/binaries.ts';

// Debian's postgresql-common (installed with the PostgreSQL packages the tests run on).
const WRAPPER = '/usr/share/postgresql-common/pg_wrapper';

describe('the search for pg_dump', () => {
  it('does not ask Debian\'s pg_wrapper for its version when the real programs are found, and keeps it when it is all there is', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-wrapper-'));
    try {
      await symlink(WRAPPER, path.join(dir, 'pg_dump'));
      clearBinaryCache();
      const found = await findAll('pg_dump', { PATH: dir });
      assert.ok(found.length >= 1, 'the /usr/lib/postgresql/<major>/bin programs are found');
      for (const b of found) assert.notEqual(await realpath(b.path), WRAPPER, b.path);
      assert.ok(found.every((b) => b.path.startsWith('/usr/lib/postgresql/')), JSON.stringify(found));
      clearBinaryCache();
      const only = await findAll('pg_dump', { PG_BIN_DIR: dir, PATH: '/usr/bin:/bin' });
      assert.equal(only.length, 1);
      assert.equal(only[0]!.path, path.join(dir, 'pg_dump'));
      assert.ok(only[0]!.major >= 12, JSON.stringify(only));
    } finally {
      clearBinaryCache();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
