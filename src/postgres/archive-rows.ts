import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BLOCK_TYPE, OFFSET_FLAG, SUPPORTED_VERSIONS } from './archive-offsets.ts';
import type { TocEntry } from './target.ts';

// Row counts of the tables in an archive, read from the archive itself while it streams to
// pg_restore, so that the restore's row-count check can run before the commit: the restore
// holds back the archive's last 256 KiB until the stored object matched its manifest
// (restore.ts holdBack), and by then every data block has passed through here; rows that differ
// from the manifest stop pg_restore before it commits, and the server rolls everything back.
//
// pg_dump writes a table's data as COPY text (pg_dump.c dumpTableData_copy, one
// PQgetCopyData row per WriteData call): one line per row, a newline inside a value written as
// `\n`, then COPY's end marker and two empty lines (`archprintf(fout, "\\.\n\n\n")`), so a
// table's rows are the newline bytes of its data block less those three. The layout of a custom archive
// (header, TOC, data blocks of length-prefixed chunks) is the one archive-offsets.ts describes;
// this reads it as a stream. Only archives without compression inside (pg-backup dumps the custom
// format with --compress=0 and compresses the whole stream) can be counted this way; for others
// the counter says why it cannot, and the check runs after the commit only.

/** Rows per TABLE DATA entry, by dump ID, with the entry's schema and table. */
export interface ArchiveRowCounts {
  /** Per TABLE DATA entry: schema, table and rows (newlines of its data). */
  tables: Map<number, { schema: string; table: string; rows: number }>;
}

/** A table's data as counted: its newlines and the last bytes of its data (to find the end marker). */
interface Counted {
  schema: string;
  table: string;
  rows: number;
  tail: Buffer;
}

/** What pg_dump writes after a table's COPY rows: the end marker and two empty lines. */
const END_MARKER = Buffer.from('\\.\n\n\n', 'latin1');

/** The counts less pg_dump's end marker ({@link END_MARKER}); `unsupported` when a table's data does not end with it. */
function settle(counted: Iterable<[number, Counted]>): ArchiveRowCounts | { unsupported: string } {
  const tables = new Map<number, { schema: string; table: string; rows: number }>();
  for (const [id, c] of counted) {
    if (!c.tail.equals(END_MARKER)) return { unsupported: `the data of ${c.schema}.${c.table} does not end with COPY's end marker as pg_dump writes it` };
    tables.set(id, { schema: c.schema, table: c.table, rows: c.rows - 3 });
  }
  return { tables };
}

/** `tail` followed by `bytes`, cut to the last {@link END_MARKER}-length bytes. */
function nextTail(tail: Buffer, bytes: Buffer): Buffer {
  const n = END_MARKER.length;
  return bytes.length >= n ? Buffer.from(bytes.subarray(bytes.length - n)) : Buffer.concat([tail, bytes]).subarray(-n);
}

/** Thrown inside the parser when the buffered bytes end before what is being read. */
class NeedMore extends Error {}

/** Synchronous reader over a buffer holding the archive's start (header and TOC). */
class HeadReader {
  pos = 0;
  intSize = 4;
  private readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw new NeedMore();
  }
  byte(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  int(): number {
    this.need(1 + this.intSize);
    const negative = this.buf[this.pos++] !== 0;
    let value = 0;
    let scale = 1;
    for (let k = 0; k < this.intSize; k++) {
      value += this.buf[this.pos++]! * scale;
      scale *= 256;
    }
    return negative ? -value : value;
  }
  str(): string | null {
    const len = this.int();
    if (len < 0) return null;
    this.need(len);
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
}

/**
 * Counts the rows of each TABLE DATA entry of a custom-format archive fed to it chunk by chunk
 * ({@link push}), in one pass, without holding more than the header and TOC (the TOC is parsed
 * once the buffered bytes double, so the work stays linear).
 */
export class ArchiveRowCounter {
  private head: Buffer[] = [];
  private headBytes = 0;
  private nextTry = 4096;
  private intSize = 4;
  private tableData = new Map<number, Counted>();
  /** Why the archive cannot be counted (compressed inside, an unknown version, a surprise); undefined while it can. */
  unsupported: string | undefined;
  // Data phase.
  private inData = false;
  private pending = Buffer.alloc(0);
  private state: 'block' | 'len' | 'data' | 'oid' = 'block';
  private blockType = 0;
  private current: Counted | undefined;
  private remaining = 0;

  /** Feeds the next bytes of the (decompressed) archive. */
  push(chunk: Buffer): void {
    if (this.unsupported) return;
    try {
      if (!this.inData) {
        this.head.push(chunk);
        this.headBytes += chunk.length;
        if (this.headBytes < this.nextTry) return;
        this.nextTry = this.headBytes * 2;
        const all = Buffer.concat(this.head, this.headBytes);
        this.head = [all];
        const start = this.parseHead(all);
        if (start === undefined) return;
        this.head = [];
        this.inData = true;
        this.data(all.subarray(start));
      } else {
        this.data(chunk);
      }
    } catch (err) {
      this.unsupported = err instanceof Error ? err.message : String(err);
    }
  }

  /** Ends the input: the counts, or why there are none. */
  finish(): ArchiveRowCounts | { unsupported: string } {
    if (!this.unsupported && !this.inData) {
      // A small archive: the whole of it is still in the head buffer.
      const all = Buffer.concat(this.head, this.headBytes);
      try {
        const start = this.parseHead(all);
        if (start === undefined) this.unsupported = 'the archive ends inside its TOC';
        else {
          this.inData = true;
          this.data(all.subarray(start));
        }
      } catch (err) {
        this.unsupported = err instanceof Error ? err.message : String(err);
      }
    }
    if (!this.unsupported && (this.state !== 'block' || this.pending.length)) this.unsupported = 'the archive ends inside a data block';
    if (this.unsupported) return { unsupported: this.unsupported };
    return settle(this.tableData);
  }

  /** Parses header and TOC; the position of the first data block, or undefined when more bytes are needed. */
  private parseHead(buf: Buffer): number | undefined {
    const r = new HeadReader(buf);
    try {
      r.need(11);
      if (buf.toString('latin1', 0, 5) !== 'PGDMP') throw new Error('not a custom-format archive');
      const [vmaj, vmin, , intSize, offSize, format] = [buf[5]!, buf[6]!, buf[7]!, buf[8]!, buf[9]!, buf[10]!];
      if (!(SUPPORTED_VERSIONS as readonly string[]).includes(`${vmaj}.${vmin}`)) throw new Error(`archive version ${vmaj}.${vmin} is not one this reader knows`);
      if (format !== 1) throw new Error('not the custom format');
      r.pos = 11;
      r.intSize = intSize;
      this.intSize = intSize;
      const compressed = vmin >= 15 ? r.byte() !== 0 : r.int() !== 0;
      if (compressed) throw new Error('the archive is compressed inside (pg_dump --compress): its rows cannot be counted as it streams');
      for (let i = 0; i < 7; i++) r.int();
      for (let i = 0; i < 3; i++) r.str();
      const count = r.int();
      for (let n = 0; n < count; n++) {
        const dumpId = r.int();
        r.int(); // hadDumper
        r.str(); // tableoid
        r.str(); // oid
        const tag = r.str() ?? '';
        const desc = r.str() ?? '';
        r.int(); // section
        r.str(); // defn
        r.str(); // dropStmt
        r.str(); // copyStmt
        const namespace = r.str() ?? '';
        r.str(); // tablespace
        if (vmin >= 14) r.str(); // tableam
        if (vmin >= 16) r.int(); // relkind
        r.str(); // owner
        r.str(); // with OIDs
        while (r.str() !== null); // dependencies
        r.need(1 + offSize);
        const flag = r.byte();
        r.pos += offSize;
        if (desc === 'TABLE DATA' && flag !== OFFSET_FLAG.noData) this.tableData.set(dumpId, { schema: namespace, table: tag, rows: 0, tail: Buffer.alloc(0) });
      }
      return r.pos;
    } catch (err) {
      if (err instanceof NeedMore) return undefined;
      throw err;
    }
  }

  /** Reads an int from `pending` + `chunk` at `at`; undefined when it does not hold one yet. */
  private data(chunk: Buffer): void {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    const intBytes = 1 + this.intSize;
    const readInt = (): number | undefined => {
      if (at + intBytes > buf.length) return undefined;
      const negative = buf[at] !== 0;
      let value = 0;
      let scale = 1;
      for (let k = 0; k < this.intSize; k++) {
        value += buf[at + 1 + k]! * scale;
        scale *= 256;
      }
      at += intBytes;
      return negative ? -value : value;
    };
    for (;;) {
      if (this.state === 'data') {
        const take = Math.min(this.remaining, buf.length - at);
        if (this.current && take > 0) {
          for (let i = buf.indexOf(10, at); i !== -1 && i < at + take; i = buf.indexOf(10, i + 1)) this.current.rows++;
          this.current.tail = nextTail(this.current.tail, buf.subarray(at, at + take));
        }
        at += take;
        this.remaining -= take;
        if (this.remaining > 0) break;
        this.state = 'len';
        continue;
      }
      if (this.state === 'block') {
        if (at + 1 + intBytes > buf.length) break;
        this.blockType = buf[at++]!;
        const dumpId = readInt()!;
        if (this.blockType !== BLOCK_TYPE.data && this.blockType !== BLOCK_TYPE.blobs) throw new Error(`unknown data block type ${this.blockType}`);
        this.current = this.blockType === BLOCK_TYPE.data ? this.tableData.get(dumpId) : undefined;
        this.state = this.blockType === BLOCK_TYPE.blobs ? 'oid' : 'len';
        continue;
      }
      const value = readInt();
      if (value === undefined) break;
      if (this.state === 'oid') {
        this.state = value === 0 ? 'block' : 'len';
        continue;
      }
      // state 'len'
      if (value < 0) throw new Error(`chunk length ${value} in a data block`);
      if (value === 0) {
        this.state = this.blockType === BLOCK_TYPE.blobs ? 'oid' : 'block';
        continue;
      }
      this.remaining = value;
      this.state = 'data';
    }
    this.pending = Buffer.from(buf.subarray(at));
    buf = Buffer.alloc(0);
  }
}

/**
 * Counts the rows of a directory-format archive's tables before it is restored: the newlines of
 * each TABLE DATA entry's file, `<dumpId>.dat` or `<dumpId>.dat.gz` (pg_backup_directory.c),
 * the entries from the archive's TOC ({@link TocEntry}: `pg_restore --list`).
 * @returns the counts, or why there are none (a file compressed with lz4/zstd, a file missing).
 */
export async function countDirectoryRows(dir: string, toc: TocEntry[]): Promise<ArchiveRowCounts | { unsupported: string }> {
  const tables = new Map<number, Counted>();
  for (const e of toc) {
    if (e.desc !== 'TABLE DATA') continue;
    const plain = path.join(dir, `${e.dumpId}.dat`);
    const gz = `${plain}.gz`;
    const file = (await stat(plain).then(() => plain, () => undefined)) ?? (await stat(gz).then(() => gz, () => undefined));
    if (!file) return { unsupported: `the data file of ${e.schema}.${e.name} (${e.dumpId}.dat) is not there, or is compressed with lz4/zstd` };
    const counted: Counted = { schema: e.schema ?? '', table: e.name, rows: 0, tail: Buffer.alloc(0) };
    const counter = new Writable({
      write(chunk: Buffer, _enc, callback) {
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) counted.rows++;
        counted.tail = nextTail(counted.tail, chunk);
        callback();
      },
    });
    if (file === gz) await pipeline(createReadStream(file), createGunzip(), counter);
    else await pipeline(createReadStream(file), counter);
    tables.set(e.dumpId, counted);
  }
  return settle(tables);
}

/**
 * The row-count problems of `counts` against the manifest's `expected` tables (those restored
 * with their data): one line per table whose archive rows differ, or that has no data in the archive.
 */
export function archiveRowProblems(counts: ArchiveRowCounts, expected: { schema: string; table: string; rows: number }[]): { problems: string[]; tables: { schema: string; table: string; expected: number; actual?: number; ok: boolean }[] } {
  const key = (s: string, t: string) => `${s}\u0000${t}`;
  const found = new Map<string, number>();
  for (const t of counts.tables.values()) found.set(key(t.schema, t.table), (found.get(key(t.schema, t.table)) ?? 0) + t.rows);
  const tables = expected.map((t) => {
    const actual = found.get(key(t.schema, t.table));
    return { schema: t.schema, table: t.table, expected: t.rows, actual, ok: actual === t.rows };
  });
  const problems = tables
    .filter((t) => !t.ok)
    .map((t) => (t.actual === undefined ? `the archive has no data for ${t.schema}.${t.table}, the manifest says ${t.expected} rows` : `row count of ${t.schema}.${t.table} in the archive is ${t.actual}, the manifest says ${t.expected}`));
  return { problems, tables };
}
