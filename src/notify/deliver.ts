import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';

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
 * outcome: a final failure is one warning (naming `what`, never the URL, which may carry a
 * token) and `false`; this function never throws.
 * Worst case it takes `attempts × timeoutMs + backoffMs × (2^(attempts-1) - 1)`.
 * @returns true when the endpoint answered 2xx (or 3xx).
 */
export async function deliver(what: string, url: URL, init: RequestInit, options: DeliveryOptions): Promise<boolean> {
  const attempts = Math.max(1, options.attempts ?? DEFAULT_ATTEMPTS);
  const backoffMs = options.backoffMs ?? 1000;
  let last = '';
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, backoffMs * 2 ** (i - 1)));
    const signal = AbortSignal.timeout(options.timeoutMs);
    try {
      const response = await fetch(url, { ...init, signal, redirect: 'follow' });
      const text = await response.text().catch(() => '');
      if (response.ok) return true;
      last = `HTTP ${response.status}${text.trim() ? `: ${text.trim().split('\n')[0]!.slice(0, 200)}` : ''}`;
      if (response.status !== 429 && response.status < 500) break; // the request is wrong: retrying will not help
    } catch (err) {
      last = signal.aborted ? `no answer within ${options.timeoutMs / 1000} s` : describeFetchError(err);
    }
  }
  options.logger.warn(`${what} not delivered (${last}); the command's result is unchanged`);
  return false;
}

/** fetch's "fetch failed" with its cause (ECONNREFUSED, ENOTFOUND …). */
function describeFetchError(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  const code = (cause as { code?: string } | undefined)?.code;
  return code ? `${messageOf(err)}: ${code}` : messageOf(cause ?? err);
}
