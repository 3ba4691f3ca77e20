import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';

/**
 * What of a webhook, healthcheck or Pushgateway URL may be shown: `scheme://host:port` (the
 * port only when the URL names one). The user, password, path and query may all be secrets
 * (`https://hooks.slack.com/services/T…/B…/<token>`, `https://hc-ping.com/<uuid>`, `?token=…`).
 */
export function shownUrl(url: URL): string {
  return `${url.protocol}//${url.host}`;
}

/**
 * The parts of a URL to register as secrets (so {@link redact} hides them wherever they
 * appear): the whole URL, the URL without its credentials, its path with the query, its
 * password (as written and decoded) and `user:password`. Parts shorter than 3 characters
 * (a bare `/`) are left out by `registerSecret`.
 */
export function urlSecrets(value: string): string[] {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return [value];
  }
  const out = [value, u.href, `${u.pathname}${u.search}`];
  if (u.pathname.length > 1) out.push(u.pathname);
  if (u.search.length > 1) out.push(u.search.slice(1));
  if (u.password) out.push(u.password, safeDecode(u.password), `${u.username}:${u.password}`, `${safeDecode(u.username)}:${safeDecode(u.password)}`);
  const bare = new URL(u.href);
  bare.username = '';
  bare.password = '';
  out.push(bare.href);
  return [...new Set(out)];
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * Moves `user:password@` out of a URL into an HTTP Basic `Authorization` header (RFC 7617;
 * percent-encoded parts decoded), as curl does: `fetch` refuses a URL with credentials. An
 * `authorization` header already in `headers` wins.
 */
export function withBasicAuth(url: URL, headers?: RequestInit['headers']): { url: URL; headers: Headers } {
  const target = new URL(url.href);
  const out = new Headers(headers);
  if (target.username || target.password) {
    if (!out.has('authorization')) out.set('authorization', `Basic ${Buffer.from(`${safeDecode(target.username)}:${safeDecode(target.password)}`).toString('base64')}`);
    target.username = '';
    target.password = '';
  }
  return { url: target, headers: out };
}

/** How a delivery (push, webhook, ping) is bounded. */
export interface DeliveryOptions {
  /** Per-attempt limit in ms (connect, send, and the whole response). */
  timeoutMs: number;
  /** Attempts in all (default {@link DEFAULT_ATTEMPTS}). */
  attempts?: number;
  /** Pause before the second attempt in ms, doubled for each later one (default 1000). */
  backoffMs?: number;
  logger: Logger;
}

/** Attempts per delivery: the first and two retries. */
export const DEFAULT_ATTEMPTS = 3;

/** Default per-attempt timeout: 10 s, as healthchecks.io suggests for its pings (`curl -m 10`). */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Sends one HTTP request (POST by default) with a per-attempt timeout, retrying network errors,
 * timeouts, 429 and 5xx responses with exponential backoff. Delivery never changes a command's
 * outcome: a final failure is one warning (naming `what` and only the URL's `scheme://host:port`,
 * see {@link shownUrl}: its path, query and credentials may be tokens) and `false`; this function
 * never throws. Credentials in the URL (`https://user:password@host/…`) are sent as HTTP Basic
 * auth ({@link withBasicAuth}).
 * Worst case it takes `attempts × timeoutMs + backoffMs × (2^(attempts-1) - 1)`.
 * @returns true when the endpoint answered 2xx (or 3xx).
 */
export async function deliver(what: string, url: URL, init: RequestInit, options: DeliveryOptions): Promise<boolean> {
  const attempts = Math.max(1, options.attempts ?? DEFAULT_ATTEMPTS);
  const backoffMs = options.backoffMs ?? 1000;
  const request = withBasicAuth(url, init.headers);
  let last = '';
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, backoffMs * 2 ** (i - 1)));
    const signal = AbortSignal.timeout(options.timeoutMs);
    try {
      // A cross-origin redirect drops the Authorization header (Fetch standard, "HTTP-redirect fetch").
      const response = await fetch(request.url, { ...init, headers: request.headers, signal, redirect: 'follow' });
      const text = await response.text().catch(() => '');
      if (response.ok) return true;
      last = `HTTP ${response.status}${text.trim() ? `: ${text.trim().split('\n')[0]!.slice(0, 200)}` : ''}`;
      if (response.status !== 429 && response.status < 500) break; // the request is wrong: retrying will not help
    } catch (err) {
      last = signal.aborted ? `no answer within ${options.timeoutMs / 1000} s` : describeFetchError(err);
    }
  }
  options.logger.warn(`${what} not delivered to ${shownUrl(url)} (${scrubUrl(last, url)}); the command's result is unchanged`);
  return false;
}

/** `text` with every form of `url` (whole, without credentials, its path and query) replaced by its `scheme://host:port`. */
function scrubUrl(text: string, url: URL): string {
  let out = text;
  const forms = urlSecrets(url.href).filter((f) => f.length >= 3).sort((a, b) => b.length - a.length);
  for (const form of forms) out = out.split(form).join(form.includes('://') ? shownUrl(url) : '…');
  return out;
}

/** fetch's "fetch failed" with its cause (ECONNREFUSED, ENOTFOUND …). */
function describeFetchError(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  const code = (cause as { code?: string } | undefined)?.code;
  return code ? `${messageOf(err)}: ${code}` : messageOf(cause ?? err);
}
