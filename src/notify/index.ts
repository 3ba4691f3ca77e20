import { randomUUID } from 'node:crypto';
import { parseDuration } from '../duration.ts';
import { UsageError, messageOf, registerSecret } from '../errors.ts';
import type { Logger } from '../log.ts';
import { DEFAULT_TIMEOUT_MS, urlSecrets, type DeliveryOptions } from './deliver.ts';
import { ping } from './healthcheck.ts';
import { pushMetrics, writeMetricsFile } from './metrics.ts';
import { buildReport, type ReportedCommand, type RunReport, type RunScope } from './report.ts';
import { plainMessage, postWebhook } from './webhook.ts';
import { terminalText } from '../text/sinks.ts';

export type { ReportedCommand, RunReport, RunScope } from './report.ts';

/**
 * Alerts and metrics where people already look. One entry, {@link reported}, wraps a run of
 * dump, verify, drill or prune: healthcheck start ping → the command → its outcome as
 * Prometheus metrics (textfile and/or Pushgateway), a webhook message (Slack / Teams) and the
 * healthcheck's success or fail ping. Delivery never changes the outcome.
 */

/** Where to report, as the CLI's flags / the action's inputs give it. All optional. */
export interface ReportingOptions {
  /** node_exporter textfile: `/var/lib/node_exporter/textfile/pg_backup_api.prom`. */
  metricsFile?: string;
  /** `http(s)://[user:password@]pushgateway:9091[/prefix]`. */
  pushgatewayUrl?: string;
  /** Slack / Teams incoming webhook URL, or any receiver of JSON (a secret). */
  notifyUrl?: string;
  /** `failure` (default): post only when the run failed; `always`: every run. */
  notifyOn?: string;
  /** healthchecks.io check URL, e.g. `https://hc-ping.com/<uuid>` (a secret). */
  healthcheckUrl?: string;
  /** Per-attempt limit of each delivery (default `10s`); 3 attempts. */
  notifyTimeout?: string;
  /** How messages name each option (the action: `input "notify-url"`); default the CLI flags. */
  optionNames?: Partial<Record<keyof ReportingOptions, string>>;
}

/** {@link ReportingOptions}, checked. */
export interface ReportingSettings {
  metricsFile?: string;
  pushgatewayUrl?: string;
  notifyUrl?: string;
  notifyOn: 'failure' | 'always';
  healthcheckUrl?: string;
  timeoutMs: number;
}

function httpUrl(value: string, option: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new UsageError(`${option} must be an http:// or https:// URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`${option} must be an http:// or https:// URL (got ${u.protocol}//…)`);
  return value;
}

/**
 * Checks the reporting options and registers the webhook and healthcheck URLs, each of their
 * parts that may be a token (user and password, path, query; see `urlSecrets`), and a
 * Pushgateway password as secrets, so no message ever shows them; delivery warnings name only
 * `scheme://host:port`. `user:password@` in a URL is sent as HTTP Basic auth.
 * @returns undefined when nothing is to be reported.
 * @throws UsageError for a malformed URL, `notifyOn` or timeout (one line naming the option).
 */
export function reportingSettings(options: ReportingOptions): ReportingSettings | undefined {
  const names = options.optionNames ?? {};
  const name = (k: keyof ReportingOptions, flag: string) => names[k] ?? flag;
  const blank = (v: string | undefined) => (v?.trim() ? v.trim() : undefined);
  const notifyUrl = blank(options.notifyUrl);
  const healthcheckUrl = blank(options.healthcheckUrl);
  const pushgatewayUrl = blank(options.pushgatewayUrl);
  // The whole URL and each part that may be a token (credentials, path, query): no message shows them.
  for (const url of [notifyUrl, healthcheckUrl]) if (url) for (const part of urlSecrets(url)) registerSecret(part);
  if (notifyUrl) httpUrl(notifyUrl, name('notifyUrl', '--notify-url'));
  if (healthcheckUrl) httpUrl(healthcheckUrl, name('healthcheckUrl', '--healthcheck-url'));
  if (pushgatewayUrl) {
    httpUrl(pushgatewayUrl, name('pushgatewayUrl', '--pushgateway-url'));
    const password = new URL(pushgatewayUrl).password;
    registerSecret(password);
    if (password) registerSecret(decodeURIComponent(password));
  }
  const notifyOn = (blank(options.notifyOn) ?? 'failure').toLowerCase();
  if (notifyOn !== 'failure' && notifyOn !== 'always') throw new UsageError(`${name('notifyOn', '--notify-on')} must be failure or always (got ${JSON.stringify(options.notifyOn)})`);
  const timeoutMs = options.notifyTimeout?.trim() ? parseDuration(options.notifyTimeout.trim(), name('notifyTimeout', '--notify-timeout')) : DEFAULT_TIMEOUT_MS;
  if (timeoutMs <= 0) throw new UsageError(`${name('notifyTimeout', '--notify-timeout')} must be longer than 0`);
  const metricsFile = blank(options.metricsFile);
  if (!metricsFile && !pushgatewayUrl && !notifyUrl && !healthcheckUrl) return undefined;
  return { metricsFile, pushgatewayUrl, notifyUrl, notifyOn, healthcheckUrl, timeoutMs };
}

/** Delivers a finished run's report everywhere asked, in parallel. Never throws. */
export async function deliverReport(settings: ReportingSettings, report: RunReport, runId: string, logger: Logger): Promise<void> {
  const options: DeliveryOptions = { timeoutMs: settings.timeoutMs, logger };
  const tasks: Promise<unknown>[] = [];
  if (settings.metricsFile) {
    const file = settings.metricsFile;
    tasks.push(
      writeMetricsFile(file, report).then(
        () => logger.info(`metrics written to ${file}`),
        (err) => logger.warn(`metrics file ${file} not written (${messageOf(err)}); the command's result is unchanged`),
      ),
    );
  }
  if (settings.pushgatewayUrl) tasks.push(pushMetrics(settings.pushgatewayUrl, report, options));
  if (settings.notifyUrl && (!report.ok || settings.notifyOn === 'always')) tasks.push(postWebhook(settings.notifyUrl, report, options));
  if (settings.healthcheckUrl) {
    // Success: the run's summary line (scope, backup, size); failure: the one-line reason.
    const body = report.ok ? plainMessage(report).split('\n')[0]!.replace(/^\S+ /, '') : `pg-backup ${report.command} failed: ${terminalText(report.reason ?? 'failed')}`;
    tasks.push(ping(settings.healthcheckUrl, report.ok ? 'success' : 'fail', runId, body, options));
  }
  await Promise.allSettled(tasks);
}

/**
 * Runs `run` (one dump, verify, drill or prune) and reports it: a healthcheck `start` ping
 * before, then metrics, webhook and the success / fail ping after, built from the command's
 * result (`ok: false` counts as failed) or the error it threw. Returns the result or rethrows
 * the error unchanged: delivery never alters the outcome, and each delivery is bounded
 * (3 attempts of `notifyTimeout`).
 * @param options reporting options, what is known of the run up front (labels for a run that fails early) and the logger for warnings
 * @throws UsageError before running anything when a reporting option is malformed; otherwise what `run` throws
 */
export async function reported<T>(options: ReportingOptions & RunScope & { logger: Logger }, command: ReportedCommand, run: () => Promise<T>): Promise<T> {
  const settings = reportingSettings(options);
  if (!settings) return run();
  const { logger } = options;
  const runId = randomUUID();
  if (settings.healthcheckUrl) await ping(settings.healthcheckUrl, 'start', runId, `pg-backup ${command} started`, { timeoutMs: settings.timeoutMs, logger });
  const startedAt = new Date();
  let value: T | undefined;
  let error: unknown;
  let failed = false;
  try {
    value = await run();
  } catch (err) {
    error = err;
    failed = true;
  }
  try {
    await deliverReport(settings, buildReport(command, options, value, failed ? (error ?? new Error('failed')) : undefined, startedAt, new Date()), runId, logger);
  } catch (err) {
    logger.warn(`reporting failed (${messageOf(err)}); the command's result is unchanged`);
  }
  if (failed) throw error;
  return value as T;
}
