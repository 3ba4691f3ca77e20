import { formatBytes, formatSeconds } from '../format.ts';
import { redact } from '../errors.ts';
import { deliver, type DeliveryOptions } from './deliver.ts';
import type { RunReport, TargetReport } from './report.ts';

/**
 * The JSON body posted to `--notify-url`. `text` is what Slack incoming webhooks and Microsoft
 * Teams incoming webhooks (MessageCard) display; both ignore the other fields, which carry the
 * run's facts for any other receiver (a chat-ops bot, an incident tool). No password, key or
 * database URL is ever included; every string passes through {@link redact}.
 */
export interface WebhookMessage {
  text: string;
  command: string;
  /** `ok` or `failed`. */
  result: 'ok' | 'failed';
  service: string;
  environment: string;
  /** Comma-separated when a dump covered several databases. */
  database: string;
  reason?: string;
  /** The first backup's key relative to the location (what `pg-backup list` prints). */
  backupKey?: string;
  backupUri?: string;
  /** The GitHub Actions run, from GITHUB_SERVER_URL / GITHUB_REPOSITORY / GITHUB_RUN_ID. */
  runUrl?: string;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  /** One entry per database (or stanza / major) the run covered. */
  targets: {
    service: string;
    environment: string;
    database: string;
    stanza?: string;
    major?: string;
    result: 'ok' | 'failed';
    reason?: string;
    backupKey?: string;
    sizeBytes?: number;
    rtoSeconds?: number;
  }[];
}

function scopeOf(t: TargetReport): string {
  const l = t.labels;
  return [l.service || '*', l.environment || '*', l.database || '*'].join('/') + (l.stanza ? ` stanza ${l.stanza}` : '') + (l.major ? ` (PostgreSQL ${l.major})` : '');
}

function detailOf(t: TargetReport): string {
  if (!t.ok) return `FAILED: ${t.reason ?? 'failed'}`;
  const parts = [t.backupKey ? `backup ${t.backupKey}` : undefined, t.sizeBytes !== undefined ? formatBytes(t.sizeBytes) : undefined, t.drill?.rtoSeconds !== undefined ? `RTO ${formatSeconds(t.drill.rtoSeconds * 1000)}` : undefined];
  if (t.prune) parts.push(`kept ${t.prune.kept}, ${t.prune.applied ? 'deleted' : 'would delete'} ${t.prune.deleted}`);
  return `OK${parts.some(Boolean) ? `: ${parts.filter(Boolean).join(', ')}` : ''}`;
}

/** The message for a finished run. */
export function webhookMessage(report: RunReport): WebhookMessage {
  const first = report.targets[0];
  const uniq = (values: string[]) => [...new Set(values.filter(Boolean))].join(',');
  const icon = report.ok ? '✅' : '❌';
  const lines = [
    report.targets.length === 1
      ? `${icon} pg-backup ${report.command} ${report.ok ? 'OK' : 'FAILED'}: ${scopeOf(first!)}: ${detailOf(first!)}`
      : `${icon} pg-backup ${report.command} ${report.ok ? 'OK' : 'FAILED'}${report.reason ? `: ${report.reason}` : ''}`,
    ...(report.targets.length === 1 ? [] : report.targets.map((t) => `• ${scopeOf(t)}: ${detailOf(t)}`)),
    ...(report.runUrl ? [`Run: ${report.runUrl}`] : []),
  ];
  const message: WebhookMessage = {
    text: lines.join('\n'),
    command: report.command,
    result: report.ok ? 'ok' : 'failed',
    service: uniq(report.targets.map((t) => t.labels.service)),
    environment: uniq(report.targets.map((t) => t.labels.environment)),
    database: uniq(report.targets.map((t) => t.labels.database)),
    reason: report.reason,
    backupKey: report.targets.find((t) => t.backupKey)?.backupKey,
    backupUri: report.targets.find((t) => t.backupUri)?.backupUri,
    runUrl: report.runUrl,
    startedAt: report.startedAt.toISOString(),
    finishedAt: report.finishedAt.toISOString(),
    durationSeconds: (report.finishedAt.getTime() - report.startedAt.getTime()) / 1000,
    targets: report.targets.map((t) => ({
      ...t.labels,
      result: t.ok ? 'ok' : 'failed',
      reason: t.reason,
      backupKey: t.backupKey,
      sizeBytes: t.sizeBytes,
      rtoSeconds: t.drill?.rtoSeconds,
    })),
  };
  return redactDeep(message);
}

/** A copy of `value` with {@link redact} applied to every string in it (before JSON escaping, so a secret with quotes is still found). */
function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map(redactDeep) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v)])) as T;
  return value;
}

/**
 * POSTs {@link webhookMessage} as JSON to a Slack / Teams incoming webhook (or any receiver).
 * Never throws; a failure is a warning (see {@link deliver}).
 */
export function postWebhook(url: string, report: RunReport, options: DeliveryOptions): Promise<boolean> {
  return deliver(`webhook notification (${report.command})`, new URL(url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(webhookMessage(report)) }, options);
}
