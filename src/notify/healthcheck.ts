import { redact } from '../errors.ts';
import { deliver, type DeliveryOptions } from './deliver.ts';

/**
 * healthchecks.io's ping protocol (https://healthchecks.io/docs/http_api/): `<url>/start` when
 * a job starts, `<url>` when it succeeded, `<url>/fail` when it failed, each optionally with a
 * body (the log; here one line) and a run id `rid` that ties a start to its end. A check that
 * gets no success ping within its period + grace alerts: a dead man's switch that also fires
 * when the job never runs. Self-hosted Healthchecks and compatible services (Cronitor's and
 * Uptime Kuma's push monitors accept the same shape) work the same way.
 */
export type PingKind = 'start' | 'success' | 'fail';

/** The ping URL of a kind: the check URL with `/start` or `/fail` appended to its path (query kept) and `rid`. */
export function pingUrl(checkUrl: string, kind: PingKind, runId: string): URL {
  const u = new URL(checkUrl);
  const base = u.pathname.replace(/\/+$/, '');
  u.pathname = kind === 'success' ? base || '/' : `${base}/${kind}`;
  u.searchParams.set('rid', runId);
  return u;
}

/** Sends one ping with `body` (one line, secrets redacted). Never throws; a failure is a warning. */
export function ping(checkUrl: string, kind: PingKind, runId: string, body: string, options: DeliveryOptions): Promise<boolean> {
  return deliver(`healthcheck ping (${kind})`, pingUrl(checkUrl, kind, runId), { method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, body: redact(body) }, options);
}
