// The pure parts of `pg-backup diff`: reading SCHEMA.TABLE as psql does, COPY text fields, the
// byte order keys are compared in, and the SQL text of hostile values and names. The whole
// command runs on real servers in test/integration/diff.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareCodePoints, copyQuery, keyOrder, parseTableName, unescapeCopy } from '../../src/postgres/table-diff.ts';
import { sqlComment, sqlIdent, sqlLiteral } from '../../src/postgres/repair-sql.ts';
import { UsageError } from '../../src/errors.ts';

describe('diff: names, fields and order', () => {
  it('reads SCHEMA.TABLE as psql does: plain parts folded to lower case, quoted parts as written', () => {
    assert.deepEqual(parseTableName('public.orders'), { schema: 'public', table: 'orders' });
    assert.deepEqual(parseTableName('Public.Orders'), { schema: 'public', table: 'orders' });
    assert.deepEqual(parseTableName('"Sales"."Order Lines"'), { schema: 'Sales', table: 'Order Lines' });
    assert.deepEqual(parseTableName('"we""ird.sch"."t.x"'), { schema: 'we"ird.sch', table: 't.x' });
    assert.deepEqual(parseTableName('app."Tab\'le"'), { schema: 'app', table: "Tab'le" });
    for (const bad of ['orders', '', '.orders', 'public.', 'a.b.c', '"open.orders', 'public."', 'pub lic.orders', '"".x']) {
      assert.throws(() => parseTableName(bad), (err: unknown) => err instanceof UsageError && /is not SCHEMA\.TABLE/.test(err.message), bad);
    }
  });

  it('unescapes COPY text fields and reads \\N as NULL', () => {
    assert.equal(unescapeCopy('\\N'), null);
    assert.equal(unescapeCopy('plain'), 'plain');
    assert.equal(unescapeCopy('a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh'), 'a\tb\nc\rd\\e\bf\fg\vh');
    assert.equal(unescapeCopy('\\\\N'), '\\N');
  });

  it('compares keys by code point, the order of their UTF-8 bytes, not by UTF-16 unit', () => {
    const words = ['a', 'B', '_z', 'Ä', 'ab', '😀', '\uFF21', 'tab\there', '', 'a\u0000'.slice(0, 1) + 'b'];
    const byBytes = [...words].sort((x, y) => Buffer.compare(Buffer.from(x, 'utf8'), Buffer.from(y, 'utf8')));
    assert.deepEqual([...words].sort(compareCodePoints), byBytes);
    // U+FF21 sorts before U+1F600 by code point, after it by UTF-16 unit (0xFF21 > 0xD83D).
    assert.ok(compareCodePoints('\uFF21', '😀') < 0);
    assert.ok('\uFF21' > '😀');
  });

  it('orders integer and uuid keys natively only when both sides agree, and every other key by its UTF-8 bytes', () => {
    assert.equal(keyOrder('int4', 'int8'), 'integer');
    assert.equal(keyOrder('uuid', 'uuid'), 'uuid');
    assert.equal(keyOrder('int4', 'text'), 'bytes');
    assert.equal(keyOrder('text', 'text'), 'bytes');
    const q = copyQuery({ table: { schema: 'public', table: 'we"ird' }, key: [{ name: 'id', order: 'integer' }, { name: 'name', order: 'bytes' }], values: ['v'] });
    assert.equal(q, `COPY (SELECT "id", ("name")::text, "v" FROM ONLY "public"."we""ird" ORDER BY "id", convert_to(("name")::text, 'UTF8')) TO STDOUT`);
  });
});

describe('diff: the repair script\'s SQL text', () => {
  it('writes plain literals with quotes doubled and backslashes as they are (standard_conforming_strings on)', () => {
    assert.equal(sqlLiteral(null), 'NULL');
    assert.equal(sqlLiteral("it's"), "'it''s'");
    assert.equal(sqlLiteral('C:\\path\\n'), "'C:\\path\\n'");
    assert.equal(sqlLiteral("'); DROP TABLE x; --"), "'''); DROP TABLE x; --'");
    assert.equal(sqlLiteral('Zürich 東京 😀'), "'Zürich 東京 😀'");
  });

  it('spells control characters, bidi controls and line separators as Unicode escapes, so the script is printable', () => {
    assert.equal(sqlLiteral('a\nb'), "U&'a\\000Ab'");
    assert.equal(sqlLiteral("x\\'\u001b[2J\u202e\u2028"), "U&'x\\\\''\\001B[2J\\202E\\2028'");
    assert.equal(sqlIdent('new\nline'), 'U&"new\\000Aline"');
    assert.equal(sqlIdent('we"ird'), '"we""ird"');
    for (const v of ['\r\n', '\t', '\u0085', '\u2066x\u2069', '\u007f']) {
      // eslint-disable-next-line no-control-regex
      assert.doesNotMatch(sqlLiteral(v), /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/, JSON.stringify(v));
    }
  });

  it('keeps a comment on one line', () => {
    assert.equal(sqlComment('table a\nDROP TABLE x;'), '-- table a\\nDROP TABLE x;\n');
  });
});
