import { constants, createReadStream, createWriteStream } from 'node:fs';
import { access, link, mkdir, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { UsageError } from '../../errors.ts';
import {
  NotFoundError,
  OverwriteError,
  assertSafeKey,
  isSafeKey,
  putOptions,
  type GetOptions,
  type PutOptions,
  type Storage,
  type StoredObject,
  type UploadOptions,
  type UploadResult,
} from '../storage.ts';

/**
 * The storage driver for a local directory (`file:///DIR`): for demos, tests, and a mounted
 * network share. Writes go to a temporary file beside the target and are renamed into place
 * only when complete, so a reader never sees a partial object; nothing is written outside
 * the root directory.
 */
export class FileStorage implements Storage {
  readonly url: string;
  readonly #root: string;

  constructor(root: string) {
    this.#root = path.resolve(root);
    this.url = pathToFileURL(this.#root).href;
  }

  #path(key: string): string {
    assertSafeKey(key);
    const full = path.resolve(this.#root, ...key.split('/'));
    if (full !== this.#root && !full.startsWith(this.#root + path.sep)) {
      throw new Error(`storage key escapes the root: ${JSON.stringify(key)}`);
    }
    return full;
  }

  /**
   * Checks that the root directory exists and is a directory.
   * @throws UsageError when it does not exist, is not a directory or cannot be read.
   */
  async checkRoot(): Promise<void> {
    let info;
    try {
      info = await stat(this.#root);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new UsageError(`${this.url} does not exist: check --from (only a dump creates its directory)`);
      throw new UsageError(`cannot read ${this.url} (${code ?? (err as Error).message}): check the path and its permissions`);
    }
    if (!info.isDirectory()) throw new UsageError(`${this.url} is not a directory: give file:///DIR of a backup location`);
  }

  uri(key: string): string {
    return pathToFileURL(this.#path(key)).href;
  }

  keyOf(uri: string): string | undefined {
    let file: string;
    try {
      file = fileURLToPath(uri);
    } catch {
      return undefined;
    }
    const rel = path.relative(this.#root, path.resolve(file));
    if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) return undefined;
    return rel.split(path.sep).join('/');
  }

  async #prepareDir(file: string): Promise<void> {
    try {
      await mkdir(path.dirname(file), { recursive: true });
    } catch (err) {
      throw new UsageError(`cannot create ${path.dirname(file)} under ${this.url}: ${(err as Error).message}`);
    }
  }

  async probeWrite(key: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    // The nearest directory that exists on the way to the key must be writable (the upload makes
    // the rest): checked without making any, so a dump that stops next leaves nothing behind.
    let dir = path.dirname(this.#path(key));
    while (!(await stat(dir).then((s) => s.isDirectory(), () => false)) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    try {
      await access(dir, constants.W_OK);
    } catch (err) {
      throw new UsageError(`cannot write under ${this.url} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): check the directory's permissions`);
    }
  }

  async upload(key: string, body: Readable, options: UploadOptions = {}): Promise<UploadResult> {
    const target = this.#path(key);
    await this.#prepareDir(target);
    const partial = `${target}.partial-${randomBytes(4).toString('hex')}`;
    let sizeBytes = 0;
    body.on('data', (chunk: Buffer) => {
      sizeBytes += chunk.length;
      options.onStored?.(sizeBytes);
    });
    try {
      await pipeline(body, createWriteStream(partial, { flags: 'wx' }), { signal: options.signal });
      await this.#commit(partial, target, key, options.noOverwrite);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
    return { key, sizeBytes };
  }

  /** Moves a finished temporary file into place; with `noOverwrite`, a hard link that fails if the name exists. */
  async #commit(partial: string, target: string, key: string, noOverwrite = false): Promise<void> {
    if (!noOverwrite) return rename(partial, target);
    try {
      await link(partial, target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new OverwriteError(`${this.uri(key)} already exists: refusing to overwrite it`);
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
      // A filesystem without hard links (some network and FUSE mounts): check, then rename.
      if (await stat(target).then(() => true, () => false)) throw new OverwriteError(`${this.uri(key)} already exists: refusing to overwrite it`);
      return rename(partial, target);
    }
    await unlink(partial);
  }

  async put(key: string, body: string | Uint8Array, options?: string | PutOptions): Promise<void> {
    const target = this.#path(key);
    await this.#prepareDir(target);
    const partial = `${target}.partial-${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(partial, body, { flag: 'wx' });
      await this.#commit(partial, target, key, putOptions(options).noOverwrite);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }

  /**
   * Reads the file directly, 1 MiB per read (fewer, larger chunks downstream than the default
   * 64 KiB); `options.signal` destroys the stream with its reason.
   * @throws NotFoundError when the file does not exist.
   */
  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const file = this.#path(key);
    try {
      await stat(file);
    } catch {
      throw new NotFoundError(`${this.uri(key)} does not exist`);
    }
    options.signal?.throwIfAborted();
    const stream = createReadStream(file, { highWaterMark: 1024 * 1024 });
    if (options.signal) {
      const signal = options.signal;
      const onAbort = () => stream.destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
      signal.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return stream;
  }

  async getText(key: string): Promise<string> {
    try {
      return await readFile(this.#path(key), 'utf8');
    } catch {
      throw new NotFoundError(`${this.uri(key)} does not exist`);
    }
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    // Walk only the directories the prefix can match, in key order.
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash === -1 ? '' : prefix.slice(0, slash);
    const start = dirKey === '' ? this.#root : this.#path(dirKey);
    yield* this.#walk(start, dirKey, prefix);
  }

  async *#walk(dir: string, dirKey: string, prefix: string): AsyncIterable<StoredObject> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      if (entry.isDirectory()) {
        if (prefix.startsWith(`${key}/`) || key.startsWith(prefix)) yield* this.#walk(path.join(dir, entry.name), key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix) && !/\.partial-[0-9a-f]{8}$/.test(entry.name) && isSafeKey(key)) {
        const info = await stat(path.join(dir, entry.name));
        yield { key, sizeBytes: info.size, lastModified: info.mtime };
      }
    }
  }
}
