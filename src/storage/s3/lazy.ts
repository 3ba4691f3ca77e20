import type { Readable } from 'node:stream';
import { caBundle, readRangeSettings, s3Endpoint, s3Timeouts, type S3Settings } from './config.ts';
import { assertSafeKey, joinKey, type GetOptions, type PutOptions, type ServerTime, type ServerTimeOptions, type Storage, type StoredObject, type UploadOptions, type UploadResult } from '../storage.ts';
import type { S3Storage } from './s3.ts';

/**
 * The S3 storage `openStorage` returns: the S3 driver ({@link S3Storage}, s3.ts), whose module
 * loads the AWS SDK (about 50 ms of CPU and 10 MiB at start-up), loaded and built at the first
 * request rather than when the location is opened; a command that opens an S3 location and
 * fails before its first request, or one that never opens one, does not pay for the SDK.
 *
 * What the driver's constructor checks is checked here when the location opens, in the same
 * order, so the same mistakes fail at the same moment (UsageError): the endpoint, the
 * `PG_BACKUP_S3_*` limits and read settings. `url`, `uri` and `keyOf` need no driver. The module
 * is imported once per process and the driver built once per storage; after that every call
 * goes straight to it (no await of the import per request).
 */
export class LazyS3Storage implements Storage {
  readonly url: string;
  /** Called with a one-line warning (e.g. the store did not confirm server-side encryption); passed on to the driver. */
  onWarning?: (message: string) => void;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #settings: S3Settings;
  #driver: S3Storage | undefined;
  #loading: Promise<S3Storage> | undefined;

  constructor(bucket: string, prefix: string, settings: S3Settings = {}) {
    // The driver's own checks, in its order (S3Storage's constructor runs them again when built).
    s3Endpoint(settings);
    s3Timeouts();
    readRangeSettings();
    caBundle();
    this.#bucket = bucket;
    this.#prefix = prefix;
    this.#settings = settings;
    this.url = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
  }

  /** The driver, built on first use (the S3 module imported once per process). */
  #load(): Promise<S3Storage> {
    this.#loading ??= loadDriver().then((S3) => {
      const driver = new S3(this.#bucket, this.#prefix, this.#settings);
      driver.onWarning = (message) => this.onWarning?.(message);
      return (this.#driver = driver);
    });
    return this.#loading;
  }

  uri(key: string): string {
    assertSafeKey(key);
    return `s3://${this.#bucket}/${joinKey(this.#prefix, key)}`;
  }

  keyOf(uri: string): string | undefined {
    const base = `s3://${this.#bucket}/${this.#prefix ? `${this.#prefix}/` : ''}`;
    return uri.startsWith(base) && uri.length > base.length ? uri.slice(base.length) : undefined;
  }

  async upload(key: string, body: Readable, options?: UploadOptions): Promise<UploadResult> {
    return (this.#driver ?? (await this.#load())).upload(key, body, options);
  }

  async put(key: string, body: string | Uint8Array, options?: string | PutOptions): Promise<void> {
    return (this.#driver ?? (await this.#load())).put(key, body, options);
  }

  async get(key: string, options?: GetOptions): Promise<Readable> {
    return (this.#driver ?? (await this.#load())).get(key, options);
  }

  async getText(key: string): Promise<string> {
    return (this.#driver ?? (await this.#load())).getText(key);
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    yield* (this.#driver ?? (await this.#load())).list(prefix);
  }

  async delete(key: string): Promise<void> {
    return (this.#driver ?? (await this.#load())).delete(key);
  }

  async serverTime(options?: ServerTimeOptions): Promise<ServerTime | undefined> {
    return (this.#driver ?? (await this.#load())).serverTime(options);
  }

  async probeWrite(key: string, signal?: AbortSignal): Promise<void> {
    return (this.#driver ?? (await this.#load())).probeWrite(key, signal);
  }
}

let driverModule: Promise<typeof S3Storage> | undefined;

/** The S3 driver's class, its module (and the AWS SDK) imported on the first call only. */
function loadDriver(): Promise<typeof S3Storage> {
  driverModule ??= import('./s3.ts').then((m) => m.S3Storage);
  return driverModule;
}
