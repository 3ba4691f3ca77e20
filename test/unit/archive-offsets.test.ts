// writeDataOffsets on custom-format archives built byte by byte from pg_dump's layout
// (pg_backup_archiver.c WriteHead/WriteToc/WriteInt/WriteStr/WriteOffset, pg_backup_custom.c
// _StartData/_StartLOs/_CustomWriteFunc/_EndData/_EndLOs) for archive versions 1.13 to 1.16:
// the versions this machine's pg_dump 15 cannot write (1.15: compression byte, 1.16: relkind)
// are covered here; real pg_dump 15 archives in test/integration/archive-offsets.test.ts.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OFFSET_FLAG, readArchiveToc, writeDataOffsets } from '../../src/postgres/archive-offsets.ts';

type Block = { kind: 'data'; chunks: Buffer[] } | { kind: 'blobs'; objects: { oid: number; chunks: Buffer[] }[] };
interface Entry {
  dumpId: number;
  desc: string;
  tag: string;
  /** The entry has a dumper (a data block); its block, unless `missingBlock`. */
  block?: Block;
}
interface Spec {
  vmin: number;
  intSize?: number;
  offSize?: number;
  entries: Entry[];
  /** Block order in the data section (dump IDs); default: TOC order. */
  order?: number[];
  /** Blocks with no TOC entry, appended. */
  strayBlocks?: { dumpId: number; block: Block }[];
  /** Entries with a dumper whose block is not written. */
  missingBlock?: number[];
  /** Override the type byte of the block of this dump ID. */
  badType?: { dumpId: number; type: number };
}

/** Builds an archive as pg_dump writes it: `offsets` true = to a file (offsets set), false = through a pipe. */
function build(spec: Spec, offsets: boolean, corruptOffsetOf?: number): Buffer {
  const intSize = spec.intSize ?? 4;
  const offSize = spec.offSize ?? 8;
  const int = (v: number) => {
    const b = Buffer.alloc(1 + intSize);
    b[0] = v < 0 ? 1 : 0;
    let rest = Math.abs(v);
    for (let k = 0; k < intSize; k++) {
      b[1 + k] = rest % 256;
      rest = Math.floor(rest / 256);
    }
    return b;
  };
  const str = (s: string | null) => (s === null ? int(-1) : Buffer.concat([int(Buffer.byteLength(s)), Buffer.from(s)]));
  const offset = (flag: number, v: number) => {
    const b = Buffer.alloc(1 + offSize);
    b[0] = flag;
    let rest = v;
    for (let k = 0; k < offSize; k++) {
      b[1 + k] = rest % 256;
      rest = Math.floor(rest / 256);
    }
    return b;
  };
  const head = [Buffer.from('PGDMP'), Buffer.from([1, spec.vmin, 0, intSize, offSize, 1])];
  head.push(spec.vmin >= 15 ? Buffer.from([3]) : int(0)); // zstd byte / level 0
  for (const v of [12, 30, 14, 2, 11, 126, 0]) head.push(int(v));
  head.push(str('shop'), str('15.8 (Debian 15.8-0+deb12u1)'), str('15.8 (Debian 15.8-0+deb12u1)'));
  const blockBytes = (dumpId: number, block: Block) => {
    const type = spec.badType?.dumpId === dumpId ? spec.badType.type : block.kind === 'data' ? 1 : 3;
    const parts: Buffer[] = [Buffer.from([type]), int(dumpId)];
    const chunks = (cs: Buffer[]) => {
      for (const c of cs) parts.push(int(c.length), c);
      parts.push(int(0));
    };
    if (block.kind === 'data') chunks(block.chunks);
    else {
      for (const o of block.objects) {
        parts.push(int(o.oid));
        chunks(o.chunks);
      }
      parts.push(int(0));
    }
    return Buffer.concat(parts);
  };
  const tocEntry = (e: Entry, flag: number, pos: number) => {
    const parts: Buffer[] = [int(e.dumpId), int(e.block ? 1 : 0), str('1259'), str(String(16000 + e.dumpId)), str(e.tag), str(e.desc), int(e.block ? 3 : 2)];
    parts.push(str(''), str(''), str(e.block?.kind === 'data' ? `COPY public.${e.tag} (id) FROM stdin;\n` : ''), str('public'), str(''));
    if (spec.vmin >= 14) parts.push(str(e.block?.kind === 'data' ? 'heap' : ''));
    if (spec.vmin >= 16) parts.push(int(e.block?.kind === 'data' ? 114 : 0));
    parts.push(str('postgres'), str('false'), str(String(e.dumpId - 1)), str(null));
    parts.push(offset(flag, pos));
    return Buffer.concat(parts);
  };
  const withData = spec.entries.filter((e) => e.block && !spec.missingBlock?.includes(e.dumpId));
  const order = spec.order ?? withData.map((e) => e.dumpId);
  const blocks = order.map((id) => ({ id, bytes: blockBytes(id, spec.entries.find((e) => e.dumpId === id)!.block!) }));
  for (const s of spec.strayBlocks ?? []) blocks.push({ id: s.dumpId, bytes: blockBytes(s.dumpId, s.block) });
  const headBytes = Buffer.concat(head);
  const tocSize = int(0).length + spec.entries.reduce((n, e) => n + tocEntry(e, 1, 0).length, 0);
  const positions = new Map<number, number>();
  let at = headBytes.length + tocSize;
  for (const b of blocks) {
    if (!positions.has(b.id)) positions.set(b.id, at);
    at += b.bytes.length;
  }
  const toc = [int(spec.entries.length)];
  for (const e of spec.entries) {
    if (!e.block) toc.push(tocEntry(e, OFFSET_FLAG.noData, 0));
    else if (!offsets) toc.push(tocEntry(e, OFFSET_FLAG.notSet, 0));
    else toc.push(tocEntry(e, OFFSET_FLAG.set, (positions.get(e.dumpId) ?? 0) + (e.dumpId === corruptOffsetOf ? 7 : 0)));
  }
  return Buffer.concat([headBytes, ...toc, ...blocks.map((b) => b.bytes)]);
}

const rows = (n: number, width = 12) => Array.from({ length: n }, (_, i) => Buffer.from(`${i}\t${'x'.repeat(width)}\n`));
const shop = (): Entry[] => [
  { dumpId: 1, desc: 'ENCODING', tag: 'ENCODING' },
  { dumpId: 2, desc: 'TABLE', tag: 'customers' },
  { dumpId: 10, desc: 'TABLE DATA', tag: 'customers', block: { kind: 'data', chunks: rows(500) } },
  { dumpId: 11, desc: 'TABLE DATA', tag: 'empty', block: { kind: 'data', chunks: [] } },
  { dumpId: 12, desc: 'TABLE DATA', tag: 'orders', block: { kind: 'data', chunks: rows(2000, 40) } },
  { dumpId: 13, desc: 'SEQUENCE SET', tag: 'orders_id_seq' },
  { dumpId: 14, desc: 'BLOBS', tag: 'BLOBS', block: { kind: 'blobs', objects: [{ oid: 16399, chunks: [Buffer.alloc(3000, 1), Buffer.alloc(10, 2)] }, { oid: 16400, chunks: [] }] } },
  { dumpId: 20, desc: 'INDEX', tag: 'orders_customer_idx' },
];

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-offsets-unit-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

let n = 0;
async function file(bytes: Buffer): Promise<string> {
  const f = path.join(dir, `a${n++}.dump`);
  await writeFile(f, bytes);
  return f;
}
const sha = async (f: string) => createHash('sha256').update(await readFile(f)).digest('hex');

/** Asserts that writeDataOffsets refuses `bytes` with a reason matching `reason` and leaves the file as it was. */
async function refuses(bytes: Buffer, reason: RegExp): Promise<void> {
  const f = await file(bytes);
  const before = await sha(f);
  const r = await writeDataOffsets(f);
  assert.equal(r.patched, 0);
  assert.match(r.reason ?? '', reason);
  assert.equal(await sha(f), before, 'a refused archive is left byte for byte as it was');
}

describe('writeDataOffsets on archive layouts 1.13–1.16', () => {
  for (const vmin of [13, 14, 15, 16]) {
    it(`1.${vmin}: a piped archive becomes byte for byte the one pg_dump writes to a file`, async () => {
      const spec: Spec = { vmin, entries: shop() };
      const f = await file(build(spec, false));
      const expected = build(spec, true);
      const r = await writeDataOffsets(f);
      assert.deepEqual(r, { patched: 4, blocks: 4 });
      assert.ok((await readFile(f)).equals(expected));
      const toc = await readArchiveToc(f);
      assert.equal(toc.version, `1.${vmin}.0`);
      assert.equal(toc.compression, vmin >= 15 ? 'zstd' : 'level 0');
      // Every set offset points at a block header with that entry's dump ID.
      const bytes = await readFile(f);
      for (const e of toc.entries.filter((e) => e.offsetFlag === OFFSET_FLAG.set)) {
        assert.ok([1, 3].includes(bytes[e.offset]!), `block type at ${e.offset}`);
        assert.equal(bytes.readUInt32LE(e.offset + 2), e.dumpId);
      }
      // A second run finds nothing to do and changes nothing.
      const again = await writeDataOffsets(f);
      assert.equal(again.patched, 0);
      assert.match(again.reason ?? '', /already has its offset/);
      assert.ok((await readFile(f)).equals(expected));
    });
  }

  it('blocks in another order than the TOC, 8-byte ints, chunks across the 1 MiB read buffer', async () => {
    const entries = shop();
    entries[4]!.block = { kind: 'data', chunks: rows(400_000, 20) }; // ~11 MB of small chunks
    const spec: Spec = { vmin: 14, intSize: 8, entries, order: [14, 12, 10, 11] };
    const f = await file(build(spec, false));
    assert.deepEqual(await writeDataOffsets(f), { patched: 4, blocks: 4 });
    assert.ok((await readFile(f)).equals(build(spec, true)));
  });

  it('offsets of 4 bytes are written in 4 bytes', async () => {
    const spec: Spec = { vmin: 14, offSize: 4, entries: shop() };
    const f = await file(build(spec, false));
    assert.equal((await writeDataOffsets(f)).patched, 4);
    assert.ok((await readFile(f)).equals(build(spec, true)));
  });

  it('refuses what it cannot vouch for, leaving the file as it was', async () => {
    const spec: Spec = { vmin: 14, entries: shop() };
    const good = build(spec, false);
    await refuses(Buffer.concat([Buffer.from('PGDMP'), Buffer.from([1, 17, 0, 4, 8, 1]), good.subarray(11)]), /archive version 1\.17\.0 is not one this parser knows/);
    await refuses(Buffer.concat([Buffer.from('PGDMP'), Buffer.from([1, 12, 0, 4, 8, 1]), good.subarray(11)]), /archive version 1\.12/);
    await refuses(Buffer.concat([good.subarray(0, 10), Buffer.from([5]), good.subarray(11)]), /not the custom format/);
    await refuses(Buffer.from('-- PostgreSQL database dump\nSET statement_timeout = 0;\n'), /does not start with PGDMP/);
    await refuses(createHash('sha512').update('garbage').digest(), /does not start with PGDMP/);
    await refuses(Buffer.alloc(0), /too short/);
    // Truncated: in the header, in the TOC, in the middle of a chunk, before the last end marker.
    for (const at of [20, 200, Math.floor(good.length / 2), good.length - 1]) await refuses(good.subarray(0, at), /truncated/);
    // A data block whose dump ID the TOC does not list.
    await refuses(build({ ...spec, strayBlocks: [{ dumpId: 99, block: { kind: 'data', chunks: rows(3) } }] }, false), /dump ID 99, which the TOC does not list/);
    // A TOC entry with data but no block.
    await refuses(build({ ...spec, missingBlock: [12] }, false), /TOC entry 12 \(TABLE DATA orders\) has data but no data block/);
    // Two blocks for one dump ID.
    await refuses(build({ ...spec, strayBlocks: [{ dumpId: 10, block: { kind: 'data', chunks: rows(3) } }] }, false), /dump ID 10 has two data blocks/);
    // An unknown block type.
    await refuses(build({ ...spec, badType: { dumpId: 12, type: 2 } }, false), /unknown data block type 2/);
    // A block for an entry marked "no data".
    await refuses(build({ ...spec, strayBlocks: [{ dumpId: 13, block: { kind: 'data', chunks: rows(1) } }] }, false), /TOC entry 13 \(SEQUENCE SET orders_id_seq\) is marked as having no data/);
    // A set offset that points elsewhere.
    await refuses(build(spec, true, 12), /records offset \d+, but its block is at byte/);
    // Offsets too small for the file (2 bytes, blocks beyond 64 KiB).
    const big = shop();
    big[2]!.block = { kind: 'data', chunks: rows(10_000, 20) };
    await refuses(build({ vmin: 14, offSize: 2, entries: big }, false), /does not fit in the archive's 2-byte offsets/);
    // Garbage after the last block.
    await refuses(Buffer.concat([good, Buffer.from([0x2a, 0, 0, 0, 0, 0])]), /unknown data block type 42/);
  });

  it('an archive without data blocks is left alone', async () => {
    const f = await file(build({ vmin: 14, entries: shop().filter((e) => !e.block) }, false));
    const r = await writeDataOffsets(f);
    assert.equal(r.patched, 0);
    assert.match(r.reason ?? '', /no data blocks/);
  });

  it('an aborted signal stops it before anything is written', async () => {
    const f = await file(build({ vmin: 14, entries: shop() }, false));
    const before = await sha(f);
    await assert.rejects(writeDataOffsets(f, AbortSignal.abort(new Error('drill cancelled'))), /drill cancelled/);
    assert.equal(await sha(f), before);
  });
});
