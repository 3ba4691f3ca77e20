// The pieces of the plain-SQL gate that need no server: which psql has restricted mode, where
// pg_dump's own \restrict lines are, and the scan for an \unrestrict that psql would expand.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { layoutPlainSql, psqlCanRestrict, restrictKey, UnrestrictScanner, PLAIN_TRAILER } from '../../src/postgres/plain-sql.ts';

const KEY = 'abcDEF123';
const DUMP = `--\n-- PostgreSQL database dump\n--\n\n\\restrict ${KEY}\n\n-- Dumped by pg_dump version 15.18\n\nSET lock_timeout = 0;\nCOPY public.t (a) FROM stdin;\n\\rstrict\n\\\\restrict ${KEY}\n\\.\n\n--\n${PLAIN_TRAILER}\n--\n\n\\unrestrict ${KEY}\n\n`;

/** What psql reads of `text` under `layout`. */
function fed(text: string): string {
  const buf = Buffer.from(text, 'latin1');
  const scanner = new UnrestrictScanner();
  scanner.push(buf);
  const layout = layoutPlainSql(buf.subarray(0, 65536), buf.subarray(Math.max(0, buf.length - 65536)), buf.length, scanner);
  if (layout.refusal) return `REFUSED: ${layout.refusal}`;
  return layout.ranges.map(([s, e]) => text.slice(s, e)).join('');
}

describe('psqlCanRestrict', () => {
  it('knows the first minor of each major with \\restrict', () => {
    for (const v of ['13.22', '14.19', '15.14', '15.18', '16.10', '17.6', '17.10', '18.0', '18.1', '19devel', '20beta1']) assert.equal(psqlCanRestrict(v), true, v);
    for (const v of ['12.22', '13.21', '14.18', '15.13', '16.9', '17.5', '17', '9.6.24', 'nonsense']) assert.equal(psqlCanRestrict(v), false, v);
  });
});

describe('layoutPlainSql', () => {
  it("leaves out exactly pg_dump's own \\restrict and \\unrestrict lines, never COPY data", () => {
    const out = fed(DUMP);
    assert.ok(!/^\\restrict abcDEF123$/m.test(out));
    assert.ok(!/^\\unrestrict /m.test(out));
    assert.match(out, /^\\rstrict$/m, 'a COPY line beginning with \\r stays');
    assert.match(out, /^\\\\restrict abcDEF123$/m, 'COPY data that looks like the line stays');
    assert.equal(out.length, DUMP.length - `\\restrict ${KEY}\n`.length - `\\unrestrict ${KEY}\n`.length);
  });

  it('keeps a \\restrict line that follows SQL, and an \\unrestrict with another key or followed by SQL', () => {
    const late = DUMP.replace(`\\restrict ${KEY}\n`, '').replace('SET lock_timeout = 0;\n', `SET lock_timeout = 0;\n\\restrict ${KEY}\n`);
    assert.match(fed(late), new RegExp(`^\\\\restrict ${KEY}$`, 'm'));
    assert.match(fed(DUMP.replace(`\\unrestrict ${KEY}`, '\\unrestrict other')), /^\\unrestrict other$/m);
    assert.match(fed(`${DUMP}SELECT 1;\n`), new RegExp(`^\\\\unrestrict ${KEY}$`, 'm'));
  });

  it('refuses SQL without the completion line', () => {
    assert.match(fed(DUMP.replace(PLAIN_TRAILER, '-- cut')), /REFUSED: the SQL does not end with/);
  });

  it('refuses an \\unrestrict whose argument psql would expand, anywhere', () => {
    for (const line of ['\\unrestrict `touch x`', '\\unrestrict :key', "\\unrestrict 'k'", 'SELECT 1 \\unrestrict `id`', '\\\\unrestrict `id`', '\\unrestrict`id`']) {
      assert.match(fed(DUMP.replace('SET lock_timeout = 0;', line)), /REFUSED: the SQL holds a psql "\\unrestrict" with an argument psql would expand/, line);
    }
    assert.doesNotMatch(fed(DUMP.replace('SET lock_timeout = 0;', '\\unrestrict guess123')), /REFUSED/);
  });
});

describe('UnrestrictScanner', () => {
  it('finds the pattern across chunk boundaries, at every split', () => {
    const text = Buffer.from('x'.repeat(20) + '\\unrestrict abc `id`\nmore\n', 'latin1');
    for (let cut = 1; cut < text.length; cut++) {
      const s = new UnrestrictScanner();
      s.push(text.subarray(0, cut));
      s.push(text.subarray(cut));
      assert.ok(s.found, `cut at ${cut}`);
    }
    const ok = Buffer.from('\\unrestrict abc\n`id`\n', 'latin1');
    for (let cut = 1; cut < ok.length; cut++) {
      const s = new UnrestrictScanner();
      s.push(ok.subarray(0, cut));
      s.push(ok.subarray(cut));
      assert.equal(s.found, undefined, `cut at ${cut}`);
    }
  });
});

describe('restrictKey', () => {
  it('is 64 hex digits, fresh each time', () => {
    const a = restrictKey();
    assert.match(a, /^[0-9a-f]{64}$/);
    assert.notEqual(a, restrictKey());
  });
});
