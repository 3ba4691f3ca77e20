import { formatBytes, formatSeconds } from '../format.ts';
import { redact } from '../errors.ts';
import { chatText, discordText, slackText, teamsText, terminalText } from '../text/sinks.ts';
import { deliver, type DeliveryOptions } from './deliver.ts';
import type { RunReport, TargetReport } from './report.ts';

/**
 * The JSON body posted to `--notify-url`. `text` is what Slack incoming webhooks and Microsoft
 * Teams incoming webhooks (MessageCard) display; both ignore the other fields, which carry the
 * run's facts for any other receiver (a chat-ops bot, an incident tool) as plain JSON strings.
 * In `text`, every name, key and reason (they come from the bucket and the database) is escaped
 * for the receiver ({@link webhookFormat}). No password, key or database URL is ever included;
 * every string passes through {@link redact}. Discord gets its own body ({@link webhookBody}).
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

/** How a value from the bucket or the database is escaped for one receiver (see src/text/sinks.ts). */
type Escape = (text: string) => string;

function scopeOf(t: TargetReport, e: Escape): string {
  const l = t.labels;
  return e([l.service || '*', l.environment || '*', l.database || '*'].join('/')) + (l.stanza ? ` stanza ${e(l.stanza)}` : '') + (l.major ? ` (PostgreSQL ${e(l.major)})` : '');
}

function detailOf(t: TargetReport, e: Escape): string {
  if (!t.ok) return `FAILED: ${e(t.reason ?? 'failed')}`;
  const parts = [t.backupKey ? `backup ${e(t.backupKey)}` : undefined, t.sizeBytes !== undefined ? formatBytes(t.sizeBytes) : undefined, t.drill?.rtoSeconds !== undefined ? `RTO ${formatSeconds(t.drill.rtoSeconds * 1000)}` : undefined];
  if (t.prune) parts.push(`kept ${t.prune.kept}, ${t.prune.applied ? 'deleted' : 'would delete'} ${t.prune.deleted}`);
  return `OK${parts.some(Boolean) ? `: ${parts.filter(Boolean).join(', ')}` : ''}`;
}

/**
 * The lines of a run's message: a verdict line (with the one target's scope and detail, or the
 * reason), one `•` line per target when there are several, and the run's URL. Each value from
 * the bucket or the database is redacted, then escaped with `escape` for the receiver.
 */
export function messageLines(report: RunReport, escape: Escape): string[] {
  const e: Escape = (text) => escape(redact(text));
  const first = report.targets[0];
  const icon = report.ok ? '✅' : '❌';
  return [
    report.targets.length === 1
      ? `${icon} pg-backup ${report.command} ${report.ok ? 'OK' : 'FAILED'}: ${scopeOf(first!, e)}: ${detailOf(first!, e)}`
      : `${icon} pg-backup ${report.command} ${report.ok ? 'OK' : 'FAILED'}${report.reason ? `: ${e(report.reason)}` : ''}`,
    ...(report.targets.length === 1 ? [] : report.targets.map((t) => `• ${scopeOf(t, e)}: ${detailOf(t, e)}`)),
    ...(report.runUrl ? [`Run: ${report.runUrl}`] : []),
  ];
}

/**
 * The receivers whose message format differs: Slack (`text` in mrkdwn), Microsoft Teams (`text`
 * in Markdown with HTML), Discord (`content` in Markdown, its own body), and `json`: any other
 * receiver (the Slack-like `text` and the fields).
 */
export type WebhookFormat = 'slack' | 'teams' | 'discord' | 'json';

/**
 * The format of a webhook URL, from its host: `hooks.slack.com` → slack; `*.webhook.office.com`,
 * `outlook.office.com`, `outlook.office365.com`, `*.logic.azure.com`, `*.powerplatform.com`
 * (Teams connectors and workflows) → teams; `discord.com` / `discordapp.com` `/api/webhooks/…`
 * (not its `/slack` or `/github` compatible endpoints) → discord; anything else → json.
 */
export function webhookFormat(url: string | URL): WebhookFormat {
  const u = new URL(url);
  const host = u.hostname.toLowerCase();
  if (host === 'hooks.slack.com') return 'slack';
  if (/(^|\.)webhook\.office\.com$|^outlook\.office(365)?\.com$|(^|\.)logic\.azure\.com$|(^|\.)powerplatform\.com$/.test(host)) return 'teams';
  if (/^((ptb|canary)\.)?discord(app)?\.com$/.test(host) && u.pathname.startsWith('/api/webhooks/') && !/\/(slack|github)\/?$/.test(u.pathname)) return 'discord';
  return 'json';
}

/** The escaping of each format's text (src/text/sinks.ts). */
const ESCAPE: Record<WebhookFormat, Escape> = { slack: slackText, teams: teamsText, discord: discordText, json: chatText };

/** Discord's limit on a message's `content`, in characters. */
const DISCORD_CONTENT_MAX = 2000;

/**
 * The JSON body for a receiver of `format`: Discord gets `content` (at most 2000 characters)
 * and `allowed_mentions: { parse: [] }`, so it pings no one whatever the text holds; the
 * others get {@link webhookMessage} with `text` escaped for them.
 */
export function webhookBody(report: RunReport, format: WebhookFormat): object {
  const text = messageLines(report, ESCAPE[format]).join('\n');
  if (format === 'discord') return { content: text.length > DISCORD_CONTENT_MAX ? `${text.slice(0, DISCORD_CONTENT_MAX - 1)}…` : text, allowed_mentions: { parse: [] } };
  return { ...webhookMessage(report), text };
}

/**
 * A run's summary as plain text on one line per target (the healthcheck ping's body, shown in
 * healthchecks.io and forwarded by its integrations): values escaped as for a terminal.
 */
export function plainMessage(report: RunReport): string {
  return messageLines(report, terminalText).join('\n');
}

/** The message for a finished run, with `text` in the generic (`json`) format. */
export function webhookMessage(report: RunReport): WebhookMessage {
  const uniq = (values: string[]) => [...new Set(values.filter(Boolean))].join(',');
  const message: WebhookMessage = {
    text: messageLines(report, chatText).join('\n'),
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
 * POSTs {@link webhookBody} as JSON to a Slack / Teams / Discord incoming webhook (or any
 * receiver), in the format of its URL ({@link webhookFormat}). Never throws; a failure is a
 * warning (see {@link deliver}).
 */
export function postWebhook(url: string, report: RunReport, options: DeliveryOptions): Promise<boolean> {
  const body = redactDeep(webhookBody(report, webhookFormat(url)));
  return deliver(`webhook notification (${report.command})`, new URL(url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }, options);
}
