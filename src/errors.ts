/**
 * Error classes that decide the exit code and how an error is shown.
 *
 * - {@link UsageError}: the user's mistake (bad URL, missing credential, unknown bucket, pg_dump
 *   older than the server). One line that says what is wrong and what to do; exit code 2; no stack.
 * - {@link CheckFailedError}: a check failed (verify found a corrupt object, a drill's row counts
 *   differ). One line with the reason; exit code 1.
 * - Anything else is a bug or an unexpected failure: exit code 1, the stack may be shown.
 */

/** A user mistake: exit code 2, shown as one line without a stack. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = 2;
}

/** A check that failed (verify, drill): exit code 1, shown as one line. */
export class CheckFailedError extends Error {
  override readonly name = 'CheckFailedError';
  readonly exitCode = 1;
}

/** Exit code for any error: 2 for {@link UsageError}, 1 otherwise. */
export function exitCodeOf(error: unknown): number {
  return error instanceof UsageError ? 2 : 1;
}

/** Secrets registered here are replaced by `***` by {@link redact}. */
const secrets = new Set<string>();

/**
 * Registers a secret (a password, an S3 secret key) so that {@link redact} hides it in every
 * message this process prints. Strings shorter than 3 characters are ignored (they would hide
 * ordinary text).
 */
export function registerSecret(secret: string | undefined): void {
  if (secret && secret.length >= 3) {
    secrets.add(secret);
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret) secrets.add(encoded);
  }
}

/**
 * Hides secrets in a text: every registered secret (longest first); the password of any
 * `scheme://user:password@host` URL, up to the last `@` of the word (so a password with an
 * unencoded `@` or `/` is hidden whole); and the value of `password=` / `sslpassword=`… in a
 * libpq `key=value` string or a URL query (quoted or not). Each becomes `***`.
 */
export function redact(text: string): string {
  // Registered secrets first, longest first: a whole registered URL (a webhook's, with its user)
  // is hidden before the URL pattern below rewrites its password and so changes it.
  let out = text;
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) out = out.split(secret).join('***');
  out = out.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*:)(\S*)@/gi, '$1***@');
  out = out.replace(/\b((?:ssl)?password|oauth_client_secret|scram_(?:client|server)_key)(\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&'"]+)/gi, '$1$2***');
  return out;
}

/** The message of any thrown value, with secrets redacted. */
export function messageOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return redact(message);
}
