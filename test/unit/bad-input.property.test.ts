import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { main } from '../../src/cli/main.ts';
import { recordFault } from '../reliability.ts';

/**
 * Property-based bad input: whatever a user types in place of a URL, a compression, a
 * duration or a format, the CLI answers with exit code 2 and one line — never a stack trace —
 * before touching a database or a bucket (the database URL points nowhere reachable).
 */
async function runCli(args: string[]): Promise<{ code: number; stderr: string }> {
  // Only stderr is captured: the test runner itself speaks on this process's stdout.
  let stderr = '';
  const errWrite = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += String(chunk)), true)) as typeof process.stderr.write;
  try {
    const code = await main(['node', 'pg-backup', ...args]);
    return { code, stderr };
  } finally {
    process.stderr.write = errWrite;
  }
}

const env = { DATABASE_URL: 'postgresql://u:pw@127.0.0.1:1/db' };
const text = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.startsWith('-'));

function checkOneLine(r: { code: number; stderr: string }): void {
  assert.equal(r.code, 2, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('(run with --help'));
  assert.equal(lines.length, 1, r.stderr);
}

describe('bad input (property-based)', () => {
  Object.assign(process.env, env);
  const cases: [{ faultId: string }, string, fc.Arbitrary<string>, (v: string) => string[]][] = [
    [{ faultId: 'bad-property-storage-urls' }, 'storage URLs', text.filter((s) => !/^(s3|file):\/\//.test(s)), (v) => ['dump', '--to', v]],
    [{ faultId: 'bad-property-bucket-names' }, 'bucket names', fc.string({ minLength: 1, maxLength: 70 }).filter((s) => !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(s.split('/')[0]!) && !s.startsWith('-')), (v) => ['list', '--from', `s3://${v}`]],
    [{ faultId: 'bad-property-compressions' }, 'compressions', text.filter((s) => !/^(zstd(:([1-9]|1[0-9]))?|gzip(:[1-9])?|none)$/i.test(s.trim())), (v) => ['dump', '--to', 'file:///tmp/pgb-prop', '--compression', v]],
    [{ faultId: 'bad-property-durations' }, 'durations', text.filter((s) => !/^(\d+(\.\d+)?(ms|s|m|h|d|w))+$/.test(s.trim())), (v) => ['dump', '--to', 'file:///tmp/pgb-prop', '--stall-timeout', v]],
    [{ faultId: 'bad-property-formats' }, 'formats', text.filter((s) => !['custom', 'plain', 'directory'].includes(s)), (v) => ['dump', '--to', 'file:///tmp/pgb-prop', '--format', v]],
    [{ faultId: 'bad-property-database-urls' }, 'database URLs', text.filter((s) => !/^postgres(ql)?:\/\//i.test(s)), (v) => ['dump', '--to', 'file:///tmp/pgb-prop', '--database-url', v]],
    [{ faultId: 'bad-property-retention-counts' }, 'retention counts', text.filter((s) => !/^\d{1,6}$/.test(s.trim())), (v) => ['prune', '--from', 'file:///tmp/pgb-prop', '--keep-last', v]],
    [{ faultId: 'bad-property-retention-ages' }, 'retention ages', text.filter((s) => !/^(\d+(\.\d+)?(ms|s|m|h|d|w))+$/.test(s.trim())), (v) => ['prune', '--from', 'file:///tmp/pgb-prop', '--keep-daily', '7', '--max-age', v]],
    [{ faultId: 'bad-property-verify-levels' }, 'verify levels', text.filter((s) => !['none', 'checksum', 'archive', 'schema'].includes(s)), (v) => ['verify', '--from', 'file:///tmp/pgb-prop', '--level', v]],
  ];
  for (const [{ faultId }, name, arbitrary, args] of cases) {
    it(`${name}: exit 2, one line, no stack`, async () => {
      let example = '';
      await fc.assert(fc.asyncProperty(arbitrary, async (v) => {
        const r = await runCli(args(v));
        checkOneLine(r);
        example ||= r.stderr.trim();
      }), { numRuns: 40, seed: 20261122 });
      await recordFault({ faultId, fault: `40 generated malformed ${name} (fast-check)`, outcome: 'one line each, no stack trace, before any connection', exit: 2, left: 'nothing (no database or bucket is reached)', file: import.meta.url, message: example });
    });
  }
});
