import { resolveBackup, type BackupFilter, type ResolvedBackup } from '../backup/catalog.ts';
import { drillFolder, parseManifestKey, utcStamp } from '../backup/keys.ts';
import type { Manifest } from '../backup/manifest.ts';
import { readBackup, readbackProblems } from '../backup/readback.ts';
import { CheckFailedError, messageOf } from '../errors.ts';
import { recordingLogger, type Logger } from '../log.ts';
import { findPgBinary } from '../postgres/binaries.ts';
import { startThrowawayCluster, type ThrowawayCluster } from '../postgres/cluster.ts';
import { resolveConnection, withDatabase, type DatabaseConnection } from '../postgres/connection.ts';
import { connect, countRows, serverFacts } from '../postgres/server.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { TOOL } from '../version.ts';
import { formatBytes, formatSeconds } from './format.ts';

/** Options of {@link drill}. */
export interface DrillOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  /** `latest` (default), a manifest or dump key, or its full URI. */
  backup?: string;
  filter?: BackupFilter;
  /**
   * Restore into this (empty) database instead of a throwaway cluster, e.g. a `services:
   * postgres` container. Its server must be the source's major version or newer.
   */
  targetUrl?: string;
  /** Parent directory of the throwaway cluster. Default `PG_BACKUP_WORK_DIR` or the OS temp dir. */
  workDir?: string;
  s3?: S3Settings;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
}

/** One table's row count in the manifest and after the restore. */
export interface TableCheck {
  schema: string;
  table: string;
  expected: number;
  /** Undefined when the table is missing after the restore. */
  actual: number | undefined;
  ok: boolean;
}

/** The outcome of {@link drill}; a failed drill is a result (`ok: false`), not an exception. */
export interface DrillResult {
  ok: boolean;
  reason?: string;
  problems: string[];
  backupUri?: string;
  manifestUri?: string;
  manifest?: Manifest;
  /** `throwaway` (a cluster the tool started) or the target URL without password. */
  target: string;
  startedAt: string;
  /** Recovery time: download + restore + checks, in ms. */
  rtoMs: number;
  phases: { restoreMs: number; checksMs: number };
  /** Age of the backup when the drill started, in ms (the recovery point it gives). */
  rpoMs?: number;
  tables: TableCheck[];
  drillLogUri?: string;
  drillReportUri?: string;
}

/**
 * Restores a backup into a throwaway PostgreSQL (or `targetUrl`), checks it, and times it:
 * download → decompress → `pg_restore --exit-on-error --no-owner --no-acl`, then row counts per
 * table against the manifest (counted in the dump's snapshot). The drill log (ending in
 * `restore drill OK` on success) and a JSON report are written to
 * `drills/<service>/<environment>/<database>/<YYYY>-Q<n>/` in the bucket. The throwaway cluster
 * is always removed.
 * @throws UsageError for bad options or missing PostgreSQL binaries.
 */
export async function drill(options: DrillOptions): Promise<DrillResult> {
  const now = options.now ?? (() => new Date());
  const log = recordingLogger(options.logger);
  const storage = openStorage(options.from, options.s3);
  const startedAt = now();
  const result: DrillResult = {
    ok: false,
    problems: [],
    target: options.targetUrl ? 'url' : 'throwaway',
    startedAt: startedAt.toISOString(),
    rtoMs: 0,
    phases: { restoreMs: 0, checksMs: 0 },
    tables: [],
  };
  const targetConn = options.targetUrl ? resolveConnection(options.targetUrl) : undefined;
  let backup: ResolvedBackup | undefined;
  let cluster: ThrowawayCluster | undefined;
  try {
    try {
      backup = await resolveBackup(storage, options.backup, options.filter);
    } catch (err) {
      if (!(err instanceof CheckFailedError)) throw err;
      result.problems.push(err.message);
    }
    if (backup) {
      const { manifest } = backup;
      result.manifest = manifest;
      result.backupUri = storage.uri(backup.objectKey);
      result.manifestUri = storage.uri(backup.manifestKey);
      result.rpoMs = startedAt.getTime() - Date.parse(manifest.startedAt);
      log.info(`restore drill of ${result.backupUri}`);
      log.info(`backup: ${manifest.service}/${manifest.environment}/${manifest.database}, taken ${manifest.startedAt} (${formatSeconds(result.rpoMs)} ago), ${formatBytes(manifest.object.sizeBytes)}, PostgreSQL ${manifest.server.version}, pg_dump ${manifest.pgDump.version}`);
      const pgRestore = await findPgBinary('pg_restore', manifest.pgDump.major, `restoring an archive written by pg_dump ${manifest.pgDump.version}`);

      let target: DatabaseConnection;
      if (targetConn) {
        target = targetConn;
        result.target = targetConn.display;
        const client = await connect(target, 'pg-backup drill');
        try {
          const facts = await serverFacts(client);
          if (facts.major < manifest.server.major) {
            throw new CheckFailedError(`target server ${target.display} runs PostgreSQL ${facts.version}, older than the source's ${manifest.server.version}: restore into major ${manifest.server.major} or newer`);
          }
        } finally {
          await client.end().catch(() => undefined);
        }
      } else {
        cluster = await startThrowawayCluster({ minMajor: manifest.server.major, workDir: options.workDir, logger: log });
        const admin = await connect(cluster.connection, 'pg-backup drill');
        try {
          await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(manifest.database)} TEMPLATE template0 ENCODING 'UTF8'`);
        } finally {
          await admin.end().catch(() => undefined);
        }
        target = withDatabase(cluster.connection, manifest.database);
      }

      log.info(`restoring into ${target.display} with pg_restore ${pgRestore.version}`);
      const restoreStart = Date.now();
      const outcome = await readBackup(storage, backup, pgRestore, ['--exit-on-error', '--no-owner', '--no-acl'], {
        connection: target,
        signal: options.signal,
      });
      result.phases.restoreMs = Date.now() - restoreStart;
      result.problems.push(...readbackProblems(outcome, backup));
      log.info(`restore phase: ${formatSeconds(result.phases.restoreMs)} for ${formatBytes(outcome.sizeBytes)}`);

      if (!outcome.restoreError && !outcome.downloadError) {
        const checksStart = Date.now();
        result.tables = await checkRowCounts(target, manifest);
        result.phases.checksMs = Date.now() - checksStart;
        const bad = result.tables.filter((t) => !t.ok);
        for (const t of bad) {
          result.problems.push(
            t.actual === undefined
              ? `table ${t.schema}.${t.table} is missing after the restore`
              : `row count of ${t.schema}.${t.table} is ${t.actual}, the manifest says ${t.expected}`,
          );
        }
        log.info(`row counts: ${result.tables.length - bad.length}/${result.tables.length} tables match the manifest (${formatSeconds(result.phases.checksMs)})`);
      }
    }
  } catch (err) {
    if (!(err instanceof CheckFailedError)) throw err;
    result.problems.push(err.message);
  } finally {
    if (cluster) {
      await cluster.stop();
      log.info('throwaway cluster removed');
    }
  }

  result.rtoMs = result.phases.restoreMs + result.phases.checksMs;
  result.ok = result.problems.length === 0;
  if (result.problems[0]) result.reason = result.problems[0];
  for (const p of result.problems) log.warn(p);
  log.info(`RTO ${formatSeconds(result.rtoMs)} (restore ${formatSeconds(result.phases.restoreMs)}, checks ${formatSeconds(result.phases.checksMs)})`);
  log.info(result.ok ? 'restore drill OK' : `restore drill FAILED: ${result.reason}`);
  await archiveDrillLog(storage, options, backup, result, log.lines, startedAt, log);
  return result;
}

/** Counts the manifest's tables in the restored database. */
async function checkRowCounts(target: DatabaseConnection, manifest: Manifest): Promise<TableCheck[]> {
  const client = await connect(target, 'pg-backup drill');
  try {
    const { rows } = await client.query<{ schema: string; table: string }>(
      `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'`,
    );
    const present = new Set(rows.map((r) => `${r.schema}\u0000${r.table}`));
    const existing = manifest.tables.filter((t) => present.has(`${t.schema}\u0000${t.table}`));
    const counts = new Map((await countRows(client, existing)).map((c) => [`${c.schema}\u0000${c.table}`, c.rows]));
    return manifest.tables.map((t) => {
      const actual = counts.get(`${t.schema}\u0000${t.table}`);
      return { schema: t.schema, table: t.table, expected: t.rows, actual, ok: actual === t.rows };
    });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Writes the drill log (text) and report (JSON) under the drill folder. A storage failure here
 * (read-only credentials) is a warning: the drill's verdict stands.
 */
async function archiveDrillLog(
  storage: Storage,
  options: DrillOptions,
  backup: ResolvedBackup | undefined,
  result: DrillResult,
  lines: string[],
  startedAt: Date,
  log: Logger,
): Promise<void> {
  const fromKey = options.backup && options.backup !== 'latest' ? parseManifestKey(options.backup.replace(/\.dump(\.zst|\.gz)?$/, '.manifest.json')) : undefined;
  const labels = backup?.manifest ?? fromKey ?? (options.filter?.service && options.filter.environment && options.filter.database ? (options.filter as Required<BackupFilter>) : undefined);
  if (!labels) {
    log.warn('drill log not archived: the backup could not be identified (give --service, --environment and --database)');
    return;
  }
  const folder = drillFolder(labels, startedAt);
  const stem = `${folder}${backup?.manifest.id ?? 'unknown'}-drill-${utcStamp(startedAt)}`;
  try {
    result.drillLogUri = storage.uri(`${stem}.log`);
    result.drillReportUri = storage.uri(`${stem}.json`);
    const report = { tool: TOOL, ...result, manifest: undefined, backupId: backup?.manifest.id };
    await storage.put(`${stem}.json`, `${JSON.stringify(report, null, 2)}\n`, 'application/json');
    await storage.put(`${stem}.log`, `${lines.join('\n')}\n`, 'text/plain; charset=utf-8');
  } catch (err) {
    result.drillLogUri = undefined;
    result.drillReportUri = undefined;
    log.warn(`drill log not archived: ${messageOf(err)}`);
  }
}
