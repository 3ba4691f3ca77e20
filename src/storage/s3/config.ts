import { readFileSync } from 'node:fs';
import { parseDuration } from '../../duration.ts';
import { UsageError } from '../../errors.ts';
import { DEFAULT_READ_CONCURRENCY, DEFAULT_READ_RANGE_BYTES } from '../storage.ts';

// The S3 driver's settings, limits and their environment variables: what opening an S3 location
// checks before any request. Kept apart from the driver (s3.ts), which loads the AWS SDK, so that
// a command reads them without loading the SDK until its first request (src/storage/s3/lazy.ts).

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
  /** Do not fall back to `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (a mirror's endpoint is never the primary's). */
  ignoreEnvEndpoint?: boolean;
  /** Server-side encryption of every object written (and, for SSE-C, the key to read them). */
  sse?: ServerSideEncryption;
  /** Object Lock retention put on every object written (the bucket must have Object Lock enabled). */
  objectLock?: ObjectLockSettings;
  /**
   * The command's cancellation (SIGINT/SIGTERM): every request of this storage takes it as its
   * `abortSignal`, so an aborted command ends its requests in flight at once instead of waiting
   * for their timeouts. See {@link S3Storage.upload} for what an upload does when it fires.
   */
  signal?: AbortSignal;
}

/**
 * The S3 client's network limits. Every request has all of them, set through the SDK's own
 * `NodeHttpHandler` and retry settings (AWS SDK for JavaScript v3 developer guide, "Configuring
 * timeouts" / "Configuring retries"):
 * - `connectMs`: the TCP connection must be established within this (`connectionTimeout`).
 * - `firstByteMs`: the answer's status line must arrive within this of the request's start
 *   (`requestTimeout` with `throwOnRequestTimeout`). Not for requests that carry a part: their
 *   send time depends on the link, and `idleMs` bounds both the send and the wait for the answer.
 * - `idleMs`: a connection on which no byte moves either way for this long fails (`socketTimeout`).
 * - `readIdleMs`: the same while an object's body is read (GetObject): longer, because the
 *   reader may rightly pause (pg_restore waiting for a lock in the target database). Also both
 *   limits of CompleteMultipartUpload, which a store may take long to answer on a large upload.
 * - `maxAttempts`: each request is tried at most this often (`maxAttempts`, `retryMode:
 *   'standard'`: exponential backoff with jitter; timeouts, resets, 5xx and throttling retried).
 */
export interface S3Timeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
  readIdleMs: number;
  maxAttempts: number;
}

/** The defaults of {@link S3Timeouts}: a silent endpoint fails a request within about 2 minutes (see {@link silentEndpointBoundMs}). */
export const DEFAULT_S3_TIMEOUTS: Readonly<S3Timeouts> = { connectMs: 10_000, firstByteMs: 20_000, idleMs: 20_000, readIdleMs: 120_000, maxAttempts: 4 };

/** The environment variables that override {@link DEFAULT_S3_TIMEOUTS} (durations such as `20s`, `1m`, `500ms`; attempts a whole number). */
export const S3_TIMEOUT_ENV = {
  connectMs: 'PG_BACKUP_S3_CONNECT_TIMEOUT',
  firstByteMs: 'PG_BACKUP_S3_FIRST_BYTE_TIMEOUT',
  idleMs: 'PG_BACKUP_S3_IDLE_TIMEOUT',
  readIdleMs: 'PG_BACKUP_S3_READ_IDLE_TIMEOUT',
  maxAttempts: 'PG_BACKUP_S3_MAX_ATTEMPTS',
} as const;

/**
 * The S3 network limits: {@link DEFAULT_S3_TIMEOUTS}, each overridden by its variable in
 * {@link S3_TIMEOUT_ENV} when set.
 * @throws UsageError for a value that is not a positive duration (or, for attempts, not 1–10).
 */
export function s3Timeouts(env: NodeJS.ProcessEnv = process.env): S3Timeouts {
  const out: S3Timeouts = { ...DEFAULT_S3_TIMEOUTS };
  for (const [field, name] of Object.entries(S3_TIMEOUT_ENV) as [keyof S3Timeouts, string][]) {
    const raw = env[name]?.trim();
    if (!raw) continue;
    if (field === 'maxAttempts') {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1 || n > 10) throw new UsageError(`${name}=${JSON.stringify(raw)} must be a whole number from 1 to 10`);
      out.maxAttempts = n;
      continue;
    }
    const ms = parseDuration(raw, name);
    if (!(ms > 0)) throw new UsageError(`${name}=${JSON.stringify(raw)} must be longer than 0 (e.g. 20s)`);
    out[field] = ms;
  }
  return out;
}

/** The environment variable that names extra CA certificates for an HTTPS endpoint (the AWS CLI's name for it). */
export const S3_CA_BUNDLE_ENV = 'AWS_CA_BUNDLE';

/** The PEM blocks of the certificates in a CA bundle file. */
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** The name of the `AWS_CA_BUNDLE` file, or undefined when the variable is unset or empty. */
export function caBundleFile(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[S3_CA_BUNDLE_ENV]?.trim() || undefined;
}

/**
 * The CA certificates named by `AWS_CA_BUNDLE` (a PEM file, one or more certificates), to trust
 * for an HTTPS endpoint beside Node's own (its bundled roots and `NODE_EXTRA_CA_CERTS`): a MinIO
 * or Ceph behind an internal CA, a network that re-signs TLS. The AWS CLI and botocore read the
 * same variable ("AWS_CA_BUNDLE: the path to a certificate bundle to use for HTTPS certificate
 * validation", AWS CLI user guide, environment variables), where it replaces their default
 * bundle; the AWS SDK for JavaScript v3 does not read it (aws/aws-sdk-js#2970). Here it adds to
 * the trusted CAs (the S3 driver's `trustCaBundle`), so a bundle holding only the internal CA
 * still lets AWS S3 itself be reached.
 * Returns the file and its PEM blocks, or undefined when the variable is unset or empty.
 * @throws UsageError when the file cannot be read or holds no PEM certificate.
 */
export function caBundle(env: NodeJS.ProcessEnv = process.env): { file: string; certificates: string[] } | undefined {
  const file = caBundleFile(env);
  if (!file) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new UsageError(`${S3_CA_BUNDLE_ENV}=${JSON.stringify(file)} cannot be read (${code}): give the path of a PEM file with the CA certificates of the S3 endpoint, or unset it`);
  }
  const certificates = text.match(PEM_CERTIFICATE);
  if (!certificates) throw new UsageError(`${S3_CA_BUNDLE_ENV}=${JSON.stringify(file)} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA certificates of the S3 endpoint in PEM form, or unset it`);
  return { file, certificates };
}

/** The environment variables that set how large objects are read: bytes per ranged GET (`8MiB`, `512KiB`, a plain number of bytes) and ranged GETs in flight. */
export const S3_READ_ENV = { rangeBytes: 'PG_BACKUP_S3_READ_RANGE_SIZE', concurrency: 'PG_BACKUP_S3_READ_CONCURRENCY' } as const;

/**
 * How large objects are read: {@link DEFAULT_READ_RANGE_BYTES} and {@link DEFAULT_READ_CONCURRENCY},
 * each overridden by its variable in {@link S3_READ_ENV}.
 * @throws UsageError for a range size that is not 64KiB–1GiB or a concurrency that is not 1–32.
 */
export function readRangeSettings(env: NodeJS.ProcessEnv = process.env): { rangeBytes: number; concurrency: number } {
  let rangeBytes = DEFAULT_READ_RANGE_BYTES;
  let concurrency = DEFAULT_READ_CONCURRENCY;
  const rawSize = env[S3_READ_ENV.rangeBytes]?.trim();
  if (rawSize) {
    const m = /^(\d+)\s*(B|KiB|MiB|GiB)?$/i.exec(rawSize);
    const unit = { b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 }[(m?.[2] ?? 'b').toLowerCase() as 'b'];
    const n = m ? Number(m[1]) * unit : NaN;
    if (!(n >= 64 * 1024 && n <= 1024 ** 3)) throw new UsageError(`${S3_READ_ENV.rangeBytes}=${JSON.stringify(rawSize)} must be a size from 64KiB to 1GiB (e.g. 8MiB)`);
    rangeBytes = n;
  }
  const rawConcurrency = env[S3_READ_ENV.concurrency]?.trim();
  if (rawConcurrency) {
    const n = Number(rawConcurrency);
    if (!Number.isInteger(n) || n < 1 || n > 32) throw new UsageError(`${S3_READ_ENV.concurrency}=${JSON.stringify(rawConcurrency)} must be a whole number from 1 to 32`);
    concurrency = n;
  }
  return { rangeBytes, concurrency };
}

/**
 * The longest a request to an endpoint that accepts connections and never answers can take,
 * retries included, in ms: per attempt the idle limit plus the SDK's 3 s deferral of the idle
 * timer (a request that carries no part ends at the first-byte limit if that comes first; parts go
 * without `Expect: 100-continue`, so there is no wait for `100 Continue`), plus the standard retry
 * strategy's backoff (at most 20 s per retry, far less at first).
 */
export function silentEndpointBoundMs(t: S3Timeouts): number {
  const perAttempt = t.idleMs + 3_000;
  const backoff = [...Array(t.maxAttempts - 1).keys()].reduce((sum, i) => sum + Math.min(20_000, 100 * 2 ** (i + 1)), 0);
  return t.maxAttempts * perAttempt + backoff;
}

/**
 * Server-side encryption (AWS S3 User Guide, "Protecting data with server-side encryption"):
 * - `AES256`: SSE-S3, keys managed by the store.
 * - `aws:kms`: SSE-KMS with `kmsKeyId` (default: the account's `aws/s3` key). Ceph RGW: a key id of its KMS backend.
 * - `sse-c`: SSE-C, a 256-bit key given as base64 (44 characters) that the store uses and forgets:
 *   every read must send it again. Ceph RGW needs TLS for it unless `rgw crypt require ssl = false`.
 */
export type ServerSideEncryption = { type: 'AES256' } | { type: 'aws:kms'; kmsKeyId?: string } | { type: 'sse-c'; key: string };

/**
 * Object Lock retention (AWS S3 User Guide, "Locking objects with Object Lock"): each object is
 * kept for `days` days from its write. `GOVERNANCE`: users with s3:BypassGovernanceRetention may
 * still delete; `COMPLIANCE`: nobody can, not even the root account, until the date passes.
 */
export interface ObjectLockSettings {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  days: number;
}

/** The retain-until date of an object written now under `lock`, rounded up to the next whole second. */
export function retainUntil(lock: ObjectLockSettings, now = Date.now()): Date {
  return new Date(Math.ceil((now + lock.days * 86_400_000) / 1000) * 1000);
}
/** Where the requests of an S3 location go, as {@link s3Endpoint} resolves it. */
export interface S3Endpoint {
  /** The custom endpoint, or undefined for AWS S3 itself. */
  endpoint: string | undefined;
  region: string;
  /** For messages: the custom endpoint's origin, else `AWS S3 (<region>)`. */
  label: string;
}

/**
 * The endpoint and region of `settings`, with their environment fallbacks: endpoint
 * `settings.endpoint`, else (unless `ignoreEnvEndpoint`) `AWS_ENDPOINT_URL_S3`, then
 * `AWS_ENDPOINT_URL`; region `settings.region`, else `AWS_REGION`, `AWS_DEFAULT_REGION`, `us-east-1`.
 * @throws UsageError for an endpoint that is not a URL.
 */
export function s3Endpoint(settings: S3Settings): S3Endpoint {
  const endpoint = settings.endpoint || (settings.ignoreEnvEndpoint ? undefined : process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL) || undefined;
  if (endpoint) {
    try {
      new URL(endpoint);
    } catch {
      throw new UsageError(`invalid S3 endpoint ${JSON.stringify(endpoint)}: give a URL such as https://ACCOUNT.r2.cloudflarestorage.com`);
    }
  }
  const region = settings.region || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1';
  return { endpoint, region, label: endpoint ? new URL(endpoint).origin : `AWS S3 (${region})` };
}
