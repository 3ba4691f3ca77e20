import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { ArchiveSink } from '../backup/readback.ts';
import { UsageError, messageOf } from '../errors.ts';
import type { PgBinary } from './binaries.ts';
import { workDirOf } from './cluster.ts';
import { writeWithBackpressure } from './processes.ts';

/**
 * Plain SQL from a backup is untrusted: it reaches psql only
 *
 * - once the whole object is known to match its manifest (size and SHA-256) and the SQL ends
 *   with pg_dump's completion line: until then it is held in memory (up to
 *   {@link PLAIN_HOLD_BYTES}) or spooled to a private file, never sent;
 * - behind `\restrict <random key>` as the first line of psql's input ("restricted mode": every
 *   psql meta-command — `\!`, `\o |cmd`, `\g |cmd`, `\copy … program`, `\setenv`, `\lo_export`,
 *   `\i`, … — is refused, except `\unrestrict KEY` with our key, which the content cannot know);
 * - without a `\unrestrict` whose argument psql would expand (psql before 18.6 / 17.11 / 16.15 /
 *   15.19 / 14.24 runs the backquotes of `` \unrestrict `cmd` `` even in restricted mode,
 *   CVE-2026-18408): such SQL is refused before psql starts.
 *
 * pg_dump 13.22 / 14.19 / 15.14 / 16.10 / 17.6 and later write their own `\restrict KEY` before
 * the first statement and `\unrestrict KEY` after the completion line; psql refuses a second
 * `\restrict` in restricted mode, so exactly these two lines are left out of what psql reads.
 * Sources: PostgreSQL release notes 17.6 (CVE-2025-8714, "Restrict psql meta-commands in
 * plain-text dumps"), psql's documentation of `\restrict`.
 */

/** The last line pg_dump writes to a complete plain-format dump. */
export const PLAIN_TRAILER = '-- PostgreSQL database dump complete';

/** Bytes of plain SQL held in memory before it is spooled to a private file: 256 KiB. */
export const PLAIN_HOLD_BYTES = 256 * 1024;

/** The first minor of each major whose psql has `\restrict` (PostgreSQL 18 has it from 18.0). */
const RESTRICT_SINCE: Record<number, number> = { 13: 22, 14: 19, 15: 14, 16: 10, 17: 6 };

/**
 * Whether psql `version` (e.g. `15.18`, `18.1`, `19devel`) has restricted mode (`\restrict`):
 * 13.22, 14.19, 15.14, 16.10, 17.6 and later minors, every 18 and later; never 12 or older.
 */
export function psqlCanRestrict(version: string): boolean {
  const m = /^(\d+)(?:\.(\d+))?/.exec(version);
  if (!m) return false;
  const major = Number(m[1]);
  if (major >= 18) return true;
  const since = RESTRICT_SINCE[major];
  if (since === undefined) return false;
  return m[2] !== undefined && Number(m[2]) >= since;
}

/**
 * Refuses to feed backup content to a psql without restricted mode (see {@link psqlCanRestrict}).
 * `what` names the refused operation, e.g. `restore a plain SQL backup`.
 * @throws UsageError (exit 2) naming the psql found and the fix.
 */
export function requireRestrictedPsql(psql: PgBinary, what: string): void {
  if (psqlCanRestrict(psql.version)) return;
  const wanted = psql.major >= 13 && psql.major <= 17 ? `${psql.major}.${RESTRICT_SINCE[psql.major]} or newer` : '13.22, 14.19, 15.14, 16.10, 17.6, 18 or newer';
  throw new UsageError(
    `cannot ${what}: psql ${psql.version} (${psql.path}) lacks restricted mode (\\restrict), which keeps psql commands in the SQL from running here; install a newer postgresql-client (${wanted}) or point PG_BIN_DIR at one`,
  );
}

/** A fresh restricted-mode key: 64 hex digits from the crypto RNG. Never logged. */
export function restrictKey(): string {
  return randomBytes(32).toString('hex');
}

const UNRESTRICT = Buffer.from('\\unrestrict', 'latin1');
const NEWLINE = 0x0a;

/** An argument byte psql cannot expand: letters, digits, blanks. */
function plainArgByte(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x20 || b === 0x09 || b === 0x0d;
}

/**
 * Finds, in SQL given chunk by chunk, a `\unrestrict` whose rest of line holds anything but
 * letters, digits and blanks (a backquote, a `:variable`, a quote: what psql expands). It looks
 * at the bytes alone, whatever psql's lexer state (inside a string or COPY data too): a false
 * alarm refuses a backup, a miss would run a command.
 */
export class UnrestrictScanner {
  private carry: Buffer = Buffer.alloc(0);
  private inArg = false;
  private argStart = '';
  /** The offending line's start (up to 80 characters), once found. */
  found: string | undefined;

  push(chunk: Buffer): void {
    if (this.found !== undefined) return;
    let buf = chunk;
    let from = 0;
    if (this.inArg) {
      const end = this.checkArg(buf, 0);
      if (end < 0) return;
      from = end;
    } else if (this.carry.length) {
      // A `\unrestrict` cut by the chunk boundary: look at the carry and the chunk's start together.
      buf = Buffer.concat([this.carry, chunk]);
    }
    for (;;) {
      const at = buf.indexOf(UNRESTRICT, from);
      if (at < 0) break;
      this.argStart = '\\unrestrict';
      const end = this.checkArg(buf, at + UNRESTRICT.length);
      if (end < 0) return;
      from = end;
    }
    this.carry = Buffer.from(buf.subarray(Math.max(from, buf.length - (UNRESTRICT.length - 1))));
  }

  /** Checks argument bytes from `i` to the end of the line; -1 when found or the line goes on past `buf`. */
  private checkArg(buf: Buffer, i: number): number {
    for (; i < buf.length; i++) {
      const b = buf[i]!;
      if (b === NEWLINE) {
        this.inArg = false;
        return i + 1;
      }
      if (this.argStart.length < 80) this.argStart += String.fromCharCode(b);
      if (!plainArgByte(b)) {
        this.found = this.argStart;
        for (let j = i + 1; j < buf.length && buf[j] !== NEWLINE && this.found.length < 80; j++) this.found += String.fromCharCode(buf[j]!);
        return -1;
      }
    }
    this.inArg = true;
    this.carry = Buffer.alloc(0);
    return -1;
  }
}

/** Bytes of the SQL's start and end kept to find pg_dump's own `\restrict` / `\unrestrict` lines. */
const EDGE_BYTES = 64 * 1024;

/** Where pg_dump's own restricted-mode lines are in plain SQL, and whether it may reach psql. */
export interface PlainSqlLayout {
  /** Byte ranges [start, end) of the SQL that psql reads, in order. */
  ranges: [number, number][];
  /** Why the SQL must not reach psql (the backup is at fault), or undefined. */
  refusal?: string;
}

/**
 * Lays out plain SQL of `size` bytes for psql from its first and last {@link EDGE_BYTES}: pg_dump's
 * `\restrict KEY` line is left out when it is the first line that is neither blank nor a `--`
 * comment (so never COPY data, whose `\r` may start a line); its `\unrestrict KEY` (the same
 * key) is left out when only blank and comment lines follow pg_dump's completion line up to
 * it and after it. Refuses SQL without the completion line, and SQL where `scanner` found an
 * expandable `\unrestrict`.
 */
export function layoutPlainSql(head: Buffer, tail: Buffer, size: number, scanner: UnrestrictScanner): PlainSqlLayout {
  if (scanner.found !== undefined) {
    return { ranges: [], refusal: `the SQL holds a psql "\\unrestrict" with an argument psql would expand (${JSON.stringify(scanner.found)}): it was not written by pg_dump or was altered; nothing of it ran` };
  }
  const tailText = tail.toString('latin1');
  const trailerAt = tailText.lastIndexOf(PLAIN_TRAILER);
  if (trailerAt < 0) return { ranges: [], refusal: `the SQL does not end with "${PLAIN_TRAILER}": the dump is truncated` };
  let key: string | undefined;
  let skipHead: [number, number] | undefined;
  const headText = head.toString('latin1');
  let pos = 0;
  while (pos < headText.length) {
    const nl = headText.indexOf('\n', pos);
    if (nl < 0) break;
    const line = headText.slice(pos, nl).replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('--')) {
      pos = nl + 1;
      continue;
    }
    const m = /^\\restrict ([A-Za-z0-9]+)$/.exec(line);
    if (m) {
      key = m[1];
      skipHead = [pos, nl + 1];
    }
    break;
  }
  let skipTail: [number, number] | undefined;
  if (key) {
    const tailStart = size - tail.length;
    let at = tailText.indexOf('\n', trailerAt);
    while (at >= 0 && at + 1 < tailText.length) {
      const nl = tailText.indexOf('\n', at + 1);
      const end = nl < 0 ? tailText.length : nl;
      const line = tailText.slice(at + 1, end).replace(/\r$/, '');
      if (line === `\\unrestrict ${key}` && !skipTail) skipTail = [tailStart + at + 1, tailStart + Math.min(end + 1, tailText.length)];
      else if (line.trim() !== '' && !line.startsWith('--')) {
        skipTail = undefined; // SQL after it: leave the line in, psql refuses it
        break;
      }
      if (nl < 0) break;
      at = nl;
    }
    if (skipHead && skipTail && skipTail[0] < skipHead[1]) skipTail = undefined;
  }
  const cuts = [skipHead, skipTail].filter((c): c is [number, number] => c !== undefined);
  const ranges: [number, number][] = [];
  let from = 0;
  for (const [s, e] of cuts) {
    if (s > from) ranges.push([from, s]);
    from = e;
  }
  if (from < size) ranges.push([from, size]);
  return { ranges };
}

/** The program that replays the SQL (psql reading stdin). */
export interface SqlReplay {
  stdin: Writable;
  /** Resolves on exit code 0; rejects with the program's reason. */
  done: Promise<void>;
  /** Stops it before it can commit. */
  stop(): void;
}

/** Plain SQL refused before psql started: the backup is at fault. */
export class PlainSqlRefusal extends Error {}

/** Where the SQL to replay is: in memory, or a spooled (or downloaded) file. */
export type PlainSqlSource = { buffer: Buffer } | { file: string };

/**
 * Writes `\restrict KEY` and then `layout`'s ranges of `source` into `replay`'s stdin, and waits
 * for it. Rejects with the program's reason (its own `done`).
 */
export async function feedRestricted(replay: SqlReplay, source: PlainSqlSource, layout: PlainSqlLayout): Promise<void> {
  const { stdin } = replay;
  stdin.on('error', () => undefined); // EPIPE: psql stopped reading; its exit status tells why
  const chunks = async function* () {
    yield Buffer.from(`\\restrict ${restrictKey()}\n`, 'latin1');
    for (const [start, end] of layout.ranges) {
      if ('buffer' in source) yield source.buffer.subarray(start, end);
      else if (end > start) yield* createReadStream(source.file, { start, end: end - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>;
    }
  };
  let feedError: unknown;
  const fed = (async () => {
    for await (const chunk of chunks()) {
      if (stdin.destroyed) return; // psql exited: its status tells why
      await writeWithBackpressure(stdin, chunk);
    }
    if (!stdin.destroyed) stdin.end();
  })().catch((err: unknown) => {
    // Reading the SQL failed: psql is killed BEFORE its input closes, so it never commits a part.
    feedError = err;
    replay.stop();
    stdin.destroy();
  });
  try {
    await replay.done;
  } catch (err) {
    stdin.destroy();
    await fed;
    throw feedError instanceof Error ? feedError : err;
  }
  await fed;
  if (feedError) throw feedError instanceof Error ? feedError : new Error(messageOf(feedError));
}

/**
 * Lays out and replays a plain SQL file already checked against its manifest (a drill's
 * download): the file is read once to find an expandable `\unrestrict`, then fed to `replay`
 * behind `\restrict`. @throws PlainSqlRefusal when the SQL may not reach psql (`replay` is then
 * never started); the program's reason otherwise.
 */
export async function replayPlainFile(file: string, start: () => SqlReplay, signal?: AbortSignal): Promise<void> {
  const scanner = new UnrestrictScanner();
  const head: Buffer[] = [];
  let headBytes = 0;
  let tail: Buffer = Buffer.alloc(0);
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024, signal }) as AsyncIterable<Buffer>) {
    scanner.push(chunk);
    if (headBytes < EDGE_BYTES) {
      head.push(chunk.subarray(0, EDGE_BYTES - headBytes));
      headBytes += Math.min(chunk.length, EDGE_BYTES - headBytes);
    }
    tail = keepTail(tail, chunk);
    size += chunk.length;
  }
  const layout = layoutPlainSql(Buffer.concat(head), tail, size, scanner);
  if (layout.refusal) throw new PlainSqlRefusal(layout.refusal);
  await feedRestricted(start(), { file }, layout);
}

function keepTail(tail: Buffer, chunk: Buffer): Buffer {
  if (chunk.length >= EDGE_BYTES) return Buffer.from(chunk.subarray(chunk.length - EDGE_BYTES));
  const joined = Buffer.concat([tail, chunk]);
  return joined.length > EDGE_BYTES ? joined.subarray(joined.length - EDGE_BYTES) : joined;
}

/** What {@link plainSqlGate} returns: an {@link ArchiveSink} and why it refused, if it did. */
export interface PlainSqlGate extends ArchiveSink {
  /** Why the SQL was refused before psql started (the backup is at fault), once `done` rejected. */
  refusal(): string | undefined;
  /** Whether the replay program was started. */
  started(): boolean;
}

/**
 * The sink for streamed plain SQL: it takes the decompressed SQL without sending any of it on.
 * Up to {@link PLAIN_HOLD_BYTES} stay in memory; beyond that everything is spooled to a private
 * file (mode 0600 in a `mkdtemp` directory of mode 0700 under `workDir`, default
 * `PG_BACKUP_WORK_DIR` or the temp dir). Its end — which a read-back gives only once the
 * object matched its manifest ({@link streamBackup}) — lays the SQL out ({@link layoutPlainSql})
 * and only then starts `start()` and feeds it ({@link feedRestricted}). Destroyed before its end,
 * it stops the program if it runs. The spool directory is removed on every path.
 */
export function plainSqlGate(start: () => SqlReplay, options: { workDir?: string } = {}): PlainSqlGate {
  const scanner = new UnrestrictScanner();
  const held: Buffer[] = [];
  let heldBytes = 0;
  let size = 0;
  const head: Buffer[] = [];
  let headBytes = 0;
  let tail: Buffer = Buffer.alloc(0);
  let spoolDir: string | undefined;
  let spoolFile: string | undefined;
  let spool: FileHandle | undefined;
  let replay: SqlReplay | undefined;
  let refused: string | undefined;
  let settle!: (err?: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  done.catch(() => undefined);
  const removeSpool = async () => {
    const dir = spoolDir;
    spoolDir = undefined;
    await spool?.close().catch(() => undefined);
    spool = undefined;
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  };
  const openSpool = async () => {
    spoolDir = await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-sql-'));
    spoolFile = path.join(spoolDir, 'dump.sql');
    spool = await open(spoolFile, 'wx', 0o600);
  };
  const stream = new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _enc, callback) {
      scanner.push(chunk);
      size += chunk.length;
      if (headBytes < EDGE_BYTES) {
        head.push(Buffer.from(chunk.subarray(0, EDGE_BYTES - headBytes)));
        headBytes += Math.min(chunk.length, EDGE_BYTES - headBytes);
      }
      tail = keepTail(tail, chunk);
      if (!spool && heldBytes + chunk.length <= PLAIN_HOLD_BYTES) {
        held.push(chunk);
        heldBytes += chunk.length;
        return callback();
      }
      void (async () => {
        if (!spool) {
          await openSpool();
          for (const b of held.splice(0)) await spool!.write(b);
          heldBytes = 0;
        }
        await spool!.write(chunk);
      })().then(
        () => callback(),
        (err: NodeJS.ErrnoException) => callback(new Error(err.code === 'ENOSPC' ? `${workDirOf(options.workDir)} ran out of space (ENOSPC) while spooling the SQL: free space or choose another --work-dir` : messageOf(err))),
      );
    },
    final(callback) {
      void (async () => {
        await spool?.close();
        spool = undefined;
        const layout = layoutPlainSql(Buffer.concat(head), tail, size, scanner);
        if (layout.refusal) {
          refused = layout.refusal;
          throw new PlainSqlRefusal(layout.refusal);
        }
        replay = start();
        await feedRestricted(replay, spoolFile ? { file: spoolFile } : { buffer: Buffer.concat(held) }, layout);
      })().then(
        async () => {
          await removeSpool();
          settle();
          callback();
        },
        async (err: Error) => {
          await removeSpool();
          settle(err);
          callback(err);
        },
      );
    },
    destroy(err, callback) {
      if (!this.writableFinished) replay?.stop();
      void removeSpool().then(() => {
        settle(new Error('the SQL read was stopped before the end'));
        callback(err);
      });
    },
  });
  return { stream, done, refusal: () => refused, started: () => replay !== undefined };
}

/**
 * The reason for a psql failure caused by restricted mode, from its stderr (`psql:<stdin>:N:
 * error: backslash commands are restricted…` or `\unrestrict: wrong key`): the backup is at
 * fault. Undefined for any other failure.
 */
export function restrictedModeReason(stderr: string): string | undefined {
  const m = /psql:[^\n]*?:(\d+): error: (?:backslash commands are restricted|\\unrestrict: wrong key)/.exec(stderr);
  if (!m) return undefined;
  return `the SQL holds a psql meta-command (line ${m[1]} of psql's input) that restricted mode refused, so nothing of it ran here: this backup was not written by pg_dump as it is, or was altered since`;
}
