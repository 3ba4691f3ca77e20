import { UsageError, registerSecret } from '../errors.ts';
import type { ObjectLockSettings, S3Settings, ServerSideEncryption } from './s3/config.ts';

/**
 * Parsing of the protection settings shared by the CLI and the actions: server-side encryption,
 * the SSE-C key, Object Lock retention and the mirror's own credentials. Every function throws
 * {@link UsageError} with one line naming the fix.
 */

/** Values of `--sse` / the `sse` input. */
export const SSE_TYPES = ['AES256', 'aws:kms', 'sse-c'] as const;

/**
 * The SSE-C key from `PG_BACKUP_SSE_C_KEY` (or `value`): 32 random bytes as base64, e.g.
 * `openssl rand -base64 32`. Registered as a secret so no message ever prints it.
 * @throws UsageError when it is not 32 bytes of base64.
 */
export function sseCustomerKey(value: string | undefined = process.env.PG_BACKUP_SSE_C_KEY): string | undefined {
  const key = value?.trim();
  if (!key) return undefined;
  registerSecret(key);
  if (!/^[A-Za-z0-9+/]{43}=$/.test(key) || Buffer.from(key, 'base64').length !== 32) {
    throw new UsageError('the SSE-C key (PG_BACKUP_SSE_C_KEY) must be 32 bytes in base64 (44 characters): make one with "openssl rand -base64 32"');
  }
  return key;
}

/**
 * Server-side encryption from `--sse` (`AES256`, `aws:kms`, `sse-c`), `--sse-kms-key-id` and the
 * SSE-C key. Without `--sse`, an SSE-C key alone means `sse-c` (reads of SSE-C objects need it).
 * @throws UsageError for an unknown type, a KMS key id without `aws:kms`, or `sse-c` without a key.
 */
export function parseSse(type: string | undefined, kmsKeyId: string | undefined, customerKey: string | undefined): ServerSideEncryption | undefined {
  const t = type?.trim();
  if (kmsKeyId && t !== 'aws:kms') throw new UsageError('--sse-kms-key-id needs --sse aws:kms');
  if (!t) return customerKey ? { type: 'sse-c', key: customerKey } : undefined;
  if (t === 'AES256') return { type: 'AES256' };
  if (t === 'aws:kms') return { type: 'aws:kms', kmsKeyId: kmsKeyId?.trim() || undefined };
  if (t === 'sse-c') {
    if (!customerKey) throw new UsageError('--sse sse-c needs the key in PG_BACKUP_SSE_C_KEY (32 bytes, base64: openssl rand -base64 32)');
    return { type: 'sse-c', key: customerKey };
  }
  throw new UsageError(`unknown server-side encryption ${JSON.stringify(t)}: use ${SSE_TYPES.join(', ')}`);
}

/**
 * Object Lock retention from `MODE:DAYS`, e.g. `compliance:30` or `governance:7`.
 * @throws UsageError for another shape, an unknown mode, or days outside 1–36500.
 */
export function parseObjectLock(text: string | undefined): ObjectLockSettings | undefined {
  const t = text?.trim();
  if (!t) return undefined;
  const m = /^(governance|compliance):(\d{1,5})$/i.exec(t);
  const days = m ? Number(m[2]) : NaN;
  if (!m || days < 1 || days > 36_500) {
    throw new UsageError(`invalid Object Lock retention ${JSON.stringify(t)}: use MODE:DAYS with MODE governance or compliance and 1-36500 days, e.g. compliance:30`);
  }
  return { mode: m[1]!.toUpperCase() as ObjectLockSettings['mode'], days };
}

/**
 * The mirror's S3 settings: its own endpoint and region, and its own credentials from
 * `PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID` / `…_SECRET_ACCESS_KEY` / `…_SESSION_TOKEN` (else the
 * SDK's default chain). It inherits server-side encryption (a KMS key id only from
 * `kmsKeyId`: keys are per region) and Object Lock.
 * @throws UsageError when only one of the key id and secret is set.
 */
export function mirrorSettings(
  base: S3Settings,
  o: { endpoint?: string; region?: string; kmsKeyId?: string; accessKeyId?: string; secretAccessKey?: string; sessionToken?: string },
  env: NodeJS.ProcessEnv = process.env,
): S3Settings {
  const id = o.accessKeyId || env.PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID;
  const secret = o.secretAccessKey || env.PG_BACKUP_MIRROR_AWS_SECRET_ACCESS_KEY;
  const token = o.sessionToken || env.PG_BACKUP_MIRROR_AWS_SESSION_TOKEN;
  registerSecret(secret);
  registerSecret(token);
  if (Boolean(id) !== Boolean(secret)) throw new UsageError('give both the mirror access key id and its secret (PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY), or neither');
  const sse = base.sse?.type === 'aws:kms' ? { type: 'aws:kms' as const, kmsKeyId: o.kmsKeyId || undefined } : base.sse;
  return {
    endpoint: o.endpoint || undefined,
    region: o.region || undefined,
    // A mirror endpoint given explicitly is not taken from the primary's AWS_ENDPOINT_URL* variables.
    ignoreEnvEndpoint: true,
    credentials: id && secret ? { accessKeyId: id, secretAccessKey: secret, sessionToken: token || undefined } : undefined,
    sse,
    objectLock: base.objectLock,
    signal: base.signal,
  };
}

/**
 * Read-only credentials for the verify that follows a dump, from
 * `PG_BACKUP_READER_AWS_ACCESS_KEY_ID` / `…_SECRET_ACCESS_KEY` / `…_SESSION_TOKEN` (or `o`):
 * the dump's own credentials can then be write-only. Undefined when none is set (the verify
 * uses the dump's settings).
 * @throws UsageError when only one of the key id and secret is set.
 */
export function readerSettings(
  base: S3Settings,
  o: { accessKeyId?: string; secretAccessKey?: string; sessionToken?: string } = {},
  env: NodeJS.ProcessEnv = process.env,
): S3Settings | undefined {
  const id = o.accessKeyId || env.PG_BACKUP_READER_AWS_ACCESS_KEY_ID;
  const secret = o.secretAccessKey || env.PG_BACKUP_READER_AWS_SECRET_ACCESS_KEY;
  const token = o.sessionToken || env.PG_BACKUP_READER_AWS_SESSION_TOKEN;
  registerSecret(secret);
  registerSecret(token);
  if (Boolean(id) !== Boolean(secret)) throw new UsageError('give both the reader access key id and its secret (PG_BACKUP_READER_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY), or neither');
  if (!id || !secret) return undefined;
  return { endpoint: base.endpoint, region: base.region, sse: base.sse?.type === 'sse-c' ? base.sse : undefined, credentials: { accessKeyId: id, secretAccessKey: secret, sessionToken: token || undefined }, signal: base.signal };
}
