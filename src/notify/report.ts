import type { DumpOutcome, DumpRun } from '../commands/dump-many.ts';
import type { DrillResult } from '../commands/drill.ts';
import type { PruneResult } from '../commands/prune.ts';
import type { VerifyResult } from '../commands/verify.ts';
import { parseDuration } from '../duration.ts';
import { messageOf } from '../errors.ts';
import { resolveConnection } from '../postgres/connection.ts';

/**
 * What one run of dump, verify, drill or prune did, in the shape the metrics, the webhook and
 * the healthcheck ping need: one {@link TargetReport} per service/environment/database (and
 * stanza / server major where they apply) the run touched, and the run's own verdict.
 */

/** The commands whose runs are reported. */
export type ReportedCommand = 'dump' | 'verify' | 'drill' | 'prune';

/**
 * The labels of one target. `stanza` (pgBackRest physical backups) and `major` (a drill into
 * another server major version) are optional: empty or absent means "not this kind of run",
 * and the label is then left off the series (Prometheus treats an empty label as absent).
 */
export interface TargetLabels {
  service: string;
  environment: string;
  /** Empty when a run failed before it knew the database (e.g. `verify --backup latest` with no backup). */
  database: string;
  stanza?: string;
  major?: string;
}

/** The outcome of one target of a run. Times in seconds, sizes in bytes. */
export interface TargetReport {
  labels: TargetLabels;
  ok: boolean;
  /** One line: why it failed. */
  reason?: string;
  /** Wall time of this target's work (the run's, when the command does not time targets). */
  durationSeconds?: number;
  /** Stored size of the backup (dump: the object written; verify/drill: the object checked). */
  sizeBytes?: number;
  /** The backup's key relative to the location (what `pg-backup list` prints). */
  backupKey?: string;
  backupUri?: string;
  /** Drills: the recovery time measured, and the `--max-rto` budget when one was given. */
  drill?: { rtoSeconds?: number; rtoBudgetSeconds?: number };
  /** Prune: backups kept and deleted (planned, in a dry run) and the bytes deleted. */
  prune?: { kept: number; deleted: number; deletedBytes: number; applied: boolean };
  /**
   * WAL freshness (set by `verify --wal-prefix`): Unix time in seconds of the newest archived
   * WAL segment. Exported as `pg_backup_wal_last_archived_timestamp_seconds`.
   */
  walLastArchivedSeconds?: number;
}

/** One run of a command, as reported. */
export interface RunReport {
  command: ReportedCommand;
  ok: boolean;
  /** One line, secrets redacted: why the run failed. */
  reason?: string;
  startedAt: Date;
  finishedAt: Date;
  targets: TargetReport[];
  /** The GitHub Actions run, when the command runs in one. */
  runUrl?: string;
}

/**
 * What the caller knows about a run before it starts (the CLI's flags or the action's inputs):
 * used to label a run that fails before the command resolves its backup or database.
 */
export interface RunScope {
  /** verify / drill / prune: the backup location. */
  from?: string;
  /** dump: the backup location. */
  to?: string;
  service?: string;
  environment?: string;
  database?: string;
  /** dump: `--databases`. */
  databases?: string[];
  /** dump: `--database-url` (repeatable). Only the database name is read from it. */
  databaseUrl?: string[] | string;
  /** drill: the RTO budget (`--max-rto`), exported as `pg_backup_drill_rto_budget_seconds`. */
  maxRto?: string;
  stanza?: string;
  major?: string | number;
}

/** The run's URL on GitHub from `GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`, `GITHUB_RUN_ID`; undefined elsewhere. */
export function githubRunUrl(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!env.GITHUB_REPOSITORY || !env.GITHUB_RUN_ID) return undefined;
  return `${env.GITHUB_SERVER_URL || 'https://github.com'}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}`;
}

/** The first line of a message, without trailing spaces: metrics, pings and webhooks carry one line. */
export function oneLine(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  return text.split(/\r?\n/).find((l) => l.trim())?.trim() ?? text.trim();
}

/**
 * Builds the report of a finished run from the command's result or error.
 * @param value the command's result (undefined when it threw)
 * @param error what it threw (undefined when it returned)
 */
export function buildReport(command: ReportedCommand, scope: RunScope, value: unknown, error: unknown, startedAt: Date, finishedAt: Date): RunReport {
  const seconds = (finishedAt.getTime() - startedAt.getTime()) / 1000;
  const base = baseLabels(command, scope);
  let targets: TargetReport[];
  switch (command) {
    case 'dump':
      // A dump run's databases (its globals are not a target of their own).
      targets = dumpTargets(scope, (value as DumpRun | undefined)?.outcomes, error, seconds);
      break;
    case 'verify':
      targets = value ? [verifyTarget(scope, value as VerifyResult)] : [];
      break;
    case 'drill':
      targets = value ? [drillTarget(scope, value as DrillResult)] : [];
      break;
    case 'prune':
      targets = value ? pruneTargets(scope, value as PruneResult, seconds) : [];
      break;
  }
  const failedReason = error === undefined ? undefined : oneLine(messageOf(error));
  if (targets.length === 0) targets = base.map((labels) => ({ labels, ok: error === undefined, reason: failedReason, durationSeconds: seconds }));
  for (const t of targets) t.durationSeconds ??= seconds;
  const reasonOfValue = (value as { reason?: string } | undefined)?.reason;
  const ok = error === undefined && targets.every((t) => t.ok) && (value as { ok?: boolean } | undefined)?.ok !== false;
  const reason = ok ? undefined : (failedReason ?? oneLine(reasonOfValue) ?? targets.find((t) => !t.ok)?.reason ?? 'failed');
  return { command, ok, reason, startedAt, finishedAt, targets, runUrl: githubRunUrl() };
}

/** Labels from what the caller knew before the run (one per dump target; one otherwise). */
function baseLabels(command: ReportedCommand, scope: RunScope): TargetLabels[] {
  const extra = { stanza: scope.stanza || undefined, major: scope.major === undefined || scope.major === '' ? undefined : String(scope.major) };
  const service = scope.service ?? (command === 'dump' ? 'default' : '');
  const environment = scope.environment ?? (command === 'dump' ? 'default' : '');
  const databases = command === 'dump' ? dumpDatabases(scope) : [scope.database ?? ''];
  return databases.map((database) => ({ service, environment, database, ...extra }));
}

/** The databases a dump covers, read from `--databases` or the URLs (never connecting). */
function dumpDatabases(scope: RunScope): string[] {
  if (scope.databases?.length) return scope.databases;
  const urls = (Array.isArray(scope.databaseUrl) ? scope.databaseUrl : [scope.databaseUrl]).filter((u): u is string => Boolean(u?.trim()));
  const names = (urls.length ? urls : [undefined]).map((u) => {
    try {
      return resolveConnection(u).database;
    } catch {
      return '';
    }
  });
  return names.length ? names : [''];
}

/** The key of a URI relative to `location` (what `list` prints). */
function keyOf(uri: string | undefined, location: string | undefined): string | undefined {
  if (!uri) return undefined;
  const base = location ? `${location.replace(/\/+$/, '')}/` : undefined;
  return base && uri.startsWith(base) ? uri.slice(base.length) : uri;
}

function extraLabels(scope: RunScope, value: object | undefined): Pick<TargetLabels, 'stanza' | 'major'> {
  // Physical (pgBackRest) and multi-major drills report `stanza` / `major` on their results.
  const v = (value ?? {}) as { stanza?: unknown; major?: unknown };
  const stanza = typeof v.stanza === 'string' && v.stanza ? v.stanza : scope.stanza || undefined;
  const major = typeof v.major === 'number' || (typeof v.major === 'string' && v.major) ? String(v.major) : scope.major === undefined || scope.major === '' ? undefined : String(scope.major);
  return { stanza, major };
}

function dumpTargets(scope: RunScope, outcomes: DumpOutcome[] | undefined, error: unknown, seconds: number): TargetReport[] {
  const list = outcomes ?? (error as { outcomes?: DumpOutcome[] } | undefined)?.outcomes;
  if (!list) return [];
  return list.map((o) => {
    const m = o.result?.manifest;
    return {
      labels: { service: m?.service ?? scope.service ?? 'default', environment: m?.environment ?? scope.environment ?? 'default', database: m?.database ?? o.database, ...extraLabels(scope, undefined) },
      ok: o.ok,
      reason: oneLine(o.error),
      durationSeconds: m ? m.durationMs / 1000 : list.length === 1 ? seconds : undefined,
      sizeBytes: m?.object.sizeBytes,
      backupKey: o.result?.objectKey,
      backupUri: o.result?.backupUri,
    };
  });
}

/**
 * The target of a run that checked one backup (verify or drill): labels from the backup's
 * manifest, else the run's filters; `durationMs` is the run's own measure (verify: its duration,
 * drill: the RTO), in ms.
 */
function checkedTarget(scope: RunScope, r: VerifyResult | DrillResult, durationMs: number): TargetReport {
  const m = r.manifest;
  return {
    labels: { service: m?.service ?? scope.service ?? '', environment: m?.environment ?? scope.environment ?? '', database: m?.database ?? scope.database ?? '', ...extraLabels(scope, r) },
    ok: r.ok,
    reason: oneLine(r.reason),
    durationSeconds: durationMs / 1000,
    sizeBytes: m?.object.sizeBytes,
    backupKey: keyOf(r.backupUri, scope.from),
    backupUri: r.backupUri,
  };
}

function verifyTarget(scope: RunScope, r: VerifyResult): TargetReport {
  const wal = (r as { walLastArchivedAt?: Date | string }).walLastArchivedAt;
  return { ...checkedTarget(scope, r, r.durationMs), walLastArchivedSeconds: wal === undefined ? undefined : new Date(wal).getTime() / 1000 };
}

function drillTarget(scope: RunScope, r: DrillResult): TargetReport {
  return {
    ...checkedTarget(scope, r, r.rtoMs),
    drill: { rtoSeconds: r.backupUri ? r.rtoMs / 1000 : undefined, rtoBudgetSeconds: scope.maxRto ? parseDuration(scope.maxRto, '--max-rto') / 1000 : undefined },
  };
}

function pruneTargets(scope: RunScope, r: PruneResult, seconds: number): TargetReport[] {
  return r.plan.groups.map((g) => {
    const all = [...g.backups, ...g.incomplete];
    const deleted = all.filter((b) => b.action === 'delete');
    const failed = r.failures.filter((f) => f.includes(`${g.service}/${g.environment}/${g.database}`));
    const reason = g.refused ?? failed[0];
    return {
      labels: { service: g.service, environment: g.environment, database: g.database, ...extraLabels(scope, undefined) },
      ok: reason === undefined,
      reason: oneLine(reason),
      durationSeconds: seconds,
      prune: { kept: g.backups.filter((b) => b.action === 'keep').length, deleted: deleted.length, deletedBytes: deleted.reduce((n, b) => n + b.sizeBytes, 0), applied: r.applied },
    };
  });
}
