import type { Readable } from 'node:stream';

/** One object as a listing returns it. `key` is relative to the storage location's prefix. */
export interface StoredObject {
  key: string;
  sizeBytes: number;
  lastModified: Date;
}

/** Options for {@link Storage.upload}. */
export interface UploadOptions {
  /** Aborting it aborts the upload: the multipart upload is aborted, nothing stays visible. */
  signal?: AbortSignal;
  contentType?: string;
  /**
   * An estimate of the stream's size in bytes, used to choose the multipart part size so a
   * stream never needs more than 10 000 parts (S3's limit). Optional.
   */
  sizeHintBytes?: number;
  /**
   * Never replace an existing object: S3 sends `If-None-Match: *` (the write fails with 412
   * PreconditionFailed if the key exists; AWS honours it on PutObject and CompleteMultipartUpload,
   * Ceph RGW 16 on PutObject only); the file driver links the finished file into place, which
   * fails if the name exists. Source: AWS S3 User Guide, "Conditional writes".
   */
  noOverwrite?: boolean;
  /**
   * Called with the running total of bytes the store acknowledged (S3: each completed
   * UploadPart, or the PutObject of a short stream; file: bytes handed to the file), never
   * bytes merely handed to the driver. For progress lines.
   */
  onStored?: (bytes: number) => void;
}

/** Options for {@link Storage.put}. */
export interface PutOptions {
  contentType?: string;
  /** As {@link UploadOptions.noOverwrite}. */
  noOverwrite?: boolean;
  /** Aborting it abandons the request (S3); the object is then written or not, never partly. */
  signal?: AbortSignal;
}

/**
 * Options for {@link Storage.get}. The S3 driver reads an object larger than one range as
 * parallel ranged GETs (see `S3Storage.get`); the file driver reads the file directly.
 */
export interface GetOptions {
  /** Aborting it cancels the read: every request in flight ends and the stream fails with its reason. */
  signal?: AbortSignal;
  /** Bytes per ranged GET (S3). Default {@link DEFAULT_READ_RANGE_BYTES}, or `PG_BACKUP_S3_READ_RANGE_SIZE`. */
  rangeBytes?: number;
  /** Ranged GETs in flight (S3). Default {@link DEFAULT_READ_CONCURRENCY}, or `PG_BACKUP_S3_READ_CONCURRENCY`. */
  concurrency?: number;
}

/** Bytes per ranged GET of a large object: 8 MiB (an object up to this size is read in one GET). */
export const DEFAULT_READ_RANGE_BYTES = 8 * 1024 * 1024;
/**
 * Ranged GETs in flight at most: 1 (memory: one range, 8 MiB by default). Measured on loopback
 * (1.06 GB database, 115 MB object): 2 in flight gave the same verify time and CPU and 20–35 MiB
 * more peak RSS (reads ahead outlive the young generation); raise it for a link where one
 * connection is the bottleneck (a distant region), at range size each.
 */
export const DEFAULT_READ_CONCURRENCY = 1;

/**
 * The store's own clock, as one of its answers told it: the HTTP `Date` header (RFC 9110
 * §6.6.1, "the date and time at which the message was originated": whole seconds, UTC).
 */
export interface ServerTime {
  /** The `Date` header of the answer. */
  serverDate: Date;
  /** `performance.now()` when that answer arrived (ms): the store's time now is `serverDate` + the time since. */
  receivedAtMs: number;
}

/** Options of {@link Storage.serverTime}. */
export interface ServerTimeOptions {
  /** Aborting it ends the request (the answer is then undefined). */
  signal?: AbortSignal;
  /** Give up waiting for an answer after this long (ms). Default 5 000. */
  timeoutMs?: number;
}

/** What an upload stored. */
export interface UploadResult {
  key: string;
  sizeBytes: number;
}

/**
 * A place backups live: an S3-compatible bucket and prefix, or a local directory.
 * Keys are relative to the location's prefix and use `/` as separator; they never contain
 * `..` segments (see {@link assertSafeKey}).
 *
 * The dump path uses only {@link upload} and {@link put}: write-only credentials are enough.
 */
export interface Storage {
  /** The location as a URL, e.g. `s3://bucket/prefix` or `file:///srv/backups`. */
  readonly url: string;
  /** The URL of one key, e.g. `s3://bucket/prefix/app/…/x.dump.zst`. */
  uri(key: string): string;
  /** The inverse of {@link uri}: the key a URL of this location names, or undefined when it is outside. */
  keyOf(uri: string): string | undefined;
  /**
   * Streams `body` into `key`. The object becomes visible only when the stream ended without
   * error; if the stream errors or `signal` aborts, the partial object is discarded (S3:
   * AbortMultipartUpload; file: the temporary file is removed) and the promise rejects.
   */
  upload(key: string, body: Readable, options?: UploadOptions): Promise<UploadResult>;
  /**
   * Writes a small object in one request. `options` may be a content type (the older form).
   * @throws OverwriteError when `noOverwrite` is set and the key exists.
   */
  put(key: string, body: string | Uint8Array, options?: string | PutOptions): Promise<void>;
  /**
   * Reads a whole object as a stream, in order. Rejects with {@link NotFoundError} if it does
   * not exist; the stream fails if the object changes while it is read (S3: a later range no
   * longer matches the ETag of the first) or a request fails after its retries.
   */
  get(key: string, options?: GetOptions): Promise<Readable>;
  /** Reads a small object into memory. */
  getText(key: string): Promise<string>;
  /** Lists every object whose key starts with `prefix` (paginating as needed); keys that {@link isSafeKey} refuses are left out. */
  list(prefix: string): AsyncIterable<StoredObject>;
  /** Deletes one object; a missing object is not an error. */
  delete(key: string): Promise<void>;
  /**
   * The store's own clock, so a dump can check this machine's before it stamps a backup (keys
   * and manifests carry this machine's time; one stamped ahead would be `future` for every
   * reader: src/backup/clock.ts). S3: the `Date` header of the newest answer this storage got,
   * or, when none came yet, of one HEAD of the bucket made for it — whatever its status (write-
   * only credentials get a 403, which carries the header too). Never throws: undefined when no
   * answer came within `timeoutMs`. Absent on stores that share this machine's clock (file).
   */
  serverTime?(options?: ServerTimeOptions): Promise<ServerTime | undefined>;
  /**
   * Checks, before a dump starts, that `key` may be written — the location is reachable, the
   * bucket exists, the credentials are accepted and may write there — and leaves nothing behind.
   * S3: CreateMultipartUpload, then AbortMultipartUpload of that upload (both are the writer's
   * own permissions, s3:PutObject and s3:AbortMultipartUpload; no object is created). file: the
   * nearest existing directory on the way to the key must be writable; nothing is created.
   * `signal` cancels it (SIGINT/SIGTERM: rejects with the signal's reason).
   * @throws UsageError naming the fix (unknown bucket, rejected credentials, denied write).
   */
  probeWrite?(key: string, signal?: AbortSignal): Promise<void>;
}

/** Raised by a write with `noOverwrite` when the key already exists: nothing was replaced. */
export class OverwriteError extends Error {
  override readonly name = 'OverwriteError';
}

/** Normalises the `options` argument of {@link Storage.put}. */
export function putOptions(options: string | PutOptions | undefined): PutOptions {
  return typeof options === 'string' ? { contentType: options } : (options ?? {});
}

/** Raised by {@link Storage.get} when the key does not exist. */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
}

/**
 * Rejects keys that could escape the location's prefix: absolute keys, empty segments,
 * `.` / `..` segments, backslashes and control characters.
 * @throws Error (a bug: keys are built by the tool, never taken raw from a user).
 */
export function assertSafeKey(key: string): void {
  if (!isSafeKey(key)) throw new Error(`unsafe storage key: ${JSON.stringify(key)}`);
}

/**
 * Whether {@link assertSafeKey} accepts `key`. Drivers list only such keys: an object someone
 * else wrote under a name the tool never makes (a control character, a `..` segment) is not a
 * backup, and must not make a listing fail for every backup beside it.
 */
export function isSafeKey(key: string): boolean {
  // eslint-disable-next-line no-control-regex
  if (key.length === 0 || key.startsWith('/') || key.includes('\\') || /[\u0000-\u001f]/.test(key)) return false;
  return key.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

/** Joins key segments with `/`, dropping empty ones. */
export function joinKey(...parts: string[]): string {
  return parts
    .flatMap((p) => p.split('/'))
    .filter((p) => p !== '')
    .join('/');
}
