import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startFaultProxy } from '../infra/fault-proxy.ts';
import { addBigTable, cli, createDatabase, dbUrl, need, openMultipartUploads, s3Keys, s3Location } from '../helpers.ts';

/** Network faults between the tool and S3: the upload retries and completes intact, or aborts cleanly. */
describe('network faults on the way to S3', () => {
  const cases = [
    { name: 'connections reset mid-part (twice)', plan: { resetAfterBytes: 1_000_000, resets: 2 }, ok: true },
    { name: '503 SlowDown (three times)', plan: { slowDowns: 3 }, ok: true },
    { name: 'every connection reset mid-part', plan: { resetAfterBytes: 1_000_000 }, ok: false },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.ok ? 'retries and completes a backup that verifies' : 'fails clearly, with no manifest and no multipart upload left'}`, { timeout: 180_000 }, async () => {
      const db = await createDatabase('netfault', false);
      await addBigTable(db, 20);
      const to = s3Location('netfault');
      const proxy = await startFaultProxy(need('PGB_TEST_S3_ENDPOINT'), c.plan);
      try {
        const r = await cli(['dump', '--to', to, '--json'], { DATABASE_URL: dbUrl(db), AWS_ENDPOINT_URL_S3: proxy.endpoint });
        assert.ok(proxy.stats.resets + proxy.stats.slowDowns > 0, 'faults were injected');
        if (c.ok) {
          assert.equal(r.code, 0, r.stderr);
          const verified = await cli(['verify', '--from', to]);
          assert.equal(verified.code, 0, verified.stderr);
        } else {
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr.trim().split('\n').at(-1)!, /^pg-backup: S3 write of s3:\/\/\S+ failed after retries: the connection broke \(ECONNRESET\)$/);
          assert.ok(!(await s3Keys(to)).some((k) => k.endsWith('.manifest.json')), 'no manifest');
          assert.deepEqual(await s3Keys(to), []);
          assert.deepEqual(await openMultipartUploads(to), []);
        }
      } finally {
        await proxy.close();
      }
    });
  }
});
