import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { finished } from 'node:stream/promises';
import { terminalText } from '../text/sinks.ts';
import { writeWithBackpressure } from './processes.ts';

/**
 * SQL text for values and names read from a backup or a live database (both untrusted): every
 * identifier double-quoted, every value a string literal, so nothing in a value can end a
 * literal, start a statement or a psql meta-command. The repair script sets
 * `standard_conforming_strings = on` before its first literal (PostgreSQL docs, "String
 * Constants", 4.1.2.1: with it on, a backslash in `'…'` is an ordinary character), so a literal
 * is `'…'` with `'` doubled — never `E'…'`. A value or name holding a control character, a bidi
 * control or a line separator (which a reviewer would not see, and which psql's line reading
 * could alter) is written as a Unicode escape string instead (`U&'…\000A…'`, 4.1.2.3; it needs
 * standard_conforming_strings on, which the script sets), so the script is plain printable text.
 */

/** Characters never written raw into the script: C0, DEL, C1, ALM, LRM, RLM, line/paragraph separators, bidi embeddings, overrides and isolates (as src/text/sinks.ts). */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
// eslint-disable-next-line no-control-regex
const UNSAFE_ALL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

function unicodeEscaped(text: string, quote: "'" | '"'): string {
  const body = text
    .replace(/\\/g, '\\\\')
    .replace(quote === "'" ? /'/g : /"/g, quote + quote)
    .replace(UNSAFE_ALL, (c) => `\\${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`);
  return `U&${quote}${body}${quote}`;
}

/**
 * A string literal holding `value` exactly, or `NULL`: `'it''s'`; with a control character
 * `U&'a\000Ab'`. Valid with `standard_conforming_strings = on` (which the repair script sets).
 * The literal has no type of its own (`unknown`), so PostgreSQL reads it with the input function
 * of the column it is assigned to or compared with.
 */
export function sqlLiteral(value: string | null): string {
  if (value === null) return 'NULL';
  if (UNSAFE.test(value)) return unicodeEscaped(value, "'");
  return `'${value.replace(/'/g, "''")}'`;
}

/** A double-quoted identifier: `"order ""lines"""`; with a control character `U&"a\000Ab"`. */
export function sqlIdent(name: string): string {
  if (UNSAFE.test(name)) return unicodeEscaped(name, '"');
  return `"${name.replace(/"/g, '""')}"`;
}

/** `"schema"."table"`. */
export function sqlQualified(schema: string, table: string): string {
  return `${sqlIdent(schema)}.${sqlIdent(table)}`;
}

/** A `-- ` comment line for text that may come from a backup or a database: one line, control characters shown escaped ({@link terminalText}). */
export function sqlComment(text: string): string {
  return `-- ${terminalText(text)}\n`;
}

/** Bytes gathered before one write to a part file. */
const FLUSH_BYTES = 64 * 1024;

/** One part of the script being written: a file in the same directory, appended to with backpressure. */
class PartFile {
  readonly path: string;
  readonly stream: WriteStream;
  private buffered: string[] = [];
  private size = 0;
  statements = 0;
  constructor(file: string) {
    this.path = file;
    this.stream = createWriteStream(file, { flags: 'wx', mode: 0o600 });
    this.stream.on('error', () => undefined); // surfaced by finished() in close()
  }
  async add(text: string): Promise<void> {
    this.buffered.push(text);
    this.size += text.length;
    if (this.size >= FLUSH_BYTES) await this.flush();
  }
  async flush(): Promise<void> {
    if (!this.buffered.length) return;
    const chunk = Buffer.from(this.buffered.join(''), 'utf8');
    this.buffered = [];
    this.size = 0;
    await writeWithBackpressure(this.stream, chunk);
  }
  async close(): Promise<void> {
    await this.flush();
    this.stream.end();
    await finished(this.stream);
  }
}

/**
 * A repair script written in bounded memory and put in place atomically: its statements go to
 * three part files beside the target (DELETEs, UPDATEs, INSERTs: run in that order, so a row
 * deleted or updated frees a unique value an INSERT may need), which {@link commit} joins with
 * the header and footer into a temp file that is then renamed onto `file`. {@link discard}
 * removes every part: a failed diff leaves no file behind, and never half a script.
 */
export class RepairScript {
  readonly file: string;
  private readonly stem: string;
  readonly deletes: PartFile;
  readonly updates: PartFile;
  readonly inserts: PartFile;

  private constructor(file: string) {
    this.file = path.resolve(file);
    this.stem = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${randomBytes(4).toString('hex')}`);
    this.deletes = new PartFile(`${this.stem}.delete`);
    this.updates = new PartFile(`${this.stem}.update`);
    this.inserts = new PartFile(`${this.stem}.insert`);
  }

  /** Opens the part files beside `file` (its directory must exist and be writable). */
  static async create(file: string): Promise<RepairScript> {
    const script = new RepairScript(file);
    await Promise.all([script.deletes, script.updates, script.inserts].map((p) => new Promise<void>((resolve, reject) => {
      p.stream.once('open', () => resolve());
      p.stream.once('error', reject);
    }))).catch(async (err: unknown) => {
      await script.discard();
      throw err;
    });
    return script;
  }

  /**
   * Closes the parts and writes `header` + BEGIN + DELETEs + UPDATEs + INSERTs + `beforeCommit`
   * + COMMIT into a temp file (mode 0600), fsyncs it, and renames it onto {@link file}.
   */
  async commit(header: string, beforeCommit: string): Promise<void> {
    await Promise.all([this.deletes.close(), this.updates.close(), this.inserts.close()]);
    const temp = `${this.stem}.sql`;
    try {
      const stream = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
      stream.on('error', () => undefined); // surfaced by finished()
      await writeWithBackpressure(stream, Buffer.from(`${header}BEGIN;\n`, 'utf8'));
      for (const part of [this.deletes, this.updates, this.inserts]) {
        for await (const chunk of createReadStream(part.path)) await writeWithBackpressure(stream, chunk as Buffer);
      }
      await writeWithBackpressure(stream, Buffer.from(`${beforeCommit}COMMIT;\n`, 'utf8'));
      stream.end();
      await finished(stream);
      const fh = await open(temp, 'r+');
      await fh.sync().finally(() => fh.close());
    } catch (err) {
      await rm(temp, { force: true });
      await this.removeParts();
      throw err;
    }
    await this.removeParts();
    await rename(temp, this.file);
  }

  private async removeParts(): Promise<void> {
    for (const part of [this.deletes, this.updates, this.inserts]) {
      part.stream.destroy();
      await rm(part.path, { force: true });
    }
  }

  /** Removes every part and temp file; {@link file} is not touched. Safe to call twice. */
  async discard(): Promise<void> {
    await this.removeParts();
    await rm(`${this.stem}.sql`, { force: true });
  }
}
