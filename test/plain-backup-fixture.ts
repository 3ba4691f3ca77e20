// Plain SQL backups made by our own dump, then rewritten by hand (an attacker's, a damaged
// one): the object re-compressed with zstd and, unless told otherwise, the manifest's size and
// sha256 made to match, so that only what is inside the SQL can stop it.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { addBigTable, createDatabase, dumpWithCli, fileLocation, sql } from './helpers.ts';

/** Rows (text first) whose COPY text lines begin with `\r` (a carriage return) or hold `\restrict`-like text. */
export const QUIRKS_SQL = `CREATE TABLE quirks (body text NOT NULL, id int PRIMARY KEY);
  INSERT INTO quirks (id, body) VALUES (1, E'\\rstrict starts with a carriage return'), (2, '\\restrict abc'), (3, '\\unrestrict abc'), (4, E'\\r\\n-- PostgreSQL database dump complete');`;

/** A plain backup in a `file://` location, its files, and the SQL our dump wrote. */
export interface PlainBackup {
  database: string;
  location: string;
  objectKey: string;
  objectFile: string;
  manifestFile: string;
  /** The decompressed SQL as pg_dump wrote it (with its own `\restrict` / `\unrestrict` lines). */
  sql: string;
  /** The stored object and manifest as the dump wrote them. */
  original: { object: Buffer; manifest: string };
}

/**
 * Dumps a fresh sample database (plus {@link QUIRKS_SQL}; with `bigMegabytes`, two tables `big`
 * and `big2` of that many MB each, so that a point between them is the middle of the SQL) in
 * plain format into a fresh `file://` location.
 */
export async function plainBackup(label: string, bigMegabytes = 0): Promise<PlainBackup> {
  const database = await createDatabase(label);
  await sql(database, QUIRKS_SQL);
  if (bigMegabytes) {
    await addBigTable(database, bigMegabytes);
    await sql(database, 'CREATE TABLE big2 AS SELECT * FROM big');
  }
  const location = await fileLocation();
  const { objectKey, manifestKey } = await dumpWithCli(database, location, ['--format', 'plain']);
  const root = fileURLToPath(location);
  const objectFile = path.join(root, objectKey);
  const manifestFile = path.join(root, manifestKey);
  const object = await readFile(objectFile);
  const manifest = await readFile(manifestFile, 'utf8');
  return { database, location, objectKey, objectFile, manifestFile, sql: zstdDecompressSync(object).toString('latin1'), original: { object, manifest } };
}

/**
 * Stores `text` as the backup's SQL (zstd), and unless `matchManifest` is false rewrites the
 * manifest's object size, sha256 and archive size to match it.
 */
export async function rewriteSql(backup: PlainBackup, text: string, matchManifest = true): Promise<void> {
  const raw = Buffer.from(text, 'latin1');
  const object = zstdCompressSync(raw);
  await writeFile(backup.objectFile, object);
  const manifest = JSON.parse(backup.original.manifest);
  if (matchManifest) {
    manifest.object.sizeBytes = object.length;
    manifest.object.sha256 = createHash('sha256').update(object).digest('hex');
    manifest.archiveSizeBytes = raw.length;
  }
  await writeFile(backup.manifestFile, JSON.stringify(manifest, null, 2));
}

/** Puts the backup back as the dump wrote it. */
export async function restoreOriginal(backup: PlainBackup): Promise<void> {
  await writeFile(backup.objectFile, backup.original.object);
  await writeFile(backup.manifestFile, backup.original.manifest);
}

/** The SQL without pg_dump's own `\restrict KEY` and `\unrestrict KEY` lines (as an attacker would). */
export function withoutDumpRestrict(text: string): string {
  return text.replace(/^\\(?:un)?restrict [A-Za-z0-9]+\n/gm, '');
}

/** Where a line goes: before everything, between the data of `big` and `big2` (or before the first COPY), after the completion line. */
export type Position = 'start' | 'middle' | 'end';

/** Inserts `line` into `text` at `position`. */
export function insertAt(text: string, position: Position, line: string): string {
  if (position === 'start') return `${line}\n${text}`;
  if (position === 'end') return `${text.endsWith('\n') ? text : `${text}\n`}${line}\n`;
  const anchor = text.includes('\nCOPY public.big2 ') ? text.indexOf('\nCOPY public.big2 ') : text.indexOf('\nCOPY ');
  if (anchor < 0) throw new Error('no COPY in the SQL');
  return `${text.slice(0, anchor + 1)}${line}\n${text.slice(anchor + 1)}`;
}

/** A fresh directory (mode 0777, so that a server running as another OS user could write there too). */
export async function markerDir(): Promise<string> {
  const { chmod } = await import('node:fs/promises');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-marker-'));
  await chmod(dir, 0o777);
  return dir;
}

/** The entries of `dir` (empty when nothing was written there). */
export async function entries(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** Removes directories (for t.after). */
export async function removeAll(...dirs: string[]): Promise<void> {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}
