import { Readable } from 'node:stream';
import tls from 'node:tls';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
  paginateListObjectsV2,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { UsageError } from '../../errors.ts';
import { PartBuffers, choosePartSize, streamToObject } from './multipart.ts';
import { caBundle, caBundleFile, readRangeSettings, retainUntil, s3Endpoint, s3Timeouts, S3_CA_BUNDLE_ENV, type S3Settings, type S3Timeouts } from './config.ts';
import { orderedRangeStream } from '../ranged.ts';
import {
  DEFAULT_READ_CONCURRENCY,
  DEFAULT_READ_RANGE_BYTES,
  NotFoundError,
  OverwriteError,
  assertSafeKey,
  isSafeKey,
  joinKey,
  putOptions,
  type GetOptions,
  type PutOptions,
  type ServerTime,
  type ServerTimeOptions,
  type Storage,
  type StoredObject,
  type UploadOptions,
  type UploadResult,
} from '../storage.ts';

export {
  DEFAULT_S3_TIMEOUTS,
  S3_READ_ENV,
  S3_TIMEOUT_ENV,
  readRangeSettings,
  retainUntil,
  s3Timeouts,
  silentEndpointBoundMs,
  type ObjectLockSettings,
  type S3Settings,
  type S3Timeouts,
  s3Endpoint,
  type S3Endpoint,
  type ServerSideEncryption,
} from './config.ts';

// The multipart limits live with the uploader (multipart.ts), which needs them; re-exported
// here for callers that size uploads through this driver.
export { MAX_PARTS, MIN_PART_SIZE, choosePartSize } from './multipart.ts';

/**
 * How long an upload may take to settle after an abort before we stop waiting (ms): the
 * uploader's grace for CreateMultipartUpload and its bounded AbortMultipartUpload (multipart.ts)
 * fit in it; a request that ignores the cancellation must not hold the process longer.
 */
const ABORT_WATCHDOG_MS = 10_000;
/** How long the AbortMultipartUpload by id after the watchdog fired may take (ms). */
const LATE_ABORT_MS = 5_000;

/** The `AWS_CA_BUNDLE` file whose certificates this process already trusts ({@link trustCaBundle}). */
let trustedBundle: string | undefined;

/**
 * Adds `AWS_CA_BUNDLE`'s certificates ({@link caBundle}) to the CAs this process trusts for every
 * TLS connection it makes from now on: Node's defaults (its bundled roots and
 * `NODE_EXTRA_CA_CERTS`) plus these, with `tls.setDefaultCACertificates` (Node 24.5+). The
 * process default, not an agent of the S3 client's own: the SDK's HTTP handler sends any request
 * that expects `100 Continue` through a fresh agent of its own (@smithy/node-http-handler), which
 * an agent's `ca` would not reach, and the other HTTPS clients of a run (the GitHub API, webhooks)
 * reach the same network. Once per file per process.
 * @throws UsageError when the file is unusable, or on a Node without `setDefaultCACertificates`.
 */
function trustCaBundle(): void {
  if (caBundleFile() === trustedBundle) return; // unset, or already trusted: the file is not read again
  const { file, certificates } = caBundle()!;
  if (typeof tls.setDefaultCACertificates !== 'function') {
    throw new UsageError(`${S3_CA_BUNDLE_ENV} needs Node 24.5 or later (this is ${process.version}): update Node, or give the file in NODE_EXTRA_CA_CERTS instead`);
  }
  try {
    tls.setDefaultCACertificates([...tls.getCACertificates('default'), ...certificates]);
  } catch (err) {
    throw new UsageError(`${S3_CA_BUNDLE_ENV}=${JSON.stringify(file)}: a certificate in it cannot be read (${err instanceof Error ? err.message : String(err)}): give the CA certificates of the S3 endpoint in PEM form, or unset it`);
  }
  trustedBundle = file;
}

/** Bytes per write of a large request body into a TLS socket (see S3Storage's chunked bodies over TLS). */
export const TLS_WRITE_BYTES = 256 * 1024;

/** Views of `body`, `size` bytes each (the last one shorter): no byte is copied. */
function* slices(body: Uint8Array, size: number): Generator<Buffer> {
  for (let offset = 0; offset < body.byteLength; offset += size) yield Buffer.from(body.buffer, body.byteOffset + offset, Math.min(size, body.byteLength - offset));
}

/** The storage driver for S3 and S3-compatible stores. */
export class S3Storage implements Storage {
  readonly url: string;
  /** The client of every request but object reads. */
  readonly client: S3Client;
  /** The client of GetObject and CompleteMultipartUpload: the same settings, with the longer idle limit `readIdleMs` (a body being read may pause; a Complete may take long to answer). */
  readonly readClient: S3Client;
  /** The network limits in force. */
  readonly timeouts: S3Timeouts;
  /** Where requests go, for messages: the custom endpoint, else `AWS S3 (<region>)`. */
  readonly endpointLabel: string;
  /** Whether the endpoint ever answered a request of this storage (any HTTP status). */
  #answered = false;
  /** The `Date` header of the newest answer (any HTTP status), for {@link serverTime}. */
  #lastDate: ServerTime | undefined;
  /** How large objects are read ({@link readRangeSettings}): checked when the storage opens. */
  readonly #reads: { rangeBytes: number; concurrency: number };
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #queueSize: number;
  /** The part buffers every upload of this storage shares (multipart.ts {@link PartBuffers}). */
  readonly #partBuffers: PartBuffers;
  readonly #listPageSize: number;
  readonly #settings: S3Settings;
  /** The client's configuration, for the one-attempt client of {@link serverTime}. */
  readonly #config: S3ClientConfig;
  #probeClient: S3Client | undefined;
  #sseWarned = false;
  /** Called with a one-line warning (e.g. the store did not confirm server-side encryption). */
  onWarning?: (message: string) => void;

  constructor(bucket: string, prefix: string, settings: S3Settings = {}) {
    this.#settings = settings;
    this.#bucket = bucket;
    this.#prefix = prefix;
    this.url = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
    this.#queueSize = settings.queueSize ?? 3;
    this.#partBuffers = new PartBuffers(this.#queueSize);
    this.#listPageSize = settings.listPageSize ?? 1000;
    const { endpoint, region, label } = s3Endpoint(settings);
    this.endpointLabel = label;
    const t = (this.timeouts = s3Timeouts());
    this.#reads = readRangeSettings();
    const config: S3ClientConfig = {
      region,
      forcePathStyle: settings.forcePathStyle ?? Boolean(endpoint),
      // No `Expect: 100-continue` (the SDK sends it for bodies of 2 MiB and more): @smithy's
      // node-http-handler sends every request that expects it through a fresh agent without
      // keep-alive, so each 5 MiB part paid a new TCP connection, a TLS handshake over HTTPS and
      // a wait for "100 Continue". A 154 MB dump through a proxy adding 25 ms each way: 2.29–2.59 s
      // instead of 3.86–4.22 s over HTTPS, 2.31–2.97 s instead of 2.77–3.31 s over HTTP
      // (docs/performance.md). The credentials and the bucket are checked before a dump starts,
      // so the body a refused part sends anyway is not a cost that matters.
      expectContinueHeader: false,
      // The SDK's default since v3.729.0 sends CRC32 checksums on every request, which R2, B2,
      // older MinIO and Ceph RGW reject or slow down; our own SHA-256 is the integrity check.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: t.maxAttempts,
      retryMode: 'standard',
      // requestTimeout only logs a warning unless throwOnRequestTimeout is set.
      requestHandler: { connectionTimeout: t.connectMs, requestTimeout: t.firstByteMs, throwOnRequestTimeout: true, socketTimeout: t.idleMs },
    };
    if (endpoint) config.endpoint = endpoint;
    if (settings.credentials) config.credentials = settings.credentials;
    trustCaBundle();
    this.client = new S3Client(config);
    this.readClient = new S3Client({ ...config, requestHandler: { connectionTimeout: t.connectMs, requestTimeout: t.firstByteMs, throwOnRequestTimeout: true, socketTimeout: t.readIdleMs } });
    this.#config = config;
    for (const client of [this.client, this.readClient]) this.#watchAnswers(client);
    this.#unsignedPayloadOverTls(this.client);
    this.#chunkedBodiesOverTls(this.client);
  }

  /**
   * Over HTTPS, the body of a PutObject or UploadPart larger than {@link TLS_WRITE_BYTES} is
   * written in slices of that size, each once the socket took the one before (a stream piped into
   * the request), instead of in one write. Node's TLS socket encrypts a whole write at once and
   * holds the encrypted copy in native memory until the kernel took it: one write of a part kept
   * up to a part size (5 MiB and up) of ciphertext per part in flight, beside the part's buffer.
   * Measured on a whole-server dump (21 databases, 2 at a time, 3 parts in flight) over HTTPS:
   * peak RSS 133–135 MiB against 119–120 over HTTP, the difference outside V8's heap and
   * ArrayBuffers. The slices are views of the part's buffer (no copy); the stream is made for
   * each attempt, here in the innermost step after signing and retries, so the SDK's retry of a
   * part sends it whole again from the same buffer. Over plain HTTP the socket writes straight
   * from the buffer, and the body is left as it is.
   */
  #chunkedBodiesOverTls(client: S3Client): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const request = args.request as { protocol?: string; body?: unknown } | undefined;
        const body = request?.body;
        if ((context.commandName === 'PutObjectCommand' || context.commandName === 'UploadPartCommand') && request?.protocol === 'https:' && body instanceof Uint8Array && body.byteLength > TLS_WRITE_BYTES) {
          // A shallow copy with its own body: the request the retry strategy holds keeps the buffer.
          const attempt = Object.assign(Object.create(Object.getPrototypeOf(request) as object) as object, request, { body: Readable.from(slices(body, TLS_WRITE_BYTES), { objectMode: false, highWaterMark: TLS_WRITE_BYTES }) });
          return next({ ...args, request: attempt });
        }
        return next(args);
      },
      { step: 'deserialize', priority: 'low', name: 'pgBackupChunkedBodyOverTls' },
    );
  }

  /**
   * Over HTTPS, the bodies of PutObject and UploadPart go with `x-amz-content-sha256:
   * UNSIGNED-PAYLOAD` instead of their SHA-256 in the signature (AWS S3 API Reference,
   * "Signature Calculations for the Authorization Header", unsigned payload option): the SDK would
   * otherwise hash every part once more besides the archive's own SHA-256, one pass over every
   * stored byte. TLS protects the bytes in transit and the manifest's SHA-256 proves them at rest
   * (verify, drill); the AWS SDKs for Java v2 and Go v2 and botocore do the same over HTTPS. Over
   * plain HTTP (a store on loopback or a private network) the payload stays signed.
   */
  #unsignedPayloadOverTls(client: S3Client): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const request = args.request as { protocol?: string; headers?: Record<string, string> } | undefined;
        if ((context.commandName === 'PutObjectCommand' || context.commandName === 'UploadPartCommand') && request?.protocol === 'https:' && request.headers) {
          request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
        }
        return next(args);
      },
      { step: 'build', name: 'pgBackupUnsignedPayloadOverTls' },
    );
  }

  /** Adds the middleware that notes every answer of `client`: that the endpoint answers, and its `Date` header. */
  #watchAnswers(client: S3Client): void {
    // Innermost, once per attempt: any HTTP answer (even an error status) proves the endpoint
    // answers; only a request that got none rejects here without a response. Its raw `Date`
    // header is the store's clock (serverTime).
    client.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        this.#answered = true;
        const date = (out.response as { headers?: Record<string, string | undefined> } | undefined)?.headers?.date;
        const serverDate = date ? new Date(date) : undefined;
        if (serverDate && !Number.isNaN(serverDate.getTime())) this.#lastDate = { serverDate, receivedAtMs: performance.now() };
        return out;
      },
      { step: 'deserialize', priority: 'low', name: 'pgBackupEndpointAnswered' },
    );
  }

  /** The abort signal of a request: the command's ({@link S3Settings.signal}) and `extra`, whichever fires first. */
  #abortSignal(extra?: AbortSignal): AbortSignal | undefined {
    const signals = [this.#settings.signal, extra].filter((s): s is AbortSignal => s !== undefined);
    return signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  }

  /** {@link mapS3Error} with what this storage knows: its endpoint, its limits, whether the endpoint ever answered. */
  #mapError(err: unknown, uri: string, action: S3Action): Error {
    return mapS3Error(err, uri, action, { endpoint: this.endpointLabel, answered: this.#answered, timeouts: this.timeouts });
  }

  /**
   * Request fields shared by every write: SSE and Object Lock. With Object Lock a checksum is
   * sent on every request (AWS rejects uploads to a locked bucket without one — Content-MD5 or
   * an x-amz-checksum header), even though optional checksums are otherwise off.
   */
  #writeParams(): Record<string, unknown> {
    const p: Record<string, unknown> = { ...this.#readParams() };
    const sse = this.#settings.sse;
    if (sse?.type === 'AES256') p.ServerSideEncryption = 'AES256';
    if (sse?.type === 'aws:kms') {
      p.ServerSideEncryption = 'aws:kms';
      if (sse.kmsKeyId) p.SSEKMSKeyId = sse.kmsKeyId;
    }
    const lock = this.#settings.objectLock;
    if (lock) {
      p.ObjectLockMode = lock.mode;
      p.ObjectLockRetainUntilDate = retainUntil(lock);
      p.ChecksumAlgorithm = 'CRC32';
    }
    return p;
  }

  /** Request fields every read of an SSE-C object must send. */
  #readParams(): Record<string, string> {
    const sse = this.#settings.sse;
    return sse?.type === 'sse-c' ? { SSECustomerAlgorithm: 'AES256', SSECustomerKey: sse.key } : {};
  }

  /** Warns once when the store's answer does not confirm the server-side encryption asked for (Ceph RGW 16 ignores SSE-S3). */
  #checkSseEcho(out: { ServerSideEncryption?: string; SSECustomerAlgorithm?: string } | undefined, uri: string, multipart = false): void {
    const sse = this.#settings.sse;
    // CompleteMultipartUpload's answer carries no SSE-C fields: nothing to check there.
    if (!sse || !out || this.#sseWarned || (multipart && sse.type === 'sse-c')) return;
    const confirmed = sse.type === 'sse-c' ? out.SSECustomerAlgorithm === 'AES256' : out.ServerSideEncryption === sse.type;
    if (!confirmed) {
      this.#sseWarned = true;
      this.onWarning?.(`the store did not confirm ${sse.type === 'sse-c' ? 'SSE-C' : sse.type === 'AES256' ? 'SSE-S3' : 'SSE-KMS'} for ${uri}: check that it supports server-side encryption, or enable default bucket encryption`);
    }
  }

  /** {@link mapS3Error}, knowing this driver's settings: a write refused as InvalidRequest with Object Lock asked for means the bucket has none. */
  #mapWriteError(err: unknown, uri: string): Error {
    const code = (err as { name?: string }).name;
    const message = (err as { message?: string }).message ?? '';
    if (this.#settings.objectLock && (code === 'InvalidRequest' || code === 'InvalidBucketState') && !/ssl|secure|encryption|customer/i.test(message)) {
      return new UsageError(`the bucket of ${uri} refused Object Lock retention (${code}): create it with Object Lock enabled (s3api create-bucket --object-lock-enabled-for-bucket), or drop --object-lock`);
    }
    return this.#mapError(err, uri, 'write');
  }

  #fullKey(key: string): string {
    assertSafeKey(key);
    return joinKey(this.#prefix, key);
  }

  uri(key: string): string {
    return `s3://${this.#bucket}/${this.#fullKey(key)}`;
  }

  keyOf(uri: string): string | undefined {
    const base = `s3://${this.#bucket}/${this.#prefix ? `${this.#prefix}/` : ''}`;
    return uri.startsWith(base) && uri.length > base.length ? uri.slice(base.length) : undefined;
  }

  /**
   * Streams `body` into `key` (see {@link streamToObject}). `options.onStored` learns the bytes
   * the store acknowledged. When `options.signal` or the command's signal aborts, the parts in
   * flight are cancelled at once, a CreateMultipartUpload in flight gets a few seconds to return
   * its id (so the upload can be aborted rather than left open), the AbortMultipartUpload is
   * bounded to a few seconds, and the promise rejects with the signal's reason within
   * ABORT_WATCHDOG_MS whatever the store does.
   */
  async upload(key: string, body: Readable, options: UploadOptions = {}): Promise<UploadResult> {
    const Key = this.#fullKey(key);
    const params = { ...this.#writeParams(), Bucket: this.#bucket, Key, ContentType: options.contentType ?? 'application/octet-stream', ...(options.noOverwrite ? { IfNoneMatch: '*' } : {}) };
    const signal = this.#abortSignal(options.signal);
    /** The caller's reason for an abort, as an Error (what a cancelled upload rejects with). */
    const abortReason = () => (signal?.reason instanceof Error ? signal.reason : new Error('upload aborted'));
    let uploadId: string | undefined;
    let settled = false;
    // streamToObject handles the abort itself (cancels the parts, destroys `body`, aborts the
    // multipart upload); this only adds a watchdog, below.
    const streamed = streamToObject(this.client, params, body, {
      partSize: choosePartSize(options.sizeHintBytes),
      queueSize: this.#queueSize,
      buffers: this.#partBuffers,
      signal,
      onUploadId: (id) => (uploadId = id),
      onStored: options.onStored,
      // The client with the long idle limit, and as long to start answering.
      complete: { client: this.readClient, requestTimeout: this.timeouts.readIdleMs },
    });
    streamed.then(
      () => (settled = true),
      () => (settled = true),
    );
    let stored: Awaited<typeof streamed>;
    try {
      // After an abort, streamToObject settles once its requests do; a request that ignores the
      // cancellation must not hold the process: give up waiting after ABORT_WATCHDOG_MS.
      stored = await Promise.race([
        streamed,
        new Promise<never>((_, reject) => {
          const arm = () => setTimeout(() => reject(abortReason()), ABORT_WATCHDOG_MS).unref();
          if (signal?.aborted) arm();
          else signal?.addEventListener('abort', arm, { once: true });
        }),
      ]);
      if (signal?.aborted) throw abortReason();
    } catch (err) {
      // streamToObject aborts its multipart upload itself before it rejects; only when it has not
      // settled (the watchdog fired) is the upload aborted here, by the id it reported.
      if (!settled && uploadId) await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(LATE_ABORT_MS) }).catch(() => undefined);
      throw signal?.aborted ? abortReason() : this.#mapWriteError(err, this.uri(key));
    }
    this.#checkSseEcho(stored.output, this.uri(key), Boolean(stored.uploadId));
    const lock = this.#settings.objectLock;
    if (lock && stored.uploadId) {
      // Ceph RGW 16 ignores the Object Lock headers of CreateMultipartUpload: set the retention
      // on the completed object (needs s3:PutObjectRetention; on AWS it re-states the same date).
      try {
        await this.client.send(new PutObjectRetentionCommand({ Bucket: this.#bucket, Key, Retention: { Mode: lock.mode, RetainUntilDate: retainUntil(lock) } }), { abortSignal: this.#abortSignal() });
      } catch (err) {
        throw this.#mapError(err, this.uri(key), 'retention');
      }
    }
    return { key, sizeBytes: stored.sizeBytes };
  }

  async put(key: string, body: string | Uint8Array, options?: string | PutOptions): Promise<void> {
    const { contentType = 'application/octet-stream', noOverwrite, signal } = putOptions(options);
    try {
      const out = await this.client.send(
        new PutObjectCommand({ ...this.#writeParams(), Bucket: this.#bucket, Key: this.#fullKey(key), Body: body, ContentType: contentType, ...(noOverwrite ? { IfNoneMatch: '*' } : {}) }),
        { abortSignal: this.#abortSignal(signal) },
      );
      this.#checkSseEcho(out, this.uri(key));
    } catch (err) {
      throw this.#mapWriteError(err, this.uri(key));
    }
  }

  /**
   * The store's clock (see `Storage.serverTime`): the `Date` of the newest answer, else of a
   * HeadBucket sent for it, once, without retries (any status: its error is ignored, the
   * command's own requests report what is wrong with the bucket or the credentials; one attempt,
   * so a store answering 503 or not at all costs the command at most `timeoutMs`, and its own
   * requests meet the store as they would have).
   */
  async serverTime(options: ServerTimeOptions = {}): Promise<ServerTime | undefined> {
    if (!this.#lastDate) {
      if (!this.#probeClient) this.#watchAnswers((this.#probeClient = new S3Client({ ...this.#config, maxAttempts: 1 })));
      const signal = this.#abortSignal(AbortSignal.any([AbortSignal.timeout(options.timeoutMs ?? 5_000), ...(options.signal ? [options.signal] : [])]));
      await this.#probeClient.send(new HeadBucketCommand({ Bucket: this.#bucket }), { abortSignal: signal }).catch(() => undefined);
    }
    return this.#lastDate;
  }

  /** See `Storage.probeWrite`. */
  async probeWrite(key: string, signal?: AbortSignal): Promise<void> {
    const Key = this.#fullKey(key);
    const abortSignal = this.#abortSignal(signal);
    let uploadId: string | undefined;
    try {
      const sent = this.client.send(new CreateMultipartUploadCommand({ ...this.#writeParams(), Bucket: this.#bucket, Key, ContentType: 'application/octet-stream' } as never), { abortSignal });
      // An upload created after a cancellation is aborted when its id arrives.
      sent.then((out) => {
        if (abortSignal?.aborted && out.UploadId) void this.client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId: out.UploadId }), { abortSignal: AbortSignal.timeout(LATE_ABORT_MS) }).catch(() => undefined);
      }, () => undefined);
      // A request that ignores the cancellation (a silent endpoint, between retries) must not hold the run.
      ({ UploadId: uploadId } = abortSignal ? await Promise.race([sent, new Promise<never>((_, reject) => {
        if (abortSignal.aborted) reject(abortSignal.reason);
        abortSignal.addEventListener('abort', () => reject(abortSignal.reason), { once: true });
      })]) : await sent);
    } catch (err) {
      if (abortSignal?.aborted) throw abortSignal.reason instanceof Error ? abortSignal.reason : new Error('write check aborted');
      throw this.#mapWriteError(err, this.uri(key));
    }
    // Nothing was uploaded; an abort that fails leaves an empty upload for the lifecycle rule's
    // AbortIncompleteMultipartUpload (`pg-backup lifecycle`) to clear.
    if (uploadId) await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(LATE_ABORT_MS) }).catch(() => undefined);
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#fullKey(key) }), { abortSignal: this.#abortSignal() });
    } catch (err) {
      const mapped = this.#mapError(err, this.uri(key), 'delete');
      if (!(mapped instanceof NotFoundError)) throw mapped;
    }
  }

  /**
   * Reads an object as ranged GETs (RFC 9110 §14; S3 GetObject `Range` and `If-Match`): the first
   * GET asks for the first range and learns the object's size (`Content-Range`) and ETag; an
   * object no larger than one range is then read whole by that one request (no HEAD, no second
   * request). A larger object is read as consecutive ranges, `concurrency` at once, each with
   * `If-Match: <ETag of the first answer>` so every byte comes from the same object version,
   * re-assembled in order ({@link orderedRangeStream}; memory at most concurrency × range size).
   * A range whose body breaks off (reset, idle timeout) is resumed where it broke, within the
   * same `maxAttempts` as every request; the SDK retries each request as usual. An object
   * replaced while it is read fails the stream with one line (exit 1). An empty object (which
   * a range cannot address: 416) is read with a plain GET.
   * @throws NotFoundError when the key does not exist; the mapped S3 error otherwise.
   */
  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const Key = this.#fullKey(key);
    const uri = this.uri(key);
    const rangeBytes = options.rangeBytes ?? this.#reads.rangeBytes;
    const concurrency = options.concurrency ?? this.#reads.concurrency;
    const abortSignal = this.#abortSignal(options.signal);
    let sseParams = this.#readParams();
    const request = async (extra: { Range?: string; IfMatch?: string }, signal: AbortSignal | undefined) => {
      const send = (params: Record<string, string>) => this.readClient.send(new GetObjectCommand({ ...params, ...extra, Bucket: this.#bucket, Key }), { abortSignal: signal });
      return send(sseParams).catch((err: unknown) => {
        // AWS refuses SSE-C headers on an object stored without SSE-C (one written before the
        // key was set, or by another tool): read it again without them.
        if (this.#settings.sse?.type === 'sse-c' && Object.keys(sseParams).length && /not applicable to this object/i.test((err as Error).message ?? '')) {
          sseParams = {};
          return send(sseParams);
        }
        throw err;
      });
    };
    let first: Awaited<ReturnType<typeof request>>;
    try {
      try {
        first = await request({ Range: `bytes=0-${rangeBytes - 1}` }, abortSignal);
      } catch (err) {
        // An empty object has no byte 0 to ask for: S3 answers 416 InvalidRange.
        if ((err as { name?: string }).name !== 'InvalidRange' && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 416) throw err;
        first = await request({}, abortSignal);
      }
    } catch (err) {
      throw this.#mapError(err, uri, 'read');
    }
    if (!first.Body) throw new Error(`empty response body for ${uri}`);
    const body = first.Body as Readable;
    const total = /\/(\d+)\s*$/.exec(first.ContentRange ?? '')?.[1];
    // A store that ignores Range answers 200 with the whole object; one range covers a small one.
    if (total === undefined || Number(total) <= rangeBytes) return body;
    const etag = first.ETag;
    if (!etag) {
      body.destroy();
      throw new Error(`S3 read of ${uri} failed: the store sent no ETag, so the parts of the object cannot be matched to one version`);
    }
    // A body that breaks off is resumed; a request that failed was already retried by the SDK.
    const retryable = (err: unknown) => {
      const e = err as { name?: string; noRetry?: boolean; $metadata?: { httpStatusCode?: number } };
      return !e.noRetry && e.name !== 'PreconditionFailed' && e.$metadata?.httpStatusCode !== 412 && e.name !== 'AbortError';
    };
    return orderedRangeStream({
      totalBytes: Number(total),
      rangeBytes,
      concurrency,
      maxAttempts: this.timeouts.maxAttempts,
      retryable,
      signal: abortSignal,
      first: { body, end: rangeBytes },
      fetch: async (start, end, signal) => {
        try {
          const out = await request({ Range: `bytes=${start}-${end - 1}`, IfMatch: etag }, signal);
          if (!out.Body) throw new Error(`empty response body for ${uri}`);
          return out.Body as Readable;
        } catch (err) {
          throw Object.assign(err instanceof Error ? err : new Error(String(err)), { noRetry: true });
        }
      },
      // One line for the reason a range failed: a replaced object, a cancellation, the mapped S3 error.
      describeError: (err) => {
        const e = err as Error & { $metadata?: { httpStatusCode?: number } };
        if (e.name === 'PreconditionFailed' || e.$metadata?.httpStatusCode === 412) {
          return new Error(`${uri} changed while it was being read (its ETag no longer matches ${etag}): another writer replaced the object; read it again`);
        }
        return abortSignal?.aborted && err === abortSignal.reason ? (err as Error) : this.#mapError(err, uri, 'read');
      },
    });
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
      for await (const page of paginateListObjectsV2({ client: this.client, pageSize: this.#listPageSize }, { Bucket: this.#bucket, Prefix: listPrefix }, { abortSignal: this.#abortSignal() })) {
        for (const obj of page.Contents ?? []) {
          if (!obj.Key || !isSafeKey(obj.Key.slice(strip))) continue;
          yield { key: obj.Key.slice(strip), sizeBytes: obj.Size ?? 0, lastModified: obj.LastModified ?? new Date(0) };
        }
      }
    } catch (err) {
      throw this.#mapError(err, `${this.url}/${prefix}`, 'list');
    }
  }
}

/** What a request did, for messages. */
export type S3Action = 'read' | 'write' | 'list' | 'delete' | 'retention';

/** What a driver knows when it maps an error: where requests go, whether that endpoint ever answered, the limits in force. */
export interface S3ErrorContext {
  endpoint: string;
  answered: boolean;
  timeouts: S3Timeouts;
}

/** `20 s`, `1.5 s`, `500 ms`. */
function formatLimit(ms: number): string {
  return ms >= 1000 ? `${Number((ms / 1000).toFixed(1))} s` : `${ms} ms`;
}

/**
 * The one line for a request that timed out after its retries: which endpoint, what did not
 * answer (connection, first byte, a silent connection), after how many attempts. A
 * {@link UsageError} (exit 2) when the endpoint never answered any request of this run (a wrong
 * endpoint, a firewall: nothing was stored), else an Error (exit 1: it answered, then stopped).
 */
function timeoutError(err: Error & { $metadata?: { attempts?: number } }, uri: string, action: S3Action, ctx: S3ErrorContext): Error {
  const t = ctx.timeouts;
  const m = err.message;
  const what = /establish a connection/.test(m)
    ? `did not accept a connection within ${formatLimit(t.connectMs)}`
    : /requestTimeout/.test(m)
      ? `did not start answering within ${formatLimit(t.firstByteMs)}`
      : /inactivity/.test(m)
        ? `went silent (no byte for ${formatLimit(Number(/after (\d+) ms/.exec(m)?.[1] ?? t.idleMs))})`
        : `timed out (${m})`;
  const attempts = err.$metadata?.attempts ?? t.maxAttempts;
  const line = `the S3 endpoint ${ctx.endpoint} ${what} on ${action} of ${uri} (${attempts} attempt${attempts > 1 ? 's' : ''})`;
  return ctx.answered
    ? new Error(`${line}: it answered earlier in this run and then stopped; check the store's health and the network (limits: PG_BACKUP_S3_*_TIMEOUT)`)
    : new UsageError(`${line}; it never answered: check AWS_ENDPOINT_URL_S3 / --endpoint, firewalls and proxies (limits: PG_BACKUP_S3_*_TIMEOUT)`);
}

/**
 * What is wrong with an HTTPS endpoint's certificate and what to do about it, from the error code
 * Node's TLS gives it (OpenSSL's verify results, `X509_V_ERR_*` without the prefix, and Node's
 * host name check: Node.js docs, "tls: X509 certificate error codes"), or undefined for any other
 * error.
 */
function certificateProblem(code: string): { problem: string; todo: string } | undefined {
  const untrusted = { problem: 'is not signed by a CA this machine trusts', todo: `if the store's certificate is signed by your own CA, give that CA's certificate (PEM) in ${S3_CA_BUNDLE_ENV}=/path/to/ca.pem` };
  const renew = "renew the store's certificate (or check this machine's clock)";
  switch (code) {
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'CERT_UNTRUSTED':
    case 'CERT_SIGNATURE_FAILURE':
      return untrusted;
    case 'CERT_HAS_EXPIRED':
      return { problem: 'has expired', todo: renew };
    case 'CERT_NOT_YET_VALID':
      return { problem: 'is not valid yet', todo: renew };
    case 'CERT_REVOKED':
      return { problem: 'is revoked', todo: "replace the store's certificate" };
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return { problem: 'is for another host name', todo: 'give AWS_ENDPOINT_URL_S3 the host name the certificate was issued for' };
    default:
      return undefined;
  }
}

/**
 * Turns an AWS SDK error into a one-line, actionable error. Mistakes in configuration
 * (unknown bucket, rejected credentials, missing permission, unreachable endpoint) become
 * {@link UsageError} (exit 2); a missing key becomes {@link NotFoundError}; a request cancelled
 * by the command's signal becomes the signal's reason; a request that timed out after its
 * retries becomes one line naming the endpoint and what did not answer (with `ctx`: exit 2 when
 * the endpoint never answered, 1 otherwise); anything else is returned unchanged.
 */
export function mapS3Error(err: unknown, uri: string, action: S3Action, ctx?: S3ErrorContext): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  if (err instanceof UsageError || err instanceof NotFoundError) return err;
  // Cancelled (SIGINT/SIGTERM, a failed sibling): the reason, not "Request aborted".
  if (err.name === 'AbortError' && err.cause instanceof Error) return err.cause;
  // The handler names resets TimeoutError too (code ECONNRESET/EPIPE): those are handled below.
  const errCode = (err as { code?: string }).code;
  if (ctx && err.name === 'TimeoutError' && (errCode === undefined || errCode === 'ETIMEDOUT') && !(err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode) {
    return timeoutError(err, uri, action, ctx);
  }
  const e = err as Error & { Code?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const code = e.name || e.Code || e.code || '';
  const status = e.$metadata?.httpStatusCode;
  const bucket = uri.replace(/^s3:\/\//, '').split('/')[0];
  const message = e.message ?? '';
  if (code === 'PreconditionFailed' && action === 'write') return new OverwriteError(`${uri} already exists: refusing to overwrite it (If-None-Match)`);
  if (code === 'InvalidArgument' || code === 'InvalidRequest' || status === 400) {
    if (/customer provided keys|SSECustomer|SSE-C|stored using a form of Server Side Encryption/i.test(message) || /encryption algorithm/i.test(message)) {
      return new UsageError(`${uri} is encrypted with SSE-C: give its key in PG_BACKUP_SSE_C_KEY (actions: the sse-c-key input)`);
    }
    if (/MD5 hash of the key/i.test(message)) return new UsageError(`the SSE-C key does not match the one ${uri} was written with`);
  }
  if (/kms/i.test(message) && (code === 'InvalidAccessKeyId' || code === 'KMS.NotFoundException' || code === 'InvalidArgument' || status === 400 || status === 403)) {
    return new UsageError(`the KMS key for ${uri} cannot be used (${code}): check --sse-kms-key-id and the key's policy`);
  }
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
      return new UsageError(`access denied to ${action} ${uri}: the credentials lack the ${{ write: 's3:PutObject', list: 's3:ListBucket', read: 's3:GetObject', delete: 's3:DeleteObject', retention: 's3:PutObjectRetention' }[action]} permission there`);
    case 'CredentialsProviderError':
      return new UsageError('no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile / OIDC role)');
    default:
      break;
  }
  if (status === 404 && action !== 'write') return new NotFoundError(`${uri} does not exist`);
  if (status === 403) return new UsageError(`access denied to ${action} ${uri} (HTTP 403): check the credentials and their permissions`);
  const sysCode = (e as { code?: string }).code ?? (e.cause as { code?: string } | undefined)?.code;
  const certificate = sysCode ? certificateProblem(sysCode) : undefined;
  if (certificate) return new UsageError(`cannot reach ${uri} over HTTPS: the endpoint's certificate ${certificate.problem} (${sysCode}); ${certificate.todo}`);
  if (sysCode && ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'].includes(sysCode)) {
    return new UsageError(`cannot reach the S3 endpoint for ${uri} (${sysCode}): check AWS_ENDPOINT_URL_S3 and the network`);
  }
  if (sysCode && ['ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(sysCode)) {
    // A network that fails mid-transfer (after the SDK's retries) is a failure, not a mistake.
    return new Error(`S3 ${action} of ${uri} failed after retries: the connection broke (${sysCode})`);
  }
  return new Error(`S3 ${action} of ${uri} failed: ${code ? `${code}: ` : ''}${e.message}`);
}
