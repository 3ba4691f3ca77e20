import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  paginateListObjectsV2,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { UsageError } from '../../errors.ts';
import {
  NotFoundError,
  assertSafeKey,
  joinKey,
  type Storage,
  type StoredObject,
  type UploadOptions,
  type UploadResult,
} from '../storage.ts';

/** Connection settings for an S3-compatible store. Every field falls back to the AWS env vars. */
export interface S3Settings {
  /** Custom endpoint (R2, Spaces, MinIO, B2, Ceph RGW). Default: `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, else AWS. */
  endpoint?: string;
  /** Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`, else `us-east-1`. */
  region?: string;
  /** Path-style addressing (`endpoint/bucket/key`). Default: on for custom endpoints, off for AWS. */
  forcePathStyle?: boolean;
  /** Parts uploaded at once per multipart upload. Default 3 (each part in flight is held in memory: docs/performance.md). */
  queueSize?: number;
  /** Keys per ListObjectsV2 page. Default 1 000 (the S3 maximum). */
  listPageSize?: number;
  /** Static credentials; default is the AWS SDK provider chain (env vars, profiles, OIDC web identity). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** S3's minimum part size (all parts but the last): 5 MiB. Source: AWS S3 "Multipart upload limits". */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3's maximum number of parts in one multipart upload. Source: AWS S3 "Multipart upload limits". */
export const MAX_PARTS = 10_000;

/**
 * Chooses the multipart part size in bytes for a stream of about `sizeHintBytes`: the smallest
 * whole number of MiB (at least 5 MiB) that fits the stream in 9 000 parts, leaving 10 % of the
 * 10 000-part limit as margin for an estimate that was low.
 */
export function choosePartSize(sizeHintBytes: number | undefined): number {
  if (!sizeHintBytes || sizeHintBytes <= 0) return MIN_PART_SIZE;
  const mib = 1024 * 1024;
  const needed = Math.ceil(sizeHintBytes / 9_000 / mib) * mib;
  return Math.max(MIN_PART_SIZE, needed);
}

/** How long `Upload.done()` may take to settle after an abort before we stop waiting (ms). aws-sdk-js-v3 #7729. */
const ABORT_WATCHDOG_MS = 30_000;

/** The storage driver for S3 and S3-compatible stores. */
export class S3Storage implements Storage {
  readonly url: string;
  readonly client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #queueSize: number;
  readonly #listPageSize: number;

  constructor(bucket: string, prefix: string, settings: S3Settings = {}) {
    this.#bucket = bucket;
    this.#prefix = prefix;
    this.url = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
    this.#queueSize = settings.queueSize ?? 3;
    this.#listPageSize = settings.listPageSize ?? 1000;
    const endpoint = settings.endpoint || process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL || undefined;
    if (endpoint) {
      try {
        new URL(endpoint);
      } catch {
        throw new UsageError(`invalid S3 endpoint ${JSON.stringify(endpoint)}: give a URL such as https://ACCOUNT.r2.cloudflarestorage.com`);
      }
    }
    const config: S3ClientConfig = {
      region: settings.region || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1',
      forcePathStyle: settings.forcePathStyle ?? Boolean(endpoint),
      // The SDK's default since v3.729.0 sends CRC32 checksums on every request, which R2, B2,
      // older MinIO and Ceph RGW reject or slow down; our own SHA-256 is the integrity check.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 5,
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
    };
    if (endpoint) config.endpoint = endpoint;
    if (settings.credentials) config.credentials = settings.credentials;
    this.client = new S3Client(config);
  }

  #fullKey(key: string): string {
    assertSafeKey(key);
    return joinKey(this.#prefix, key);
  }

  uri(key: string): string {
    return `s3://${this.#bucket}/${this.#fullKey(key)}`;
  }

  async upload(key: string, body: Readable, options: UploadOptions = {}): Promise<UploadResult> {
    const Key = this.#fullKey(key);
    let sizeBytes = 0;
    body.on('data', (chunk: Buffer) => {
      sizeBytes += chunk.length;
    });
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.#bucket, Key, Body: body, ContentType: options.contentType ?? 'application/octet-stream' },
      partSize: choosePartSize(options.sizeHintBytes),
      queueSize: this.#queueSize,
      leavePartsOnError: false,
    });
    let aborted: Error | undefined;
    const onAbort = () => {
      aborted = options.signal?.reason instanceof Error ? options.signal.reason : new Error('upload aborted');
      body.destroy(aborted);
      void upload.abort().catch(() => undefined);
    };
    if (options.signal?.aborted) onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    body.once('error', (err) => {
      aborted ??= err;
      void upload.abort().catch(() => undefined);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        let watchdog: NodeJS.Timeout | undefined;
        const armWatchdog = () => {
          watchdog ??= setTimeout(() => reject(aborted ?? new Error('upload did not settle after abort')), ABORT_WATCHDOG_MS);
          watchdog.unref();
        };
        if (aborted) armWatchdog();
        options.signal?.addEventListener('abort', armWatchdog, { once: true });
        body.once('error', armWatchdog);
        upload.done().then(
          () => {
            clearTimeout(watchdog);
            if (aborted) reject(aborted);
            else resolve();
          },
          (err: unknown) => {
            clearTimeout(watchdog);
            reject(aborted ?? err);
          },
        );
      });
    } catch (err) {
      await this.#abortMultipart(upload, Key);
      throw aborted ?? mapS3Error(err, this.uri(key), 'write');
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
    return { key, sizeBytes };
  }

  /**
   * Makes sure a failed multipart upload is aborted before we return: `Upload.done()` rejects
   * as soon as it is aborted, while lib-storage sends AbortMultipartUpload only after the parts
   * in flight finish — a process exiting right away could leave the upload (and its parts,
   * billed) behind. Waits for those parts (at most 30 s), then aborts by upload id itself.
   */
  async #abortMultipart(upload: Upload, Key: string): Promise<void> {
    const internals = upload as unknown as { uploadId?: string; concurrentUploaders?: Promise<unknown>[] };
    await Promise.race([Promise.allSettled(internals.concurrentUploaders ?? []), new Promise((r) => setTimeout(r, ABORT_WATCHDOG_MS).unref())]);
    if (!internals.uploadId) return;
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId: internals.uploadId })).catch(() => undefined);
  }

  async put(key: string, body: string | Uint8Array, contentType = 'application/octet-stream'): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#fullKey(key), Body: body, ContentType: contentType }));
    } catch (err) {
      throw mapS3Error(err, this.uri(key), 'write');
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#fullKey(key) }));
    } catch (err) {
      const mapped = mapS3Error(err, this.uri(key), 'delete');
      if (!(mapped instanceof NotFoundError)) throw mapped;
    }
  }

  async get(key: string): Promise<Readable> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#fullKey(key) }));
      if (!out.Body) throw new Error(`empty response body for ${this.uri(key)}`);
      return out.Body as Readable;
    } catch (err) {
      throw mapS3Error(err, this.uri(key), 'read');
    }
  }

  async getText(key: string): Promise<string> {
    const stream = await this.get(key);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    const listPrefix = this.#prefix ? `${this.#prefix}/${prefix}` : prefix;
    const strip = this.#prefix === '' ? 0 : this.#prefix.length + 1;
    try {
      for await (const page of paginateListObjectsV2({ client: this.client, pageSize: this.#listPageSize }, { Bucket: this.#bucket, Prefix: listPrefix })) {
        for (const obj of page.Contents ?? []) {
          if (!obj.Key) continue;
          yield { key: obj.Key.slice(strip), sizeBytes: obj.Size ?? 0, lastModified: obj.LastModified ?? new Date(0) };
        }
      }
    } catch (err) {
      throw mapS3Error(err, `${this.url}/${prefix}`, 'list');
    }
  }
}

/**
 * Turns an AWS SDK error into a one-line, actionable error. Mistakes in configuration
 * (unknown bucket, rejected credentials, missing permission, unreachable endpoint) become
 * {@link UsageError} (exit 2); a missing key becomes {@link NotFoundError}; anything else is
 * returned unchanged.
 */
export function mapS3Error(err: unknown, uri: string, action: 'read' | 'write' | 'list' | 'delete'): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  if (err instanceof UsageError || err instanceof NotFoundError) return err;
  const e = err as Error & { Code?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const code = e.name || e.Code || e.code || '';
  const status = e.$metadata?.httpStatusCode;
  const bucket = uri.replace(/^s3:\/\//, '').split('/')[0];
  switch (code) {
    case 'NoSuchBucket':
      return new UsageError(`bucket ${JSON.stringify(bucket)} does not exist at this endpoint: check the s3:// URL, AWS_ENDPOINT_URL_S3 and AWS_REGION`);
    case 'NoSuchKey':
    case 'NotFound':
      return new NotFoundError(`${uri} does not exist`);
    case 'InvalidAccessKeyId':
    case 'SignatureDoesNotMatch':
    case 'InvalidToken':
    case 'ExpiredToken':
      return new UsageError(`S3 rejected the credentials (${code}) for ${uri}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`);
    case 'AccessDenied':
    case 'Forbidden':
      return new UsageError(`access denied to ${action} ${uri}: the credentials lack the ${{ write: 's3:PutObject', list: 's3:ListBucket', read: 's3:GetObject', delete: 's3:DeleteObject' }[action]} permission there`);
    case 'CredentialsProviderError':
      return new UsageError('no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile / OIDC role)');
    default:
      break;
  }
  if (status === 404 && action !== 'write') return new NotFoundError(`${uri} does not exist`);
  if (status === 403) return new UsageError(`access denied to ${action} ${uri} (HTTP 403): check the credentials and their permissions`);
  const sysCode = (e as { code?: string }).code ?? (e.cause as { code?: string } | undefined)?.code;
  if (sysCode && ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'].includes(sysCode)) {
    return new UsageError(`cannot reach the S3 endpoint for ${uri} (${sysCode}): check AWS_ENDPOINT_URL_S3 and the network`);
  }
  if (sysCode && ['ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(sysCode)) {
    // A network that fails mid-transfer (after the SDK's retries) is a failure, not a mistake.
    return new Error(`S3 ${action} of ${uri} failed after retries: the connection broke (${sysCode})`);
  }
  return new Error(`S3 ${action} of ${uri} failed: ${code ? `${code}: ` : ''}${e.message}`);
}
