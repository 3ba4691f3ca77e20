import { execa } from 'execa';
import { findProfile } from '../postgres/profiles.ts';
import { refusedEntries, refusedMessage, skipPlatformExtensions } from '../postgres/managed-target.ts';
import { resolveBackup, type BackupFilter, type ResolvedBackup } from '../backup/catalog.ts';
import { refuseGlobals } from '../backup/globals.ts';
import { parseMaxClockSkew } from '../backup/clock.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseDuration } from '../duration.ts';
import type { SigningKey } from '../evidence/dsse.ts';
import { decryptionFacts } from '../evidence/recipients.ts';
import { identitiesFor } from '../backup/encryption.ts';
import { downloadArchive, type LocalArchive } from '../backup/readback.ts';
import { archiveDatabaseName, archiveExtensions, restoreBinaries, restoreLocalArchive } from '../postgres/archive.ts';
import { requireRestrictedPsql } from '../postgres/plain-sql.ts';
import { prefetchPrograms } from '../postgres/binaries.ts';
import { installPgClient } from '../postgres/install-client.ts';
import { addDataOffsets } from '../postgres/archive-offsets.ts';
import { readSmokeChecks, type SmokeCheck } from '../backup/smoke.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { recordingLogger, type Logger } from '../log.ts';
import { createThrowawayDatabase, startThrowawayCluster, workDirOf, type ThrowawayCluster } from '../postgres/cluster.ts';
import { makeClusterDirs, removeClusterDirs } from '../postgres/cluster-user.ts';
import { withDatabase } from '../postgres/connection.ts';
import { BUILT_IN_DATABASES, checkPrivileges, missingRoleInFailure, missingRoles, missingRolesProblem, restoreRunGlobals } from './server-restore-steps.ts';
import { globalsOfRun } from './server-run.ts';
import { clusterIsolation } from '../postgres/cluster-user.ts';
import { ensureDrillSpace } from '../postgres/disk.ts';
import { resolveConnection, type DatabaseConnection } from '../postgres/connection.ts';
import { serverFacts } from '../postgres/server.ts';
import { parseToc, targetContents } from '../postgres/target.ts';
import type { PgBinary } from '../postgres/binaries.ts';
import type { DumpFormat } from '../postgres/dump-options.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import { missingExtensions, reportedServerVersion, runChecks, withClient } from './drill-checks.ts';
import { archiveDrillLog, describePhases, drillHistory, type DrillPhases, type DrillResult } from './drill-report.ts';
import { meteredStorage, NO_PROGRESS, type StepProgress } from '../backup/progress-eta.ts';
import { restorePhase, startRestoreProgress } from './step-progress.ts';

export {
  archiveDrillLog,
  describePhases,
  drillHistory,
  drillRecordKeys,
  writeDrillRecord,
  DRILL_RECORD_DEADLINE_MS,
  type DrillHistoryEntry,
  type DrillLabels,
  type DrillPhases,
  type DrillResult,
  type MajorDrillResult,
  type TableCheck,
} from './drill-report.ts';
export { reportedServerVersion } from './drill-checks.ts';

/**
 * The options every kind of drill takes (a logical drill, {@link DrillOptions}; a physical
 * one, `PhysicalDrillOptions` in src/physical/drill.ts): where it works, the checks and
 * budgets, how it reports, and how it is stopped.
 */
export interface DrillCommonOptions {
  /**
   * Parent directory of the drill's scratch files (a downloaded archive, a throwaway cluster, a
   * restored data directory). Default `PG_BACKUP_WORK_DIR` or the OS temp dir.
   */
  workDir?: string;
  /**
   * `--allow-same-os-user`: when this process is neither root nor has passwordless sudo, run
   * the throwaway PostgreSQL as this process's own OS user anyway (environment still scrubbed;
   * restored code could read this user's files). Without it that case is refused before
   * anything starts (src/postgres/cluster-user.ts).
   */
  allowSameOsUser?: boolean;
  /** Why the same OS user is acceptable, for the drill log (the demo's own data); default `--allow-same-os-user`. */
  sameOsUserReason?: string;
  /** A smoke SQL file: queries, each preceded by `-- expect: …` (see `src/backup/smoke.ts`). */
  smokeSql?: string;
  /** Fail when RTO exceeds this duration (`30m`, `1h`). */
  maxRto?: string;
  /** Fail when the recovery point is older than this at drill time (`30h`): for a logical drill the backup's age. */
  maxRpo?: string;
  /**
   * A backup stamped later than now + this (`10m`, the default) is never `latest`: the drill
   * takes the newest backup whose time is believed (src/backup/clock.ts).
   */
  maxClockSkew?: string;
  /** S3 settings of the bucket the drill reads from or writes its log to. */
  s3?: S3Settings;
  logger: Logger;
  /** Cancels the drill (SIGINT/SIGTERM, a closed output): it stops, cleans up, and still writes its verdict. */
  signal?: AbortSignal;
  now?: () => Date;
  /** Signs the drill's in-toto statement (`--sign-key`, src/evidence/dsse.ts); without it the envelope is written unsigned. */
  signingKey?: SigningKey;
}

/** The budgets and smoke checks of a drill's {@link DrillCommonOptions}, parsed and read. */
export interface DrillBudgets {
  /** `maxRto` in ms, undefined without a budget. */
  maxRtoMs?: number;
  /** `maxRpo` in ms, undefined without a budget. */
  maxRpoMs?: number;
  /** `maxClockSkew` in ms (default 10 min). */
  maxClockSkewMs: number;
  smokeChecks: SmokeCheck[];
}

/**
 * Parses `maxRto`/`maxRpo`/`maxClockSkew` and reads the smoke SQL file, before a drill starts anything.
 * @throws UsageError for a duration that does not parse or an unreadable or malformed smoke file.
 */
export async function drillBudgets(options: DrillCommonOptions): Promise<DrillBudgets> {
  return {
    maxRtoMs: options.maxRto ? parseDuration(options.maxRto, '--max-rto') : undefined,
    maxRpoMs: options.maxRpo ? parseDuration(options.maxRpo, '--max-rpo') : undefined,
    maxClockSkewMs: parseMaxClockSkew(options.maxClockSkew),
    smokeChecks: options.smokeSql ? await readSmokeChecks(options.smokeSql) : [],
  };
}

/**
 * The default `pg_restore --jobs` of a drill: this machine's cores (`os.availableParallelism()`,
 * which honours CPU affinity), at least 2 and at most 8. At least 2: only a parallel
 * pg_restore issues the TRUNCATE that lets the throwaway cluster load a table without WAL
 * (src/postgres/cluster.ts, bulkRestoreSettings). At most 8: past that, a restore is bound by
 * its largest table, which one job loads, and each job holds a server connection.
 */
export function defaultDrillJobs(cores = os.availableParallelism()): number {
  return Math.min(8, Math.max(2, Math.floor(cores)));
}

/** Options of {@link drill}. */
export interface DrillOptions extends DrillCommonOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  /** `latest` (default), a manifest or dump key, or its full URI. */
  backup?: string;
  filter?: BackupFilter;
  /**
   * Restore into this (empty) database instead of a throwaway cluster, e.g. a `services:
   * postgres` container. Its server must be the source's major version or newer; its settings
   * are left as they are.
   */
  targetUrl?: string;
  /**
   * (Common) parent directory of the downloaded archive and the throwaway cluster. It needs
   * room for the archive (the manifest's `archiveSizeBytes`) plus the restored database.
   */
  workDir?: string;
  /** age identities for a client-side encrypted backup; default `PG_BACKUP_AGE_IDENTITY(_FILE)`. */
  ageIdentities?: string[];
  /** Parallel restore jobs (`pg_restore --jobs`), 1 to 64. Default {@link defaultDrillJobs} (the cores, 2 to 8). */
  jobs?: number;
  /**
   * Upgrade rehearsal: drill into a throwaway cluster of each of these server majors in turn
   * (`--postgres-version 16,17,18`, see drill-majors.ts). Not with `targetUrl`.
   */
  postgresVersions?: number[];
  /** For drill-majors.ts: the throwaway cluster runs exactly this major. */
  serverMajor?: number;
  /**
   * The managed platform the backup comes from (`--profile`; default: the manifest's
   * `options.profile`): its own extensions, which a server elsewhere lacks, are left out of the
   * drill's restore (named in the log) instead of failing it (src/postgres/managed-target.ts).
   */
  profile?: string;
  /** For drill-majors.ts: false leaves archiving the drill log to the caller. Default true. */
  archiveLog?: boolean;
  /**
   * Restore without owners (`pg_restore --no-owner`) / without grants (`--no-acl`), as drills
   * did before they proved the real restore: for a backup whose roles cannot be had. The
   * privileges check is then skipped. Default false: owners and grants are restored, and a
   * role that does not exist fails the drill, named.
   */
  noOwner?: boolean;
  noAcl?: boolean;
  /**
   * When no pg_restore (psql for plain dumps) at least as new as the backup's pg_dump is
   * installed, install `postgresql-client-<pg_dump major>` from the PostgreSQL apt repository
   * (root or passwordless sudo) and look again, as `dump --install-pg-client` does. Default false.
   */
  installClient?: boolean;
}

/**
 * Restores a backup into a throwaway PostgreSQL (or `targetUrl`), checks it, and times it:
 * download → decompress → the run's globals into the throwaway cluster (server-run.ts
 * `globalsOfRun`, globals-restore.ts; never into `targetUrl`) → `pg_restore --exit-on-error
 * --create` keeping owners and grants (`--no-owner`/`--no-acl` only when asked; a role the
 * dump's privileges record names that the server lacks fails the drill, named), then row counts
 * per table against the manifest (counted in the dump's snapshot) and the privileges record
 * (owners, grants, default privileges, RLS, settings). With a throwaway cluster, initdb
 * and the server start run while the archive downloads (one owner: when either fails or the
 * signal fires, the other is cancelled), and the cluster is set up for one bulk restore
 * (`bulkRestoreSettings` in src/postgres/cluster.ts: WAL skipped, no autovacuum); a `targetUrl`
 * server's settings are never changed. The drill log (ending in `restore drill OK` on success)
 * and a JSON report are written to `drills/<service>/<environment>/<database>/<YYYY>-Q<n>/` in
 * the bucket. The throwaway cluster and the download directory are always removed. Every
 * failure is a verdict (`ok: false`, the first reason in `reason`, the log and report archived):
 * a damaged backup, an unexpected error, and a cancellation by `signal` (at any phase: cluster
 * start, download, restore, checks; then `cancelled` is set). RTO: see {@link DrillResult.rtoMs}.
 * @throws UsageError for bad options or missing PostgreSQL binaries (after cleaning up).
 */
export async function drill(options: DrillOptions): Promise<DrillResult> {
  if (options.postgresVersions?.length) throw new UsageError('drill() runs one cluster: call runDrill() (drill-majors.ts) for --postgres-version');
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
    phases: { downloadMs: 0, clusterReadyMs: 0, restoreMs: 0, checksMs: 0, shutdownMs: 0 },
    extensions: [],
    tables: [],
    sequencesBehind: [],
    smoke: [],
    history: [],
  };
  const jobs = options.jobs ?? defaultDrillJobs();
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 64) throw new UsageError(`--jobs must be a whole number from 1 to 64 (got ${options.jobs})`);
  const { maxRtoMs, maxRpoMs, maxClockSkewMs, smokeChecks } = await drillBudgets(options);
  if (maxRtoMs !== undefined || maxRpoMs !== undefined) result.budgets = { maxRtoMs, maxRpoMs };
  // Who runs the throwaway cluster is settled before anything starts: a refusal (exit 2) leaves nothing behind.
  if (!options.targetUrl) await clusterIsolation({ allowSameOsUser: options.allowSameOsUser, reason: options.sameOsUserReason });
  let scratch: string | undefined;
  const targetConn = options.targetUrl ? resolveConnection(options.targetUrl) : undefined;
  let backup: ResolvedBackup | undefined;
  // Set as soon as the cluster exists, so that `finally` removes it on every path.
  const held: { cluster?: ThrowawayCluster; tablespaceDirs?: string[] } = {};
  const noOwner = options.noOwner === true;
  const noAcl = options.noAcl === true;
  let usageError: UsageError | undefined;
  /** When the restore work (download ∥ cluster start) began and ended (the end of the checks, or where the drill stopped): the RTO. */
  let workStart: number | undefined;
  let workEnd: number | undefined;
  let progress: StepProgress = NO_PROGRESS;
  // The restore's programs are looked up while the store is listed (each a --version run).
  prefetchPrograms('pg_restore', ...(targetConn ? [] : (['initdb'] as const)));
  try {
    try {
      backup = await resolveBackup(storage, options.backup, options.filter, undefined, { clock: { now: startedAt, maxSkewMs: maxClockSkewMs }, warn: (line) => log.warn(line) });
    } catch (err) {
      if (!(err instanceof CheckFailedError)) throw err;
      result.problems.push(err.message);
    }
    options.signal?.throwIfAborted();
    if (backup) {
      const { manifest } = backup;
      refuseGlobals(manifest, 'drill'); // a run's globals alone: drill --server drills the whole run
      result.manifest = manifest;
      result.backupUri = storage.uri(backup.objectKey);
      result.manifestUri = storage.uri(backup.manifestKey);
      result.rpoMs = startedAt.getTime() - Date.parse(manifest.startedAt);
      result.archiveSizeBytes = manifest.archiveSizeBytes;
      log.info(`restore drill of ${result.backupUri}`);
      log.info(`backup: ${manifest.service}/${manifest.environment}/${manifest.database}, taken ${manifest.startedAt} (${formatSeconds(result.rpoMs)} ago), ${formatBytes(manifest.object.sizeBytes)}, PostgreSQL ${manifest.server.version}, pg_dump ${manifest.pgDump.version}`);
      // Before any cluster starts: an encrypted backup without an identity is a usage error.
      const identities = identitiesFor(manifest.encryption, options.ageIdentities, result.backupUri);
      const bins = await restoreBinaries(manifest, options.serverMajor).catch(async (err: unknown) => {
        if (!options.installClient || !(err instanceof UsageError)) throw err;
        await installPgClient(manifest.pgDump.major, log);
        return restoreBinaries(manifest, options.serverMajor);
      });
      // Plain SQL is replayed by psql in restricted mode only: an older psql is refused here, before any download.
      if (manifest.format === 'plain' && bins.psql) requireRestrictedPsql(bins.psql, 'drill a plain SQL backup');
      const parent = workDirOf(options.workDir);
      // The run's globals (roles, memberships, passwords, tablespaces) go into the throwaway cluster first.
      const globals = targetConn ? undefined : await globalsOfRun(storage, manifest);
      const globalsIdentities = globals ? identitiesFor(globals.manifest.encryption, options.ageIdentities, storage.uri(globals.objectKey)) : undefined;
      // A database of its own is made by pg_restore --create (owner, ACL, settings); built-in ones and plain SQL are restored into the database as before.
      // (Not with --no-owner/--no-acl: the database's properties name its roles, e.g. ALTER ROLE … IN DATABASE … SET.)
      const useCreate = !targetConn && !noOwner && !noAcl && manifest.format !== 'plain' && !BUILT_IN_DATABASES.has(manifest.database);
      if (targetConn) log.info(`the run's globals are not restored into --target-url (roles are server-wide): the roles the backup names must exist there${noOwner && noAcl ? '' : ', or give --no-owner --no-acl'}`);
      else if (globals) log.info(`run ${manifest.run!.id}: its globals ${storage.uri(globals.objectKey)} are restored first`);
      else log.info(`${manifest.run ? `run ${manifest.run.id} stored no globals` : 'the backup belongs to no run (dumped before runs were recorded), so no globals'}: the roles it names must come from elsewhere, a missing one fails the drill${noOwner && noAcl ? '' : ' (--no-owner --no-acl restores without them)'}`);

      if (targetConn) {
        result.target = targetConn.display;
        await withClient(targetConn, options.signal, async (client) => {
          const facts = await serverFacts(client);
          if (facts.major < manifest.server.major) {
            throw new CheckFailedError(`target server ${targetConn.display} runs PostgreSQL ${facts.version}, older than the source's ${manifest.server.version}: restore into major ${manifest.server.major} or newer`);
          }
          // Before anything is downloaded: a drill's restore must not mix with other objects.
          const contents = await targetContents(client);
          if (contents) throw new UsageError(`drill target ${targetConn.display} is not empty: it holds ${contents.description}; drill into an empty database (CREATE DATABASE …), or without --target-url into a throwaway cluster`);
        });
      }
      // Room for everything (archive, and with a throwaway cluster the empty cluster, the
      // restored database and its WAL) before either the download or initdb starts.
      await ensureDrillSpace(parent, manifest, { throwaway: !targetConn });
      options.signal?.throwIfAborted();
      scratch = await mkdtemp(path.join(parent, 'pg-backup-drill-'));

      // Phase 1: download, checksum and decompress to local disk (parallel restore needs a
      // seekable archive) while the throwaway cluster starts.
      log.info(`downloading into ${scratch} (needs ${formatBytes(manifest.archiveSizeBytes)} free)${targetConn ? '' : '; the throwaway cluster starts meanwhile'}`);
      progress = startRestoreProgress('drill', storage, manifest, options.logger);
      progress.phase('download', { bytes: 0, totalBytes: manifest.object.sizeBytes });
      workStart = Date.now();
      const ready = await log.group(targetConn ? 'download' : 'download + cluster start', () =>
        downloadWhileClusterStarts({
          // A custom archive dumped through a pipe lacks its data offsets: write them into this
          // scratch copy (part of the download phase, while the cluster still starts). Scanning
          // the file while zstd wrote it hid the scan's ~0.3 s per GB, but raised a 10 GB drill's
          // peak RSS from 107 to 126–132 MiB (docs/performance.md): not taken.
          download: (signal) =>
            downloadArchive(meteredStorage(storage, (n) => progress.addBytes(n)), backup!, scratch!, signal, identities).then(async (local) => {
              if (manifest.format === 'custom' && local.problems.length === 0) await addDataOffsets(local.path, log, signal);
              return local;
            }),
          cluster: targetConn
            ? undefined
            : async (signal) => {
                const cluster = await startThrowawayCluster({ minMajor: manifest.server.major, major: options.serverMajor, workDir: options.workDir, logger: log, signal, bulkRestore: {}, allowSameOsUser: options.allowSameOsUser, sameOsUserReason: options.sameOsUserReason }).catch((err: unknown) => {
                  // startThrowawayCluster removed what it made.
                  log.info(`throwaway cluster removed: its start ${signal.aborted ? 'was stopped' : 'failed'}`);
                  throw err;
                });
                held.cluster = cluster;
                signal.throwIfAborted();
                if (globals) {
                  // Tablespaces of the source move under the cluster's directory.
                  const spaces = globals.manifest.globals?.tablespaces ?? [];
                  const dirs = new Map(spaces.map((name, i) => [name, path.join(cluster.dir, `tablespace-${i}`)]));
                  held.tablespaceDirs = [...dirs.values()];
                  await makeClusterDirs(cluster.isolation, held.tablespaceDirs.map((d) => ({ path: d, mode: 0o700 })));
                  result.globals = await restoreRunGlobals(storage, globals, cluster.connection, {
                    workDir: scratch!,
                    identities: globalsIdentities,
                    relocateTablespace: (name, location) => dirs.get(name) ?? location,
                    signal,
                    log,
                  });
                  if (result.globals.problems.length) throw new CheckFailedError(`restoring the run's globals failed: ${result.globals.problems.join('; ')}`);
                }
                if (useCreate) return withDatabase(cluster.connection, manifest.database);
                // With --no-owner/--no-acl, the source's roles that are missing are made NOLOGIN stand-ins: plain SQL and
                // policies (CREATE POLICY … TO role) name them whatever pg_restore leaves out.
                return createThrowawayDatabase(cluster, manifest.database, noOwner || noAcl ? manifest.roles : undefined);
              },
          signal: options.signal,
          phases: result.phases,
          log,
        }),
      );
      const local = ready.local;
      // Which key opened it: a drill given only the escrow identity proves that key recovers the backup.
      if (identities && local.problems.length === 0) result.decryption = await decryptionFacts(identities, manifest.encryption!);
      let target = ready.target ?? targetConn!;
      result.problems.push(
        ...local.problems.map((p) =>
          /ENOSPC/.test(p) ? `${p}: the drill needs about ${formatBytes(manifest.archiveSizeBytes)} free in ${parent} for the archive, plus room for the restored database` : p,
        ),
      );

      if (local.problems.length === 0) {
        // With --create the database is made by the restore: the server is asked through `postgres`.
        const server = useCreate ? held.cluster!.connection : target;
        result.serverVersion = await reportedServerVersion(server);
        // Preflight: every extension the archive creates must be available on the target.
        result.extensions = await archiveExtensions(manifest.format, bins.pgRestore, local.path, options.signal);
        let missing = await missingExtensions(server, result.extensions, options.signal);
        // A managed platform's own extensions (pg_graphql, supabase_vault…) are left out elsewhere.
        const platform = missing.length ? await skipPlatformExtensions({ listText: manifest.format === 'plain' ? undefined : (await execa(bins.pgRestore.path, ['--list', local.path], { cancelSignal: options.signal })).stdout, missing, profile: findProfile(options.profile ?? manifest.options?.profile), dir: scratch! }) : undefined;
        if (platform?.listFile) {
          log.warn(`leaving out the ${platform.skipped.length > 1 ? 'extensions' : 'extension'} ${platform.skipped.join(', ')} of ${findProfile(options.profile ?? manifest.options?.profile)!.title}, which this server lacks (the restore of the rest must still pass)`);
          missing = platform.remaining;
        }
        // Preflight: every role the dump's record names must exist (from the globals, or the target's own).
        const lacking = noOwner && noAcl ? [] : await missingRoles(server, manifest.privileges, options.signal);
        // A --target-url drill as a role that is not a superuser: what that target refuses is named before restoring.
        const refused = targetConn && !missing.length ? await drillTargetRefuses(target, bins.pgRestore, manifest.format, local.path, platform?.skipped ?? [], options.signal) : undefined;
        if (refused) {
          result.problems.push(refused);
        } else if (missing.length) {
          const them = missing.length > 1 ? 'them' : 'it';
          const targetMajor = held.cluster?.major ?? manifest.server.major;
          result.problems.push(`the target lacks extension${missing.length > 1 ? 's' : ''} ${missing.join(', ')} that the backup needs: install ${them} on the drill server (e.g. postgresql-${targetMajor}-${missing[0]}) or ${options.serverMajor ? `set PG_BIN_DIR to a PostgreSQL ${targetMajor} that has ${them}` : `drill into a --target-url that has ${them}`}`);
        } else if (lacking.length) {
          result.problems.push(missingRolesProblem(manifest.database, lacking, Boolean(globals)));
        } else {
          // pg_restore --create names the database as the archive does: a manifest naming another
          // one does not describe this archive. Said as a problem; the checks then read the database the archive made.
          const archiveDb = useCreate ? await archiveDatabaseName(bins.pgRestore, local.path, options.signal) : undefined;
          let misnamed: string | undefined;
          if (archiveDb !== undefined && archiveDb !== manifest.database) {
            misnamed = `the archive was dumped from database ${JSON.stringify(archiveDb)}, its manifest says ${JSON.stringify(manifest.database)}: the manifest does not describe this archive`;
            target = withDatabase(held.cluster!.connection, archiveDb);
          }
          // Phase 2: restore.
          const parallel = manifest.format === 'plain' ? 1 : jobs;
          log.info(`restoring into ${target.display} with ${bins.psql ? `psql ${bins.psql.version}` : `pg_restore ${bins.pgRestore.version}`}, ${parallel} job${parallel > 1 ? 's' : ''}${result.extensions.length ? `; extensions: ${result.extensions.join(', ')}` : ''}`);
          const verboseLines = await restorePhase(progress, manifest, { customArchive: manifest.format === 'custom' ? local.path : undefined, serial: parallel === 1 });
          const restoreStart = Date.now();
          // A throwaway cluster without the run's globals has no tablespace but pg_default: the objects go there.
          const noTablespaces = !targetConn && !globals && manifest.format !== 'plain';
          if (noTablespaces) log.info('without globals the throwaway cluster has no tablespace of the source: objects are restored into pg_default (pg_restore --no-tablespaces)');
          const args = [...(noOwner ? ['--no-owner'] : []), ...(noAcl ? ['--no-acl'] : []), ...(useCreate ? ['--create'] : []), ...(noTablespaces ? ['--no-tablespaces'] : []), ...(platform?.listFile && !platform.remaining.length ? [`--use-list=${platform.listFile}`] : [])];
          const restoreError = await log.group('restore', () => restoreLocalArchive(manifest.format, bins, local.path, useCreate ? server : target, { jobs: parallel, args, signal: options.signal, verboseLines }).then(
            () => undefined,
            (err: unknown) => messageOf(err),
          ));
          result.phases.restoreMs = Date.now() - restoreStart;
          options.signal?.throwIfAborted();
          if (restoreError) result.problems.push(missingRoleInFailure(restoreError, Boolean(globals)) ?? `restore failed: ${restoreError}`);
          log.info(`restore phase: ${formatSeconds(result.phases.restoreMs)}`);

          if (!restoreError) {
            // Phase 3: checks.
            progress.phase('checks');
            const checksStart = Date.now();
            await log.group('checks', async () => {
              await runChecks(target, manifest, smokeChecks, result, log, parallel, options.signal);
              if (misnamed) result.problems.push(misnamed); // after the checks' own findings, which name what differs
              if (manifest.privileges && !noOwner && !noAcl) {
                const differences = await checkPrivileges(target, manifest.privileges, { withDatabase: useCreate, log, signal: options.signal });
                result.privileges = { differences };
                for (const d of differences) result.problems.push(`privileges: ${d}`);
              } else {
                log.info(`privileges not checked: ${manifest.privileges ? 'restored with --no-owner/--no-acl' : 'the dump recorded none (taken before this version, or with --no-owner, --no-acl or a schema/table filter)'}`);
              }
            });
            result.phases.checksMs = Date.now() - checksStart;
            log.info(`checks phase: ${formatSeconds(result.phases.checksMs)}`);
          }
        }
      }
      workEnd = Date.now();
    }
  } catch (err) {
    workEnd ??= Date.now();
    // Every failure is a verdict (written, archived, reported), except a usage error, which
    // needs the user's fix and exits 2. A cancellation (SIGINT/SIGTERM, closed output) is
    // recorded as the drill's failure too: a job killed for taking too long is one.
    if (options.signal?.aborted) {
      result.cancelled = true;
      result.problems.unshift(`drill cancelled: ${messageOf(options.signal.reason)}`);
    } else if (err instanceof UsageError) {
      usageError = err;
    } else {
      result.problems.push(err instanceof CheckFailedError ? err.message : `drill failed: ${oneLine(messageOf(err))}`);
    }
  } finally {
    progress.stop();
    // Removed on every path, both at once; each on its own, so one failing does not skip the other.
    const shutdownStart = Date.now();
    const cluster = held.cluster;
    // The tablespaces' directories are the cluster user's: removed as that user can be, before the cluster's own.
    if (cluster && held.tablespaceDirs?.length) await removeClusterDirs(cluster.isolation, held.tablespaceDirs);
    await Promise.all([
      cluster?.stop().then(
        () => log.info('throwaway cluster removed (server stopped, directory deleted)'),
        (err: unknown) => log.warn(`removing the throwaway cluster failed: ${messageOf(err)} (remove ${cluster.dir} by hand)`),
      ),
      scratch ? rm(scratch, { recursive: true, force: true }).catch((err: unknown) => log.warn(`removing ${scratch} failed: ${messageOf(err)}`)) : undefined,
    ]);
    result.phases.shutdownMs = Date.now() - shutdownStart;
  }
  if (usageError) throw usageError;

  result.rtoMs = workStart === undefined ? 0 : (workEnd ?? Date.now()) - workStart;
  if (maxRtoMs !== undefined && result.rtoMs > maxRtoMs) result.problems.push(`RTO ${formatSeconds(result.rtoMs)} exceeds the budget --max-rto ${options.maxRto}`);
  if (maxRpoMs !== undefined && result.rpoMs !== undefined && result.rpoMs > maxRpoMs) {
    result.problems.push(`RPO ${formatSeconds(result.rpoMs)} (backup age) exceeds the budget --max-rpo ${options.maxRpo}`);
  }
  result.ok = result.problems.length === 0;
  if (result.problems[0]) result.reason = result.problems[0];
  // Each problem is said once: the first is the verdict's reason, which the caller prints as the
  // run's last line (the CLI's `drill failed: …`, the action's error); the others are warnings.
  for (const p of result.problems.slice(1)) log.warn(p);
  log.info(`RTO ${formatSeconds(result.rtoMs)} (${describePhases(result.phases, !targetConn)})`);
  if (result.ok) log.info('restore drill OK');
  else log.debug(`restore drill FAILED: ${result.reason}`); // the drill log's last line; on the terminal with --verbose
  // The verdict is written even after a cancellation: through a storage handle that the
  // command's signal does not abort, each write bounded by its own deadline instead.
  const recordStorage = options.s3?.signal ? openStorage(options.from, { ...options.s3, signal: undefined }) : storage;
  const labels = options.archiveLog === false ? undefined : await archiveDrillLog(recordStorage, options, backup, result, log.lines, startedAt, log);
  if (labels && !result.cancelled) result.history = await drillHistory(storage, labels, 10).catch((err: unknown) => {
    options.logger.warn(`cannot read the previous drills: ${messageOf(err)}`);
    return [];
  });
  return result;
}

/**
 * Runs the download and, when `cluster` is given, the throwaway cluster's start at the same
 * time, with one owner: the first to fail (a thrown error, or a download with problems such as
 * a SHA-256 mismatch) cancels the other through a shared AbortController, as does `signal`.
 * Both have settled when this returns or throws (no initdb, server start or GET left running);
 * what the cluster stage made is its own to clean up (the caller removes a started cluster).
 * Records `downloadMs` and `clusterReadyMs` in `phases` and logs one line per stage.
 * @returns the local archive (with its problems) and, when the cluster stage ran, the database to restore into.
 * @throws the first stage's error, or `signal.reason` when the signal fired.
 */
export async function downloadWhileClusterStarts(o: {
  download: (signal: AbortSignal) => Promise<LocalArchive>;
  cluster?: (signal: AbortSignal) => Promise<DatabaseConnection>;
  signal?: AbortSignal;
  phases: DrillPhases;
  log: Logger;
}): Promise<{ local: LocalArchive; target?: DatabaseConnection }> {
  const owner = new AbortController();
  const onAbort = () => owner.abort(o.signal!.reason);
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let first: { error: unknown } | undefined;
  /** The first stage to fail stops the other; a stage that failed because it was stopped is not a reason. */
  const fail = (err: unknown): never => {
    if (!owner.signal.aborted) {
      first = { error: err };
      owner.abort(err);
    }
    throw err;
  };
  const start = Date.now();
  const downloading = o.download(owner.signal).then((local) => {
    o.phases.downloadMs = Date.now() - start;
    o.log.info(`download phase: ${formatSeconds(o.phases.downloadMs)} for ${formatBytes(local.sizeBytes)}, sha256 ${local.problems.length ? 'MISMATCH or incomplete' : 'matches the manifest'}`);
    if (local.problems.length && !owner.signal.aborted) owner.abort(new Error('stopped: the download failed'));
    return local;
  }, fail);
  const starting = o.cluster?.(owner.signal).then((target) => {
    o.phases.clusterReadyMs = Date.now() - start;
    o.log.info(`cluster ready: ${formatSeconds(o.phases.clusterReadyMs)} (initdb, server start, CREATE DATABASE), while the download ran`);
    return target;
  }, fail);
  try {
    const [local, target] = await Promise.allSettled([downloading, starting]);
    o.signal?.throwIfAborted();
    if (first) throw first.error;
    if (local.status === 'rejected') throw local.reason;
    // A download with problems stopped the cluster's start: its verdict is the download's.
    if (local.value.problems.length) return { local: local.value };
    if (target.status === 'rejected') throw target.reason;
    return { local: local.value, target: target.value };
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

/** A multi-line message (a program's output) as one line: its non-blank lines joined by " | ", at most 500 characters. */
function oneLine(message: string): string {
  const text = message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ');
  return text.length > 500 ? `${text.slice(0, 499)}…` : text;
}

/**
 * For a drill into `--target-url`: the archive's entries that target refuses to the drill's role
 * (event triggers, extensions needing a superuser, comments on extensions it does not own…:
 * {@link refusedEntries}; ownership and grants are not restored by a drill), as one problem
 * line, or undefined. `skipped`: the platform extensions already left out. Plain SQL: undefined.
 */
async function drillTargetRefuses(target: DatabaseConnection, pgRestore: PgBinary, format: DumpFormat, archive: string, skipped: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
  if (format === 'plain') return undefined;
  const listed = await execa(pgRestore.path, ['--list', archive], { cancelSignal: signal });
  const refused = (await withClient(target, signal, (c) => refusedEntries(c, parseToc(listed.stdout), { noOwner: true }))).filter((r) => !skipped.some((e) => r.label === `extension ${e}` || r.label === `comment on extension ${e}`));
  return refused.length ? refusedMessage(refused, 6, 'drill into a throwaway server (without --target-url), or with a superuser in --target-url') : undefined;
}
