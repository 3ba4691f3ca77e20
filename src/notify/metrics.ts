import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Gauge, Registry } from 'prom-client';
import type { RunReport, TargetReport } from './report.ts';
import { deliver, withBasicAuth, type DeliveryOptions } from './deliver.ts';

/**
 * Prometheus metrics of a run, in the text exposition format written by prom-client, delivered
 * two ways: a node_exporter textfile-collector file (`--metrics-file`) and a Pushgateway push
 * (`--pushgateway-url`). Every metric is a gauge labelled `command`, `service`, `environment`,
 * `database`, and `stanza` / `major` where they apply (left off otherwise).
 *
 * Last success survives a failed run both ways: the textfile keeps the previous file's
 * `pg_backup_last_success_timestamp_seconds` (and size, WAL timestamp) for series this run does
 * not set; the push uses POST, which replaces only the metric names pushed, and a failed run
 * does not push them. Sources: Prometheus "Metric and label naming", node_exporter
 * "Textfile Collector", Pushgateway README ("PUT method", "POST method", "URL").
 */

/** Label names of every series. `stanza` and `major` are optional (absent when empty). */
export const LABELS = ['command', 'service', 'environment', 'database', 'stanza', 'major'] as const;

/** The metrics, name → help. Units in the name, per Prometheus naming conventions. */
export const METRICS = {
  pg_backup_last_run_timestamp_seconds: 'Unix time the last run of this command finished, successful or not.',
  pg_backup_last_run_success: '1 when the last run of this command succeeded, 0 when it failed.',
  pg_backup_last_success_timestamp_seconds: 'Unix time the last successful run of this command finished (kept across failed runs).',
  pg_backup_duration_seconds: 'Wall time of the last run of this command, in seconds (a drill: its RTO).',
  pg_backup_size_bytes: 'Stored size of the backup of the last successful run (dump: written; verify, drill: checked), in bytes.',
  pg_backup_drill_success: '1 when the last restore drill passed every check, 0 when it failed.',
  pg_backup_drill_rto_seconds: 'Recovery time of the last restore drill (wall time from the download\'s start to the checks\' end), in seconds.',
  pg_backup_drill_rto_budget_seconds: 'The RTO budget the last drill was held to (--max-rto), in seconds.',
  pg_backup_prune_kept_backups: 'Complete backups the last prune kept.',
  pg_backup_prune_deleted_backups: 'Backups (complete and incomplete) the last prune deleted, or would delete in a dry run.',
  pg_backup_prune_deleted_bytes: 'Bytes the last prune deleted, or would delete in a dry run.',
  pg_backup_wal_last_archived_timestamp_seconds: 'Unix time of the newest archived WAL segment seen by verify --wal-prefix.',
} as const;

export type MetricName = keyof typeof METRICS;

/** Metrics a failed run leaves as they were: the textfile carries them over from the previous file. */
export const KEPT_ACROSS_RUNS: readonly MetricName[] = ['pg_backup_last_success_timestamp_seconds', 'pg_backup_size_bytes', 'pg_backup_wal_last_archived_timestamp_seconds'];

/** One series: labels (empty values left out) and a value. */
export interface Series {
  name: MetricName;
  labels: Record<string, string>;
  value: number;
}

/** The labels of a target, empty ones left out. */
export function labelsOf(command: string, t: TargetReport): Record<string, string> {
  const all: Record<string, string | undefined> = { command, ...t.labels };
  const out: Record<string, string> = {};
  for (const name of LABELS) if (all[name]) out[name] = all[name]!;
  return out;
}

/** The series one target of a run sets. */
export function seriesOf(report: RunReport, t: TargetReport): Series[] {
  const labels = labelsOf(report.command, t);
  const at = report.finishedAt.getTime() / 1000;
  const out: Series[] = [];
  const add = (name: MetricName, value: number | undefined) => {
    if (value !== undefined && Number.isFinite(value)) out.push({ name, labels, value });
  };
  add('pg_backup_last_run_timestamp_seconds', at);
  add('pg_backup_last_run_success', t.ok ? 1 : 0);
  if (t.ok) add('pg_backup_last_success_timestamp_seconds', at);
  add('pg_backup_duration_seconds', t.durationSeconds);
  if (t.ok) add('pg_backup_size_bytes', t.sizeBytes);
  if (report.command === 'drill') {
    add('pg_backup_drill_success', t.ok ? 1 : 0);
    add('pg_backup_drill_rto_seconds', t.drill?.rtoSeconds);
    add('pg_backup_drill_rto_budget_seconds', t.drill?.rtoBudgetSeconds);
  }
  if (t.prune) {
    add('pg_backup_prune_kept_backups', t.prune.kept);
    add('pg_backup_prune_deleted_backups', t.prune.deleted);
    add('pg_backup_prune_deleted_bytes', t.prune.deletedBytes);
  }
  add('pg_backup_wal_last_archived_timestamp_seconds', t.walLastArchivedSeconds);
  return out;
}

type PromClient = typeof import('prom-client');
let promClient: PromClient | undefined;

/**
 * prom-client, loaded on first use: it (and the @opentelemetry/api it requires for exemplars)
 * costs about 20 ms of CPU to load, which a run that writes and pushes no metrics does not pay.
 * In the bundles esbuild turns this `require` into the initialisation of the bundled module.
 */
function prom(): PromClient {
  promClient ??= (typeof require === 'function' ? require('prom-client') : createRequire(import.meta.url)('prom-client')) as PromClient;
  return promClient;
}

/** A prom-client registry holding `series` (no default process metrics). */
export function registryOf(series: Series[]): Registry {
  const { Gauge, Registry } = prom();
  const registry = new Registry();
  const gauges = new Map<MetricName, Gauge>();
  for (const s of series) {
    let gauge = gauges.get(s.name);
    if (!gauge) {
      gauge = new Gauge({ name: s.name, help: METRICS[s.name], labelNames: [...LABELS], registers: [registry] });
      gauges.set(s.name, gauge);
    }
    gauge.set(s.labels, s.value);
  }
  return registry;
}

const seriesKey = (s: Pick<Series, 'name' | 'labels'>) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort(([a], [b]) => a.localeCompare(b)))}`;

/**
 * Reads the series of the {@link KEPT_ACROSS_RUNS} metrics from exposition-format text written
 * by {@link writeMetricsFile} (`name{label="value",…} number` lines; other lines ignored).
 */
export function parseKeptSeries(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)\s*$/.exec(line);
    if (!m || !(KEPT_ACROSS_RUNS as readonly string[]).includes(m[1]!)) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const value = Number(m[3]);
    if (Number.isFinite(value) && Object.keys(labels).every((k) => (LABELS as readonly string[]).includes(k))) out.push({ name: m[1] as MetricName, labels, value });
  }
  return out;
}

/**
 * Writes the run's metrics to `file` for node_exporter's textfile collector
 * (`--collector.textfile.directory`): the text goes to a temporary file in the same directory
 * (a name not ending in `.prom`, so the collector never reads it half-written), then is renamed
 * over `file` (atomic on one filesystem). Series of {@link KEPT_ACROSS_RUNS} that the previous
 * file had and this run does not set are kept, so a failed run leaves the last success time.
 * One file per job: runs writing the same file replace each other's other series.
 * @throws Error when the directory is missing or not writable (the caller turns it into a warning).
 */
export async function writeMetricsFile(file: string, report: RunReport): Promise<void> {
  const previous = await readFile(file, 'utf8').then(parseKeptSeries, (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  const current = report.targets.flatMap((t) => seriesOf(report, t));
  const set = new Set(current.map(seriesKey));
  const text = await registryOf([...current, ...previous.filter((s) => !set.has(seriesKey(s)))]).metrics();
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** A Pushgateway grouping-key path segment pair; values with `/` (or empty) use the base64url form. */
function groupingSegment(name: string, value: string): string {
  if (value === '' || value.includes('/')) return `/${name}@base64/${Buffer.from(value).toString('base64url') || '='}`;
  return `/${name}/${encodeURIComponent(value)}`;
}

/**
 * The Pushgateway URL of a target's group: `<gateway>/metrics/job/pg_backup_<command>` then
 * `service`, `environment`, and `database`, `stanza`, `major` when set. The database is part of
 * the key so that runs of one service/environment for different databases (a matrix of jobs)
 * do not replace each other's series.
 */
export function pushgatewayGroupUrl(gateway: URL, command: string, t: TargetReport): URL {
  const u = new URL(gateway.href);
  u.username = '';
  u.password = '';
  const labels = labelsOf(command, t);
  let p = `${u.pathname.replace(/\/+$/, '')}/metrics/job/pg_backup_${command}`;
  for (const name of ['service', 'environment', 'database', 'stanza', 'major']) if (labels[name]) p += groupingSegment(name, labels[name]);
  u.pathname = p;
  return u;
}

/**
 * Pushes each target's series to its Pushgateway group with POST, which replaces only the
 * metrics of the same names in that group: a failed run pushes no
 * `pg_backup_last_success_timestamp_seconds`, so the gateway keeps the last success. Basic-auth
 * credentials in the URL become an `Authorization` header. Retries and timeouts as
 * {@link deliver}; never throws.
 * @returns true when every group was accepted.
 */
export async function pushMetrics(gatewayUrl: string, report: RunReport, options: DeliveryOptions): Promise<boolean> {
  const gateway = new URL(gatewayUrl);
  // Basic-auth credentials in the gateway URL become an Authorization header.
  const authorization = withBasicAuth(gateway).headers.get('authorization');
  const results = await Promise.all(
    report.targets.map(async (t) => {
      const registry = registryOf(seriesOf(report, t));
      const body = await registry.metrics();
      const group = [t.labels.service, t.labels.environment, t.labels.database].filter(Boolean).join('/');
      return deliver(`Pushgateway push (${report.command}${group ? ` ${group}` : ''})`, pushgatewayGroupUrl(gateway, report.command, t), { method: 'POST', headers: { ...(authorization ? { authorization } : {}), 'content-type': registry.contentType }, body }, options);
    }),
  );
  return results.every(Boolean);
}
