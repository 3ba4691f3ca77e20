import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { identitiesFor } from '../backup/encryption.ts';
import { downloadArchive } from '../backup/readback.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import { recordingLogger } from '../log.ts';
import { archiveExtensions, restoreBinaries, restoreLocalArchive } from '../postgres/archive.ts';
import { createThrowawayDatabase, startThrowawayCluster, workDirOf, type ThrowawayCluster } from '../postgres/cluster.ts';
import { clusterIsolation, makeClusterDirs, removeClusterDirs } from '../postgres/cluster-user.ts';
import { withDatabase } from '../postgres/connection.ts';
import { requireRestrictedPsql } from '../postgres/plain-sql.ts';
import { openStorage } from '../storage/index.ts';
import { defaultDrillJobs, drillBudgets, type DrillCommonOptions } from './drill.ts';
import { missingExtensions, runChecks } from './drill-checks.ts';
import { drillRecordKeys, writeDrillRecord, type DrillResult, type TableCheck } from './drill-report.ts';
import { BUILT_IN_DATABASES, checkPrivileges, missingRoleInFailure, missingRoles, missingRolesProblem, reasonOf, restoreRunGlobals, type GlobalsReport } from './server-restore-steps.ts';
import { findRun } from './server-run.ts';

/** The database label of a server drill's record: `drills/<service>/<environment>/%40server/<YYYY>-Q<n>/<run id>-drill-<stamp>.{log,json}` (no database name encodes to it but `@server`). */
export const SERVER_DRILL_LABEL = '@server';

/** Options of {@link drillServer}. */
export interface ServerDrillOptions extends DrillCommonOptions {
  from: string;
  service: string;
  environment: string;
  /** `latest` (default) or a run id. */
  backup?: string;
  /** `pg_restore --jobs` for each database (default: the cores, 2 to 8). */
  jobs?: number;
  ageIdentities?: string[];
  /** Restore without owners / grants; the privileges check is then skipped. */
  noOwner?: boolean;
  noAcl?: boolean;
}

/** One database of a {@link ServerDrillResult}. */
export interface ServerDrillDatabase {
  database: string;
  backupId: string;
  ok: boolean;
  problems: string[];
  tables: TableCheck[];
  privilegeDifferences: string[];
  restoreMs: number;
}

/** What {@link drillServer} found. A failed drill is a result (`ok: false`), not an exception. */
export interface ServerDrillResult {
  ok: boolean;
  reason?: string;
  problems: string[];
  runId?: string;
  startedAt: string;
  /** From the cluster's start to the last database's checks, in ms: the time to a whole server checked. */
  rtoMs: number;
  globals?: GlobalsReport;
  databases: ServerDrillDatabase[];
  /** Databases the run set out to dump with no complete backup in it. */
  missing: string[];
  drillLogUri?: string;
  drillReportUri?: string;
  cancelled?: boolean;
}

/**
 * Drills a whole dump run into one throwaway PostgreSQL (`drill --server`): the cluster starts
 * (bulk-restore settings, the newest source major of the run or later), the run's globals are
 * restored (tablespaces moved under the cluster's directory), then each database in turn is
 * downloaded and checked against its manifest, restored with `pg_restore --create` (owners,
 * grants, database properties; `postgres`/`template1` and plain SQL into the database itself),
 * and checked: row counts, sequences, the privileges record. One log and one JSON report for the
 * run go to `drills/<service>/<environment>/%40server/…` in the bucket. The cluster and the
 * scratch directory are always removed. Every failure is a problem of the verdict; a database
 * missing from the run is one too.
 * @throws UsageError for bad options, a run that cannot be found, or missing PostgreSQL binaries.
 */
export async function drillServer(options: ServerDrillOptions): Promise<ServerDrillResult> {
  const now = options.now ?? (() => new Date());
  const log = recordingLogger(options.logger);
  const startedAt = now();
  if (!options.service || !options.environment) throw new UsageError('drill --server needs --service and --environment: the run is looked up under them');
  const jobs = options.jobs ?? defaultDrillJobs();
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 64) throw new UsageError(`--jobs must be a whole number from 1 to 64 (got ${options.jobs})`);
  const { smokeChecks } = await drillBudgets(options);
  await clusterIsolation({ allowSameOsUser: options.allowSameOsUser, reason: options.sameOsUserReason });
  const storage = openStorage(options.from, options.s3);
  const run = await findRun(storage, options.service, options.environment, options.backup?.trim() || 'latest');
  const result: ServerDrillResult = { ok: false, problems: [], runId: run.id, startedAt: startedAt.toISOString(), rtoMs: 0, databases: [], missing: run.missing };
  const noOwner = options.noOwner === true;
  const noAcl = options.noAcl === true;
  // Binaries and identities before anything starts.
  const bins = new Map(await Promise.all(run.databases.map(async (b) => [b, await restoreBinaries(b.manifest)] as const)));
  for (const [b, found] of bins) if (b.manifest.format === 'plain' && found.psql) requireRestrictedPsql(found.psql, 'drill a plain SQL backup');
  const ids = new Map(run.databases.map((b) => [b, identitiesFor(b.manifest.encryption, options.ageIdentities, storage.uri(b.objectKey))]));
  const globalsIds = run.globals ? identitiesFor(run.globals.manifest.encryption, options.ageIdentities, storage.uri(run.globals.objectKey)) : undefined;
  const minMajor = Math.max(0, ...run.databases.map((d) => d.manifest.server.major), run.globals?.manifest.server.major ?? 0);
  log.info(`server drill of run ${run.id} (${options.service}/${options.environment}) from ${storage.url}: ${run.globals ? 'globals, then ' : 'no globals, '}${run.databases.map((d) => d.manifest.database).join(', ') || 'no database'}`);
  for (const m of run.missing) result.problems.push(`database ${m} of run ${run.id} has no complete backup: its dump failed or is still running`);

  let cluster: ThrowawayCluster | undefined;
  let spaceDirs: string[] = [];
  const parent = workDirOf(options.workDir);
  const scratch = await mkdtemp(path.join(parent, 'pg-backup-drill-'));
  const workStart = Date.now();
  try {
    cluster = await startThrowawayCluster({ minMajor: minMajor || 12, workDir: options.workDir, logger: log, signal: options.signal, bulkRestore: {}, allowSameOsUser: options.allowSameOsUser, sameOsUserReason: options.sameOsUserReason });
    const c = cluster;
    if (run.globals) {
      const spaces = run.globals.manifest.globals?.tablespaces ?? [];
      const dirs = new Map(spaces.map((name, i) => [name, path.join(c.dir, `tablespace-${i}`)]));
      spaceDirs = [...dirs.values()];
      await makeClusterDirs(c.isolation, spaceDirs.map((d) => ({ path: d, mode: 0o700 })));
      result.globals = await restoreRunGlobals(storage, run.globals, c.connection, { workDir: scratch, identities: globalsIds, relocateTablespace: (name, location) => dirs.get(name) ?? location, signal: options.signal, log });
      if (result.globals.problems.length) throw new CheckFailedError(`restoring the run's globals failed: ${result.globals.problems.join('; ')}`);
    } else {
      log.info(`run ${run.id} stored no globals: a role its databases name is missing here and fails them${noOwner && noAcl ? '' : ' (--no-owner --no-acl restores without them)'}`);
    }
    for (const backup of run.databases) {
      options.signal?.throwIfAborted();
      const { manifest } = backup;
      const name = manifest.database;
      const db: ServerDrillDatabase = { database: name, backupId: manifest.id, ok: false, problems: [], tables: [], privilegeDifferences: [], restoreMs: 0 };
      result.databases.push(db);
      await log.group(name, async () => {
        const useCreate = !noOwner && !noAcl && manifest.format !== 'plain' && !BUILT_IN_DATABASES.has(name);
        const dir = await mkdtemp(path.join(scratch, 'db-'));
        try {
          const local = await downloadArchive(storage, backup, dir, options.signal, ids.get(backup));
          log.info(`downloaded ${storage.uri(backup.objectKey)}: ${formatBytes(local.sizeBytes)}, sha256 ${local.problems.length ? 'MISMATCH or incomplete' : 'matches the manifest'}`);
          if (local.problems.length) return void db.problems.push(...local.problems);
          const lacking = noOwner && noAcl ? [] : await missingRoles(c.connection, manifest.privileges, options.signal);
          if (lacking.length) return void db.problems.push(missingRolesProblem(name, lacking, Boolean(run.globals)));
          const missing = await missingExtensions(c.connection, await archiveExtensions(manifest.format, bins.get(backup)!.pgRestore, local.path, options.signal), options.signal);
          if (missing.length) return void db.problems.push(`the drill's server lacks extension${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
          const target = useCreate ? withDatabase(c.connection, name) : await createThrowawayDatabase(c, name, noOwner || noAcl ? manifest.roles : undefined);
          const noTablespaces = !run.globals && manifest.format !== 'plain';
          const args = [...(noOwner ? ['--no-owner'] : []), ...(noAcl ? ['--no-acl'] : []), ...(useCreate ? ['--create'] : []), ...(noTablespaces ? ['--no-tablespaces'] : [])];
          const t0 = Date.now();
          const failure = await restoreLocalArchive(manifest.format, bins.get(backup)!, local.path, useCreate ? c.connection : target, { jobs: manifest.format === 'plain' ? 1 : jobs, args, signal: options.signal }).then(() => undefined, (err: unknown) => messageOf(err));
          db.restoreMs = Date.now() - t0;
          options.signal?.throwIfAborted();
          if (failure) return void db.problems.push(missingRoleInFailure(failure, Boolean(run.globals)) ?? `restore failed: ${reasonOf(failure)}`);
          log.info(`restored in ${formatSeconds(db.restoreMs)}`);
          const checks = { problems: [], tables: [], sequencesBehind: [], smoke: [] } as unknown as DrillResult;
          await runChecks(target, manifest, smokeChecks, checks, log, jobs, options.signal);
          db.tables = checks.tables;
          db.problems.push(...checks.problems);
          if (manifest.privileges && !noOwner && !noAcl) {
            db.privilegeDifferences = await checkPrivileges(target, manifest.privileges, { withDatabase: useCreate, log, signal: options.signal });
            db.problems.push(...db.privilegeDifferences.map((d) => `privileges: ${d}`));
          } else {
            log.info(`privileges not checked: ${manifest.privileges ? 'restored with --no-owner/--no-acl' : 'the dump recorded none'}`);
          }
        } finally {
          await rm(dir, { recursive: true, force: true }).catch(() => undefined);
        }
      });
      db.ok = db.problems.length === 0;
      result.problems.push(...db.problems.map((p) => `database ${name}: ${p}`));
      log.info(`${name}: ${db.ok ? 'OK' : `FAILED: ${db.problems[0]}`}`);
    }
  } catch (err) {
    if (options.signal?.aborted) {
      result.cancelled = true;
      result.problems.unshift(`drill cancelled: ${messageOf(options.signal.reason)}`);
    } else if (err instanceof UsageError) {
      throw err;
    } else {
      result.problems.push(err instanceof CheckFailedError ? err.message : `drill failed: ${reasonOf(err)}`);
    }
  } finally {
    result.rtoMs = Date.now() - workStart;
    if (cluster && spaceDirs.length) await removeClusterDirs(cluster.isolation, spaceDirs);
    await cluster?.stop().then(() => log.info('throwaway cluster removed (server stopped, directory deleted)'), (err: unknown) => log.warn(`removing the throwaway cluster failed: ${messageOf(err)} (remove ${cluster!.dir} by hand)`));
    await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
  }
  result.ok = result.problems.length === 0;
  if (!result.ok) result.reason = result.problems[0];
  for (const p of result.problems.slice(1)) log.warn(p);
  log.info(`server drill of run ${run.id}: ${result.databases.filter((d) => d.ok).length}/${result.databases.length} databases OK in ${formatSeconds(result.rtoMs)}`);
  if (result.ok) log.info('server restore drill OK');
  // The record: one log and one report for the run.
  try {
    const keys = drillRecordKeys({ service: options.service, environment: options.environment, database: SERVER_DRILL_LABEL }, run.id, startedAt);
    const recordStorage = options.s3?.signal ? openStorage(options.from, { ...options.s3, signal: undefined }) : storage;
    result.drillLogUri = storage.uri(keys.log);
    result.drillReportUri = storage.uri(keys.report);
    await writeDrillRecord(recordStorage, keys, { ...result, backupId: run.id }, log.lines, { signingKey: options.signingKey });
  } catch (err) {
    result.drillLogUri = undefined;
    result.drillReportUri = undefined;
    options.logger.warn(`drill log not archived: ${messageOf(err)}`);
  }
  return result;
}
