import { open, type FileHandle } from 'node:fs/promises';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';

/**
 * Data offsets for a custom-format archive that pg_dump wrote through a pipe.
 *
 * pg_dump writes a custom archive as header → TOC → data blocks. Each TOC entry ends with the
 * file position of its data block; pg_dump only knows those positions after the data is written,
 * so when its output is seekable it writes the TOC a second time, in place, at the end
 * (pg_backup_custom.c `_CloseArchive`). Through a pipe (`pg_dump -Fc | zstd`) it cannot, and
 * every entry with data keeps the flag `K_OFFSET_POS_NOT_SET`: `pg_restore --jobs` then makes
 * each worker read through the data blocks before its own (`_PrintTocData` → `_skipData`).
 * {@link writeDataOffsets} does what pg_dump would have done, on a local copy of the archive.
 *
 * Layout, from src/bin/pg_dump/pg_backup_archiver.c (`ReadHead`, `ReadToc`, `ReadInt`,
 * `ReadStr`, `ReadOffset`) and pg_backup_custom.c (`_ReadExtraToc`, `_readBlockHeader`,
 * `_skipData`, `_skipLOs`), archive versions 1.13 (PostgreSQL 11) to 1.16 (PostgreSQL 17):
 *
 * - header: `PGDMP`, version major/minor/revision bytes, intSize byte, offSize byte, format byte
 *   (1 = custom); compression: one algorithm byte from 1.15 (0 none, 1 gzip, 2 lz4, 3 zstd),
 *   before that an int level; 7 ints (creation time), 3 strings (database, server version,
 *   pg_dump version);
 * - int: a sign byte (non-zero = negative) then intSize bytes, least significant first;
 * - string: an int length (negative = NULL) then that many bytes;
 * - TOC: an int count, then per entry: dumpId int, hadDumper int, tableoid, oid, tag, desc
 *   strings, section int, defn, dropStmt, copyStmt, namespace, tablespace strings, tableam
 *   string (1.14+), relkind int (1.16+), owner and "with OIDs" strings, dependency strings up to
 *   a NULL, then the data offset: a flag byte (1 = not set, 2 = set, 3 = no data) and offSize
 *   bytes, least significant first;
 * - data: per entry with data a block: type byte (1 = BLK_DATA, 3 = BLK_BLOBS), dumpId int, then
 *   for BLK_DATA length-prefixed chunks (int length, bytes) ended by a 0 length; for BLK_BLOBS,
 *   per large object its OID int and such chunks, ended by a 0 OID; blocks run to the end of the
 *   file. Chunks are length-prefixed whatever the compression inside the archive (the compressor
 *   writes through `_CustomWriteFunc`), so blocks can be skipped without decompressing them.
 *
 * The offset recorded for an entry is the position of its block's type byte (`_StartData`,
 * `_StartLOs`).
 */

/** `K_OFFSET_POS_NOT_SET`, `K_OFFSET_POS_SET`, `K_OFFSET_NO_DATA` (pg_backup_archiver.h). */
export const OFFSET_FLAG = { notSet: 1, set: 2, noData: 3 } as const;
/** Data block types (pg_backup_custom.c `BLK_DATA`, `BLK_BLOBS`). */
export const BLOCK_TYPE = { data: 1, blobs: 3 } as const;
/** The archive versions this parser reads, as `major.minor` (1.13: PostgreSQL 11 … 1.16: 17). */
export const SUPPORTED_VERSIONS = ['1.13', '1.14', '1.15', '1.16'] as const;

const MAGIC = Buffer.from('PGDMP', 'latin1');
const FORMAT_CUSTOM = 1;
/**
 * Read size of the data scan: pg_dump -Z0 writes one chunk per COPY row, so never a read per
 * chunk. 1 MiB: the drill's peak RSS on a 10 GB archive was 128 MiB with 8 MiB reads, 107–108
 * MiB with 1 MiB reads (and MALLOC_ARENA_MAX=2), at the same scan time.
 */
const SCAN_BUFFER_BYTES = 1024 * 1024;

/** One TOC entry as far as data offsets go. */
export interface ArchiveTocEntry {
  /** pg_dump's dump ID (positive). */
  dumpId: number;
  /** The entry's `desc` (`TABLE DATA`, `BLOBS`, `SEQUENCE SET`, …). */
  desc: string;
  /** The entry's tag (object name). */
  tag: string;
  /** The data offset flag: {@link OFFSET_FLAG}. */
  offsetFlag: number;
  /** The recorded offset in bytes (meaningful when `offsetFlag` is `set`). */
  offset: number;
  /** File position of the entry's offset flag byte (followed by `offSize` offset bytes). */
  flagPosition: number;
}

/** Header and TOC of a custom-format archive. */
export interface ArchiveToc {
  /** Archive version, e.g. `1.14`. */
  version: string;
  /** Bytes of an int after its sign byte. */
  intSize: number;
  /** Bytes of a data offset after its flag byte. */
  offSize: number;
  /** Compression inside the archive: an algorithm name (1.15+) or `level N` (before). */
  compression: string;
  /** The TOC entries, in archive order. */
  entries: ArchiveTocEntry[];
  /** File position just after the TOC: the first data block (bytes). */
  dataStart: number;
}

/** What {@link writeDataOffsets} did. */
export interface DataOffsetsResult {
  /** TOC entries whose offset was written (0 when refused or when nothing lacked an offset). */
  patched: number;
  /** Why nothing was written, when nothing was (a surprise in the archive, or no entry to patch). */
  reason?: string;
  /** Data blocks found in the archive. */
  blocks: number;
}

/** A surprise in the archive: the reason it is left as it is. */
export class ArchiveLayoutError extends Error {
  override name = 'ArchiveLayoutError';
}

/** Buffered positional reader: large reads, synchronous getters between refills. */
class Cursor {
  private buf: Buffer;
  /** File position of buf[0]. */
  private start = 0;
  /** Valid bytes in buf. */
  private end = 0;
  /** Current file position. */
  pos: number;
  private readonly fh: FileHandle;
  /** File size in bytes. */
  readonly size: number;
  /** Bytes of an int after its sign byte. */
  readonly intSize: number;

  constructor(fh: FileHandle, size: number, pos: number, bufferBytes: number, intSize: number) {
    this.fh = fh;
    this.size = size;
    this.intSize = intSize;
    this.buf = Buffer.allocUnsafe(bufferBytes);
    this.pos = pos;
  }

  /** Whether `n` bytes from `pos` are in the buffer. */
  has(n: number): boolean {
    return this.pos >= this.start && this.pos + n <= this.start + this.end;
  }

  /** Makes `n` bytes from `pos` available; throws at the end of the file. */
  async fill(n: number, what: string): Promise<void> {
    if (this.has(n)) return;
    if (this.pos + n > this.size) throw new ArchiveLayoutError(`the archive ends inside ${what} (at byte ${this.pos} of ${this.size}): truncated`);
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    const want = Math.min(this.buf.length, this.size - this.pos);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(this.buf, got, want - got, this.pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.start = this.pos;
    this.end = got;
    if (got < n) throw new ArchiveLayoutError(`the archive ends inside ${what} (at byte ${this.pos + got}): truncated`);
  }

  byte(): number {
    return this.buf[this.pos++ - this.start]!;
  }

  /** `ReadInt`: sign byte + intSize bytes, least significant first (call after fill(1 + intSize)). */
  int(): number {
    let i = this.pos - this.start;
    const negative = this.buf[i++] !== 0;
    let value = 0;
    let scale = 1;
    for (let k = 0; k < this.intSize; k++) {
      value += this.buf[i++]! * scale;
      scale *= 256;
    }
    this.pos += 1 + this.intSize;
    if (value > Number.MAX_SAFE_INTEGER) throw new ArchiveLayoutError(`an integer at byte ${this.pos - 1 - this.intSize} exceeds 2^53: a corrupt archive`);
    return negative ? -value : value;
  }

  async readInt(what: string): Promise<number> {
    if (!this.has(1 + this.intSize)) await this.fill(1 + this.intSize, what);
    return this.int();
  }

  /** `ReadStr`: an int length (negative: NULL) and its bytes; the text only when `keep`. */
  async readStr(what: string, keep = false): Promise<string | null> {
    const len = await this.readInt(what);
    if (len < 0) return null;
    if (!keep) {
      if (this.pos + len > this.size) throw new ArchiveLayoutError(`the archive ends inside ${what} (at byte ${this.pos} of ${this.size}): truncated`);
      this.pos += len;
      return '';
    }
    if (len > 1024 * 1024) throw new ArchiveLayoutError(`${what} is ${len} bytes long: not a TOC`);
    await this.fill(len, what);
    const text = this.buf.toString('utf8', this.pos - this.start, this.pos - this.start + len);
    this.pos += len;
    return text;
  }
}

/** Reads the header and the TOC (the `ReadHead` + `ReadToc` part of pg_restore). */
async function readToc(fh: FileHandle, size: number): Promise<ArchiveToc> {
  const head = Buffer.alloc(11);
  const { bytesRead } = await fh.read(head, 0, head.length, 0);
  if (bytesRead < head.length) throw new ArchiveLayoutError(`the file is ${size} bytes long: too short for a custom-format archive header`);
  if (!head.subarray(0, 5).equals(MAGIC)) throw new ArchiveLayoutError('the file does not start with PGDMP: not a custom-format archive');
  const [vmaj, vmin, vrev, intSize, offSize, format] = [head[5]!, head[6]!, head[7]!, head[8]!, head[9]!, head[10]!];
  const version = `${vmaj}.${vmin}`;
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new ArchiveLayoutError(`archive version ${version}.${vrev} is not one this parser knows (${SUPPORTED_VERSIONS.join(', ')})`);
  }
  if (format !== FORMAT_CUSTOM) throw new ArchiveLayoutError(`archive format byte ${format} is not the custom format (1)`);
  if (intSize < 1 || intSize > 8) throw new ArchiveLayoutError(`integer size ${intSize} bytes is outside 1–8`);
  if (offSize < 1 || offSize > 8) throw new ArchiveLayoutError(`offset size ${offSize} bytes is outside 1–8`);
  const minor = vmin;
  const c = new Cursor(fh, size, head.length, 1024 * 1024, intSize);

  let compression: string;
  if (minor >= 15) {
    await c.fill(1, 'the compression byte');
    const algorithm = c.byte();
    const names = ['none', 'gzip', 'lz4', 'zstd'];
    if (algorithm >= names.length) throw new ArchiveLayoutError(`compression algorithm ${algorithm} is unknown`);
    compression = names[algorithm]!;
  } else {
    compression = `level ${await c.readInt('the compression level')}`;
  }
  for (let i = 0; i < 7; i++) await c.readInt('the creation time');
  for (const what of ['the database name', 'the server version', 'the pg_dump version']) await c.readStr(what);

  const count = await c.readInt('the TOC entry count');
  if (count < 0 || count > 100_000_000) throw new ArchiveLayoutError(`TOC entry count ${count} is out of range`);
  const entries: ArchiveTocEntry[] = [];
  for (let n = 0; n < count; n++) {
    const where = `TOC entry ${n + 1} of ${count}`;
    const dumpId = await c.readInt(where);
    if (dumpId <= 0) throw new ArchiveLayoutError(`${where} has dump ID ${dumpId}: a corrupt TOC`);
    await c.readInt(where); // hadDumper
    await c.readStr(where); // tableoid
    await c.readStr(where); // oid
    const tag = (await c.readStr(where, true)) ?? '';
    const desc = (await c.readStr(where, true)) ?? '';
    await c.readInt(where); // section
    for (let s = 0; s < 5; s++) await c.readStr(where); // defn, dropStmt, copyStmt, namespace, tablespace
    if (minor >= 14) await c.readStr(where); // tableam
    if (minor >= 16) await c.readInt(where); // relkind
    await c.readStr(where); // owner
    await c.readStr(where); // "with OIDs"
    for (let d = 0; ; d++) {
      if (d > 1_000_000) throw new ArchiveLayoutError(`${where} lists more than a million dependencies: a corrupt TOC`);
      if ((await c.readStr(where)) === null) break;
    }
    await c.fill(1 + offSize, where);
    const flagPosition = c.pos;
    const offsetFlag = c.byte();
    if (offsetFlag !== OFFSET_FLAG.notSet && offsetFlag !== OFFSET_FLAG.set && offsetFlag !== OFFSET_FLAG.noData) {
      throw new ArchiveLayoutError(`${where} (${desc} ${tag}) has data offset flag ${offsetFlag}: a corrupt TOC`);
    }
    let offset = 0;
    let scale = 1;
    for (let k = 0; k < offSize; k++) {
      offset += c.byte() * scale;
      scale *= 256;
    }
    entries.push({ dumpId, desc, tag, offsetFlag, offset, flagPosition });
  }
  return { version: `${version}.${vrev}`, intSize, offSize, compression, entries, dataStart: c.pos };
}

/**
 * Reads a custom-format archive's header and TOC.
 * @param file - path of a custom-format archive (pg_dump -Fc).
 * @throws ArchiveLayoutError for anything that is not a custom archive of a version in
 *   {@link SUPPORTED_VERSIONS} (or is truncated inside its TOC); file system errors as they come.
 */
export async function readArchiveToc(file: string): Promise<ArchiveToc> {
  const fh = await open(file, 'r');
  try {
    return await readToc(fh, (await fh.stat()).size);
  } finally {
    await fh.close();
  }
}

/** Scans the data blocks from `toc.dataStart` to the end of the file: the position of each block header by dump ID. */
async function scanBlocks(fh: FileHandle, size: number, toc: ArchiveToc, signal?: AbortSignal): Promise<Map<number, number>> {
  const c = new Cursor(fh, size, toc.dataStart, SCAN_BUFFER_BYTES, toc.intSize);
  const positions = new Map<number, number>();
  const intBytes = 1 + toc.intSize;
  while (c.pos < size) {
    signal?.throwIfAborted();
    const blockPosition = c.pos;
    await c.fill(1 + intBytes, `the data block header at byte ${blockPosition}`);
    const type = c.byte();
    const dumpId = c.int();
    if (type !== BLOCK_TYPE.data && type !== BLOCK_TYPE.blobs) throw new ArchiveLayoutError(`unknown data block type ${type} at byte ${blockPosition}`);
    if (positions.has(dumpId)) throw new ArchiveLayoutError(`dump ID ${dumpId} has two data blocks (bytes ${positions.get(dumpId)} and ${blockPosition})`);
    positions.set(dumpId, blockPosition);
    const what = `the data block of dump ID ${dumpId} (from byte ${blockPosition})`;
    // BLK_BLOBS: (OID, chunks)* then a 0 OID; BLK_DATA: one run of chunks.
    for (let objects = 0; ; objects++) {
      if (type === BLOCK_TYPE.blobs) {
        if (!c.has(intBytes)) await c.fill(intBytes, what);
        const oid = c.int();
        if (oid === 0) break;
        if (oid < 0) throw new ArchiveLayoutError(`large object OID ${oid} in ${what}`);
      } else if (objects === 1) break;
      // _skipData: int lengths and their bytes up to a 0 length.
      for (;;) {
        if (!c.has(intBytes)) {
          signal?.throwIfAborted();
          await c.fill(intBytes, what);
        }
        const len = c.int();
        if (len === 0) break;
        if (len < 0) throw new ArchiveLayoutError(`chunk length ${len} at byte ${c.pos - intBytes} in ${what}`);
        c.pos += len;
        if (c.pos > size) throw new ArchiveLayoutError(`the archive ends inside ${what}: truncated`);
      }
    }
  }
  return positions;
}

/** Offset bytes: `value` in `offSize` bytes, least significant first (`WriteOffset`). */
function offsetBytes(value: number, offSize: number): Buffer {
  const bytes = Buffer.alloc(offSize);
  let rest = value;
  for (let k = 0; k < offSize; k++) {
    bytes[k] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  return bytes;
}

/**
 * Writes the data offsets into a custom-format archive that lacks them (dumped through a pipe),
 * in place, as pg_dump does when its output is seekable (pg_backup_custom.c `_CloseArchive`
 * rewrites the TOC after the data): every TOC entry whose offset flag is `K_OFFSET_POS_NOT_SET`
 * gets `K_OFFSET_POS_SET` and the position of its data block, so `pg_restore --jobs` seeks to
 * each table's data instead of reading through the blocks before it. Nothing else in the file
 * changes; its size never does.
 *
 * Reads the header and TOC, then every data block header and chunk length (1 MiB reads, chunk
 * payloads skipped by arithmetic; about one pass over the file). Any surprise — not a custom
 * archive, a version outside {@link SUPPORTED_VERSIONS}, a truncated file, an unknown block type,
 * a block whose dump ID is not in the TOC or appears twice, an entry marked as having data
 * without a block, an offset that does not fit in the archive's offset size — writes nothing and
 * returns `{ patched: 0, reason }`: pg_restore then reads the archive as before. Writes happen
 * only once everything is computed: first all offset bytes (ignored while the flag says "not
 * set"), then the flag bytes, so the file is a valid archive at every moment.
 *
 * Only for a scratch copy (the drill's download): never run it on a user's file.
 * @param file - path of the archive (read and written).
 * @param signal - aborts the scan (then nothing is written).
 * @returns the entries patched (0 when every entry with data already had its offset) and the data blocks found.
 * @throws `signal.reason` when aborted; file system errors (open, read, write) as they come.
 */
export async function writeDataOffsets(file: string, signal?: AbortSignal): Promise<DataOffsetsResult> {
  signal?.throwIfAborted();
  const fh = await open(file, 'r+');
  try {
    const size = (await fh.stat()).size;
    let toc: ArchiveToc;
    let positions: Map<number, number>;
    try {
      toc = await readToc(fh, size);
      positions = await scanBlocks(fh, size, toc, signal);
    } catch (err) {
      if (err instanceof ArchiveLayoutError) return { patched: 0, blocks: 0, reason: err.message };
      throw err;
    }
    const byId = new Map(toc.entries.map((e) => [e.dumpId, e]));
    for (const [dumpId, position] of positions) {
      const entry = byId.get(dumpId);
      if (!entry) return { patched: 0, blocks: positions.size, reason: `the data block at byte ${position} has dump ID ${dumpId}, which the TOC does not list` };
      if (entry.offsetFlag === OFFSET_FLAG.noData) return { patched: 0, blocks: positions.size, reason: `TOC entry ${dumpId} (${entry.desc} ${entry.tag}) is marked as having no data, but has a block at byte ${position}` };
      if (entry.offsetFlag === OFFSET_FLAG.set && entry.offset !== position) {
        return { patched: 0, blocks: positions.size, reason: `TOC entry ${dumpId} (${entry.desc} ${entry.tag}) records offset ${entry.offset}, but its block is at byte ${position}` };
      }
    }
    const patches: { entry: ArchiveTocEntry; position: number }[] = [];
    for (const entry of toc.entries) {
      if (entry.offsetFlag !== OFFSET_FLAG.notSet) continue;
      const position = positions.get(entry.dumpId);
      if (position === undefined) return { patched: 0, blocks: positions.size, reason: `TOC entry ${entry.dumpId} (${entry.desc} ${entry.tag}) has data but no data block in the archive` };
      if (toc.offSize < 8 && position >= 2 ** (8 * toc.offSize)) return { patched: 0, blocks: positions.size, reason: `offset ${position} does not fit in the archive's ${toc.offSize}-byte offsets` };
      patches.push({ entry, position });
    }
    if (patches.length === 0) return { patched: 0, blocks: positions.size, reason: positions.size ? 'every TOC entry with data already has its offset' : 'the archive has no data blocks' };
    signal?.throwIfAborted();
    // Offsets first (pg_restore ignores them while the flag says "not set"), then the flags.
    for (const { entry, position } of patches) await writeAll(fh, offsetBytes(position, toc.offSize), entry.flagPosition + 1);
    const flag = Buffer.from([OFFSET_FLAG.set]);
    for (const { entry } of patches) await writeAll(fh, flag, entry.flagPosition);
    return { patched: patches.length, blocks: positions.size };
  } finally {
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, bytes: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * {@link writeDataOffsets} for the drill's downloaded copy of a custom archive, with one log
 * line: `data offsets: written for N TOC entries in 0.4 s (…)`, or `data offsets not written:
 * <reason>; pg_restore will scan the archive`. A refusal or a file system error is not a drill
 * failure: pg_restore reads an archive without offsets as before, only slower with `--jobs`.
 * @returns the time spent, in ms.
 * @throws `signal.reason` when aborted.
 */
export async function addDataOffsets(file: string, log: Logger, signal?: AbortSignal): Promise<number> {
  const start = Date.now();
  let result: DataOffsetsResult;
  try {
    result = await writeDataOffsets(file, signal);
  } catch (err) {
    signal?.throwIfAborted();
    result = { patched: 0, blocks: 0, reason: messageOf(err) };
  }
  const ms = Date.now() - start;
  const took = `${(ms / 1000).toFixed(2)} s`;
  if (result.patched > 0) log.debug?.(`data offsets: written for ${result.patched} TOC entr${result.patched === 1 ? 'y' : 'ies'} in ${took} (the archive was dumped through a pipe; pg_restore --jobs now seeks to each table's data)`);
  else if (result.blocks > 0 && result.reason?.startsWith('every TOC entry')) log.debug?.(`data offsets: already in the archive (checked in ${took})`);
  else log.debug?.(`data offsets not written: ${result.reason ?? 'no reason given'}; pg_restore will scan the archive`);
  return ms;
}
