// Unit checks of src/postgres/toc.ts (the TOC selection of restore --table/--schema) and of the
// streaming row counter of src/postgres/archive-rows.ts on hand-built input. The behaviours
// themselves run against a real PostgreSQL in test/integration/restore-table.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTableName, parseTocWithDependencies, selectTables, tocList, type TocItem } from '../../src/postgres/toc.ts';
import { ArchiveRowCounter } from '../../src/postgres/archive-rows.ts';
import { UsageError } from '../../src/errors.ts';

// `pg_restore --list --verbose` of a PostgreSQL 15 custom archive (trimmed): a table with a space
// in its name, an FK to another table, a trigger whose function is outside the table.
const TOC = `;
; Selected TOC Entries:
;
3361; 0 0 ENCODING - ENCODING 
3363; 0 0 SEARCHPATH - SEARCHPATH 
218; 1255 16412 FUNCTION public trg() postgres
215; 1259 16390 TABLE public a postgres
214; 1259 16389 SEQUENCE public a_id_seq postgres
;	depends on: 215
3365; 0 0 SEQUENCE OWNED BY public a_id_seq postgres
;	depends on: 214
217; 1259 16399 TABLE public we ird postgres
3366; 0 0 COMMENT public TABLE "we ird" postgres
;	depends on: 217
3367; 0 0 ACL public TABLE "we ird" postgres
;	depends on: 217
216; 1259 16398 SEQUENCE public we ird_id_seq postgres
;	depends on: 217
3203; 2604 16393 DEFAULT public a id postgres
;	depends on: 214 215 215
3356; 0 16390 TABLE DATA public a postgres
;	depends on: 215
3358; 0 16399 TABLE DATA public we ird postgres
;	depends on: 217
3368; 0 0 SEQUENCE SET public a_id_seq postgres
;	depends on: 214
3369; 0 0 SEQUENCE SET public we ird_id_seq postgres
;	depends on: 216
3205; 2606 16397 CONSTRAINT public a a_pkey postgres
;	depends on: 215
3207; 2606 16405 CONSTRAINT public we ird we ird_pkey postgres
;	depends on: 217
3208; 1259 16411 INDEX public we ird_v_idx postgres
;	depends on: 217
3210; 2620 16413 TRIGGER public we ird t1 postgres
;	depends on: 218 217
3209; 2606 16406 FK CONSTRAINT public we ird we ird_a_id_fkey postgres
;	depends on: 3205 217 215
3354; 3256 16414 POLICY public we ird p postgres
;	depends on: 217
3353; 0 16399 ROW SECURITY public we ird postgres
;	depends on: 217
`;

const toc = parseTocWithDependencies(TOC);
const none = async () => new Set<number>();
const ids = (entries: TocItem[]) => entries.map((e) => e.dumpId);

describe('restore --table: the TOC selection', () => {
  it('parses the dependencies under each entry', () => {
    assert.deepEqual(toc.find((e) => e.dumpId === 3209)!.deps, [3205, 217, 215]);
    assert.deepEqual(toc.find((e) => e.dumpId === 217)!.deps, []);
    assert.equal(toc.find((e) => e.dumpId === 217)!.name, 'we ird');
  });

  it('one table brings what belongs to it, its missing trigger function, and names the FK to a table outside', async () => {
    const s = await selectTables(toc, { tables: [{ schema: 'public', table: 'we ird' }], schemas: [] }, none);
    assert.deepEqual(ids(s.entries).sort((a, b) => a - b), [216, 217, 218, 3207, 3208, 3210, 3353, 3354, 3358, 3361, 3363, 3366, 3367, 3369]);
    assert.deepEqual(s.outsideForeignKeys, [{ table: 'public.we ird', constraint: 'we ird_a_id_fkey', references: ['public.a'] }]);
    assert.deepEqual(s.prerequisites, ['function public.trg()']);
    assert.match(tocList(s.entries), /^3361; 0 0 ENCODING/);
  });

  it('a function the target has is not restored; both tables keep their FK', async () => {
    const s = await selectTables(toc, { tables: [{ schema: 'public', table: 'we ird' }, { schema: 'public', table: 'a' }], schemas: [] }, async (entries) => new Set(entries.map((e) => e.dumpId)));
    assert.ok(ids(s.entries).includes(3209), 'the FK between selected tables comes along');
    assert.ok(!ids(s.entries).includes(218), 'the existing function is left alone');
    assert.deepEqual(s.outsideForeignKeys, []);
    assert.ok(ids(s.entries).includes(3203) && ids(s.entries).includes(3365) && ids(s.entries).includes(3368), 'default, OWNED BY and setval of the serial');
  });

  it('the referenced table alone does not bring the foreign key of the table that references it', async () => {
    const s = await selectTables(toc, { tables: [{ schema: 'public', table: 'a' }], schemas: [] }, none);
    assert.deepEqual(ids(s.entries).sort((x, y) => x - y), [214, 215, 3203, 3205, 3356, 3361, 3363, 3365, 3368]);
    assert.deepEqual(s.outsideForeignKeys, []);
  });

  it('a partitioned table brings its partitions at every level, their rows and attachments; a partition alone stays a table of its own', async () => {
    // pg_restore --list --verbose of PostgreSQL 15: events partitioned by range, events_2026_02
    // itself partitioned by list.
    const parts = parseTocWithDependencies(`;
3375; 0 0 ENCODING - ENCODING 
214; 1259 18937 TABLE public events postgres
215; 1259 18942 TABLE public events_2026_01 postgres
;	depends on: 214
216; 1259 18947 TABLE public events_2026_02 postgres
;	depends on: 214
217; 1259 18952 TABLE public events_2026_02_a postgres
;	depends on: 216
218; 1259 18957 TABLE public other postgres
3212; 0 0 TABLE ATTACH public events_2026_01 postgres
;	depends on: 215 214
3213; 0 0 TABLE ATTACH public events_2026_02 postgres
;	depends on: 216 214
3214; 0 0 TABLE ATTACH public events_2026_02_a postgres
;	depends on: 217 216
3370; 0 18942 TABLE DATA public events_2026_01 postgres
;	depends on: 215
3371; 0 18952 TABLE DATA public events_2026_02_a postgres
;	depends on: 217
3372; 0 18957 TABLE DATA public other postgres
;	depends on: 218
3216; 2606 18941 CONSTRAINT public events events_pkey postgres
;	depends on: 214 214
3218; 2606 18946 CONSTRAINT public events_2026_01 events_2026_01_pkey postgres
;	depends on: 215 215 215 3216
3220; 2606 18951 CONSTRAINT public events_2026_02 events_2026_02_pkey postgres
;	depends on: 3216 216 216 216
3222; 2606 18956 CONSTRAINT public events_2026_02_a events_2026_02_a_pkey postgres
;	depends on: 217 217 3220 217
3224; 2606 18961 CONSTRAINT public other other_pkey postgres
;	depends on: 218
3225; 0 0 INDEX ATTACH public events_2026_01_pkey postgres
;	depends on: 3216 215 3218 3216 215 214
3227; 0 0 INDEX ATTACH public events_2026_02_a_pkey postgres
;	depends on: 216 3216 3220 3222 217 216 3216 3220 217 216
3226; 0 0 INDEX ATTACH public events_2026_02_pkey postgres
;	depends on: 216 3216 3220 3216 216 214
`);
    const whole = await selectTables(parts, { tables: [{ schema: 'public', table: 'events' }], schemas: [] }, none);
    assert.deepEqual(whole.tables.map((t) => t.table), ['events', 'events_2026_01', 'events_2026_02', 'events_2026_02_a']);
    assert.deepEqual(ids(whole.entries).sort((a, b) => a - b), [214, 215, 216, 217, 3212, 3213, 3214, 3216, 3218, 3220, 3222, 3225, 3226, 3227, 3370, 3371, 3375]);
    const one = await selectTables(parts, { tables: [{ schema: 'public', table: 'events_2026_01' }], schemas: [] }, none);
    assert.deepEqual(one.tables.map((t) => t.table), ['events_2026_01']);
    assert.deepEqual(ids(one.entries).sort((a, b) => a - b), [215, 3218, 3370, 3375], 'no TABLE ATTACH or INDEX ATTACH without the parent');
  });

  it('a table not in the backup is a UsageError naming it and the tables there', async () => {
    await assert.rejects(selectTables(toc, { tables: [{ schema: 'public', table: 'orders' }], schemas: [] }, none), (err: Error) => err instanceof UsageError && /table public\.orders is not in the backup \(it holds 2 tables: public\.a, public\.we ird\)/.test(err.message));
    await assert.rejects(selectTables(toc, { tables: [], schemas: ['sales'] }, none), /schema sales is not in the backup/);
  });

  it('parses SCHEMA.TABLE, quoted parts included, and refuses a bare name', () => {
    assert.deepEqual(parseTableName('public.orders'), { schema: 'public', table: 'orders' });
    assert.deepEqual(parseTableName('public.Orders'), { schema: 'public', table: 'Orders' });
    assert.deepEqual(parseTableName('public.we ird'), { schema: 'public', table: 'we ird' });
    assert.deepEqual(parseTableName('"my schema"."a.b"'), { schema: 'my schema', table: 'a.b' });
    assert.deepEqual(parseTableName('s."say ""hi"""'), { schema: 's', table: 'say "hi"' });
    assert.deepEqual(parseTableName('s.a.b'), { schema: 's', table: 'a.b' });
    for (const bad of ['orders', '.orders', 'public.', '"open.orders', '"a"x.b']) assert.throws(() => parseTableName(bad), UsageError, bad);
  });
});

/** A custom archive (version 1.14, 4-byte ints, 8-byte offsets, no compression) with the given TABLE DATA blocks. */
function archive(tables: { id: number; schema: string; table: string; data: string }[], blob = false): Buffer {
  const int = (v: number) => {
    const b = Buffer.alloc(5);
    b[0] = v < 0 ? 1 : 0;
    b.writeUInt32LE(Math.abs(v), 1);
    return b;
  };
  const str = (s: string | null) => (s === null ? int(-1) : Buffer.concat([int(Buffer.byteLength(s)), Buffer.from(s)]));
  const parts: Buffer[] = [Buffer.from('PGDMP'), Buffer.from([1, 14, 0, 4, 8, 1]), int(0)];
  for (let i = 0; i < 7; i++) parts.push(int(0));
  parts.push(str('db'), str('15.0'), str('15.0'), int(tables.length));
  for (const t of tables) {
    parts.push(int(t.id), int(1), str('0'), str('0'), str(t.table), str('TABLE DATA'), int(3), str(''), str(''), str('COPY …'), str(t.schema), str(''), str(''), str('o'), str('false'), str(null), Buffer.from([1]), Buffer.alloc(8));
  }
  for (const t of tables) {
    parts.push(Buffer.from([1]), int(t.id));
    // Two chunks, cut in the middle of a row.
    const half = Math.floor(t.data.length / 2);
    for (const c of [t.data.slice(0, half), t.data.slice(half)]) if (c) parts.push(int(Buffer.byteLength(c)), Buffer.from(c));
    parts.push(int(0));
  }
  if (blob) parts.push(Buffer.from([3]), int(99), int(16400), int(3), Buffer.from('a\nb'), int(0), int(0));
  return Buffer.concat(parts);
}

describe('the archive row counter', () => {
  const data = archive([
    { id: 10, schema: 'public', table: 'orders', data: '1\tfirst\\nline\n2\tx\n3\ty\n\\.\n\n\n' },
    { id: 11, schema: 'public', table: 'empty', data: '\\.\n\n\n' },
  ], true);

  it('counts rows per table whatever the chunking, ignoring large objects', () => {
    for (const size of [1, 3, 64, data.length]) {
      const c = new ArchiveRowCounter();
      for (let i = 0; i < data.length; i += size) c.push(data.subarray(i, i + size));
      const r = c.finish();
      assert.ok(!('unsupported' in r), JSON.stringify(r));
      assert.deepEqual([...r.tables.values()], [{ schema: 'public', table: 'orders', rows: 3 }, { schema: 'public', table: 'empty', rows: 0 }], `chunks of ${size}`);
    }
  });

  it('says why it cannot count: data without the end marker, a truncated archive, a compressed one', () => {
    const noMarker = new ArchiveRowCounter();
    noMarker.push(archive([{ id: 10, schema: 'public', table: 't', data: '1\n2\n' }]));
    assert.match((noMarker.finish() as { unsupported: string }).unsupported, /does not end with COPY's end marker/);
    const cut = new ArchiveRowCounter();
    cut.push(data.subarray(0, data.length - 7));
    assert.ok('unsupported' in cut.finish());
    const compressed = Buffer.from(data);
    compressed[12] = 6; // the compression level int of a 1.14 archive (bytes 11–15): level 6
    const z = new ArchiveRowCounter();
    z.push(compressed);
    assert.match((z.finish() as { unsupported: string }).unsupported, /compressed inside/);
  });
});
