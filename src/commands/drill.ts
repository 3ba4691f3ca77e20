import { resolveBackup, type BackupFilter, type ResolvedBackup } from '../backup/catalog.ts';
import { drillFolder, parseManifestKey, utcStamp } from '../backup/keys.ts';
import type { Manifest } from '../backup/manifest.ts';
import type pg from 'pg';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseDuration } from '../duration.ts';
import { identitiesFor } from '../backup/encryption.ts';
import { downloadArchive, type LocalArchive } from '../backup/readback.ts';
import { archiveExtensions, restoreBinaries, restoreLocalArchive } from '../postgres/archive.ts';
import { addDataOffsets } from '../postgres/archive-offsets.ts';
import { readSmokeChecks, runSmokeChecks, type SmokeCheck, type SmokeResult } from '../backup/smoke.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { recordingLogger, type Logger } from '../log.ts';
import { createThrowawayDatabase, startThrowawayCluster, workDirOf, type ThrowawayCluster } from '../postgres/cluster.ts';
import { ensureDrillSpace } from '../postgres/disk.ts';
import { resolveConnection, type DatabaseConnection } from '../postgres/connection.ts';
import { findMigrationHead } from '../postgres/migrations.ts';
import { connect, countRows, serverFacts, type TableRowCount } from '../postgres/server.ts';
import { targetContents } from '../postgres/target.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { TOOL } from '../version.ts';
import { formatBytes, formatSeconds } from '../format.ts';

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
  /** A smoke SQL file: queries, each preceded by `-- expect: …` (see `src/backup/smoke.ts`). */
  smokeSql?: string;
  /** Fail when RTO exceeds this duration (`30m`, `1h`). */
  maxRto?: string;
  /** Fail when the recovery point is older than this at drill time (`30h`): for a logical drill the backup's age. */
  maxRpo?: string;
  /** S3 settings of the bucket the drill reads from or writes its log to. */
  s3?: S3Settings;
  logger: Logger;
  /** Cancels the drill (SIGINT/SIGTERM, a closed output): it stops, cleans up, and still writes its verdict. */
  signal?: AbortSignal;
  now?: () => Date;
}

/** The budgets and smoke checks of a drill's {@link DrillCommonOptions}, parsed and read. */
export interface DrillBudgets {
  /** `maxRto` in ms, undefined without a budget. */
  maxRtoMs?: number;
  /** `maxRpo` in ms, undefined without a budget. */
  maxRpoMs?: number;
  smokeChecks: SmokeCheck[];
}

/**
 * Parses `maxRto`/`maxRpo` and reads the smoke SQL file, before a drill starts anything.
 * @throws UsageError for a duration that does not parse or an unreadable or malformed smoke file.
 */
export async function drillBudgets(options: DrillCommonOptions): Promise<DrillBudgets> {
  return {
    maxRtoMs: options.maxRto ? parseDuration(options.maxRto, '--max-rto') : undefined,
    maxRpoMs: options.maxRpo ? parseDuration(options.maxRpo, '--max-rpo') : undefined,
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
  /** For drill-majors.ts: false leaves archiving the drill log to the caller. Default true. */
  archiveLog?: boolean;
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

/** Time per phase of a logical drill, in ms; a phase that did not run (or not to its end) is 0. */
export interface DrillPhases {
  /** GET, SHA-256, decryption and decompression into a local file. */
  downloadMs: number;
  /**
   * The throwaway cluster ready for the restore: initdb, server start and CREATE DATABASE, run
   * while the download runs (0 with a target URL).
   */
  clusterReadyMs: number;
  /** pg_restore (or psql for a plain dump). */
  restoreMs: number;
  /** Row counts, sequences, migration head and smoke SQL. */
  checksMs: number;
  /** After the RTO: the throwaway cluster stopped and removed, the download directory removed. */
  shutdownMs: number;
}

/** One past drill, as its JSON report in the bucket tells. */
export interface DrillHistoryEntry {
  startedAt: string;
  ok: boolean;
  rtoMs: number;
  backupId: string | undefined;
  reportKey: string;
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
  /**
   * Recovery time in ms: the wall time a user waits for a checked database, from the start of
   * the download (the throwaway cluster starts meanwhile) to the end of the checks, or to the
   * point where the drill stopped. It is not the sum of {@link phases}: the download and the
   * cluster start overlap, and the extension preflight sits between the download and the
   * restore. The shutdown comes after it.
   */
  rtoMs: number;
  phases: DrillPhases;
  /** Extensions the archive creates. */
  extensions: string[];
  /** `server_version` the restore target reported (`17.10`). */
  serverVersion?: string;
  /** Upgrade rehearsal (`postgresVersions`): one result per server major, ascending. */
  majors?: MajorDrillResult[];
  /** Age of the backup when the drill started, in ms (the recovery point it gives). */
  rpoMs?: number;
  tables: TableCheck[];
  /** Sequences whose value is behind the greatest value of the column they feed. */
  sequencesBehind: string[];
  /** The migration head recorded in the manifest and the one found after the restore. */
  migrationHead?: { expected: string | undefined; actual: string | undefined; ok: boolean };
  smoke: SmokeResult[];
  /** This drill and the previous ones of the same database, newest first (at most 10), read back from the bucket. */
  history: DrillHistoryEntry[];
  drillLogUri?: string;
  drillReportUri?: string;
  /** The drill was stopped by its signal (SIGINT/SIGTERM, closed output) before it finished; `ok` is false. */
  cancelled?: boolean;
}

/**
 * Restores a backup into a throwaway PostgreSQL (or `targetUrl`), checks it, and times it:
 * download → decompress → `pg_restore --exit-on-error --no-owner --no-acl`, then row counts per
 * table against the manifest (counted in the dump's snapshot). With a throwaway cluster, initdb
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
  const { maxRtoMs, maxRpoMs, smokeChecks } = await drillBudgets(options);
  let scratch: string | undefined;
  const targetConn = options.targetUrl ? resolveConnection(options.targetUrl) : undefined;
  let backup: ResolvedBackup | undefined;
  // Set as soon as the cluster exists, so that `finally` removes it on every path.
  const held: { cluster?: ThrowawayCluster } = {};
  let usageError: UsageError | undefined;
  /** When the restore work (download ∥ cluster start) began and ended (the end of the checks, or where the drill stopped): the RTO. */
  let workStart: number | undefined;
  let workEnd: number | undefined;
  try {
    try {
      backup = await resolveBackup(storage, options.backup, options.filter);
    } catch (err) {
      if (!(err instanceof CheckFailedError)) throw err;
      result.problems.push(err.message);
    }
    options.signal?.throwIfAborted();
    if (backup) {
      const { manifest } = backup;
      result.manifest = manifest;
      result.backupUri = storage.uri(backup.objectKey);
      result.manifestUri = storage.uri(backup.manifestKey);
      result.rpoMs = startedAt.getTime() - Date.parse(manifest.startedAt);
      log.info(`restore drill of ${result.backupUri}`);
      log.info(`backup: ${manifest.service}/${manifest.environment}/${manifest.database}, taken ${manifest.startedAt} (${formatSeconds(result.rpoMs)} ago), ${formatBytes(manifest.object.sizeBytes)}, PostgreSQL ${manifest.server.version}, pg_dump ${manifest.pgDump.version}`);
      // Before any cluster starts: an encrypted backup without an identity is a usage error.
      const identities = identitiesFor(manifest.encryption, options.ageIdentities, result.backupUri);
      const bins = await restoreBinaries(manifest, options.serverMajor);
      const parent = workDirOf(options.workDir);

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
      workStart = Date.now();
      const ready = await log.group(targetConn ? 'download' : 'download + cluster start', () =>
        downloadWhileClusterStarts({
          // A custom archive dumped through a pipe lacks its data offsets: write them into this
          // scratch copy (part of the download phase, while the cluster still starts).
          download: (signal) =>
            downloadArchive(storage, backup!, scratch!, signal, identities).then(async (local) => {
              if (manifest.format === 'custom' && local.problems.length === 0) await addDataOffsets(local.path, log, signal);
              return local;
            }),
          cluster: targetConn
            ? undefined
            : async (signal) => {
                const cluster = await startThrowawayCluster({ minMajor: manifest.server.major, major: options.serverMajor, workDir: options.workDir, logger: log, signal, bulkRestore: {} }).catch((err: unknown) => {
                  // startThrowawayCluster removed what it made.
                  log.info(`throwaway cluster removed: its start ${signal.aborted ? 'was stopped' : 'failed'}`);
                  throw err;
                });
                held.cluster = cluster;
                signal.throwIfAborted();
                // A plain dump names its owners and grantees: the throwaway cluster gets those roles.
                return createThrowawayDatabase(cluster, manifest.database, manifest.format === 'plain' ? manifest.roles : undefined);
              },
          signal: options.signal,
          phases: result.phases,
          log,
        }),
      );
      const local = ready.local;
      const target = ready.target ?? targetConn!;
      result.problems.push(
        ...local.problems.map((p) =>
          /ENOSPC/.test(p) ? `${p}: the drill needs about ${formatBytes(manifest.archiveSizeBytes)} free in ${parent} for the archive, plus room for the restored database` : p,
        ),
      );

      if (local.problems.length === 0) {
        result.serverVersion = await reportedServerVersion(target);
        // Preflight: every extension the archive creates must be available on the target.
        result.extensions = await archiveExtensions(manifest.format, bins.pgRestore, local.path, options.signal);
        const missing = await missingExtensions(target, result.extensions, options.signal);
        if (missing.length) {
          const them = missing.length > 1 ? 'them' : 'it';
          const targetMajor = held.cluster?.major ?? manifest.server.major;
          result.problems.push(`the target lacks extension${missing.length > 1 ? 's' : ''} ${missing.join(', ')} that the backup needs: install ${them} on the drill server (e.g. postgresql-${targetMajor}-${missing[0]}) or ${options.serverMajor ? `set PG_BIN_DIR to a PostgreSQL ${targetMajor} that has ${them}` : `drill into a --target-url that has ${them}`}`);
        } else {
          // Phase 2: restore.
          const parallel = manifest.format === 'plain' ? 1 : jobs;
          log.info(`restoring into ${target.display} with ${bins.psql ? `psql ${bins.psql.version}` : `pg_restore ${bins.pgRestore.version}`}, ${parallel} job${parallel > 1 ? 's' : ''}${result.extensions.length ? `; extensions: ${result.extensions.join(', ')}` : ''}`);
          const restoreStart = Date.now();
          const restoreError = await log.group('restore', () => restoreLocalArchive(manifest.format, bins, local.path, target, { jobs: parallel, args: ['--no-owner', '--no-acl'], signal: options.signal }).then(
            () => undefined,
            (err: unknown) => messageOf(err),
          ));
          result.phases.restoreMs = Date.now() - restoreStart;
          options.signal?.throwIfAborted();
          if (restoreError) result.problems.push(`restore failed: ${restoreError}`);
          log.info(`restore phase: ${formatSeconds(result.phases.restoreMs)}`);

          if (!restoreError) {
            // Phase 3: checks.
            const checksStart = Date.now();
            await log.group('checks', () => runChecks(target, manifest, smokeChecks, result, log, parallel, options.signal));
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
    // Removed on every path, both at once; each on its own, so one failing does not skip the other.
    const shutdownStart = Date.now();
    const cluster = held.cluster;
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
  for (const p of result.problems) log.warn(p);
  log.info(`RTO ${formatSeconds(result.rtoMs)} (${describePhases(result.phases, !targetConn)})`);
  log.info(result.ok ? 'restore drill OK' : `restore drill FAILED: ${result.reason}`);
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
 * The phases as one line for the drill log, the CLI and the job summary:
 * `download 3.9 s ∥ cluster ready 1.1 s, restore 12.0 s, checks 0.7 s; shutdown 0.3 s after`
 * (`∥`: the two overlap; without a throwaway cluster the cluster part is left out).
 */
export function describePhases(phases: DrillPhases, throwaway = phases.clusterReadyMs > 0): string {
  const f = formatSeconds;
  return `download ${f(phases.downloadMs)}${throwaway ? ` ∥ cluster ready ${f(phases.clusterReadyMs)}` : ''}, restore ${f(phases.restoreMs)}, checks ${f(phases.checksMs)}; shutdown ${f(phases.shutdownMs)} after`;
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
async function downloadWhileClusterStarts(o: {
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

/**
 * The post-restore checks: row counts per table against the manifest (counted in the dump's
 * snapshot), sequences not behind their columns, the migration head, and the smoke SQL.
 * Appends every failure to `result.problems`. The row counts run over up to `connections`
 * connections at once (see {@link countRowsInParallel}); the rest on one.
 */
async function runChecks(target: DatabaseConnection, manifest: Manifest, smoke: SmokeCheck[], result: DrillResult, log: Logger, connections: number, signal?: AbortSignal): Promise<void> {
  await withClient(target, signal, async (client) => {
    const { rows } = await client.query<{ schema: string; table: string; bytes: string }>(
      `SELECT n.nspname AS schema, c.relname AS table, pg_relation_size(c.oid)::text AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'`,
    );
    const key = (t: { schema: string; table: string }) => `${t.schema}\u0000${t.table}`;
    const bytes = new Map(rows.map((r) => [key(r), Number(r.bytes)]));
    // Largest first, so that the biggest table does not start last on a busy connection.
    const present = manifest.tables.filter((t) => bytes.has(key(t))).sort((a, b) => bytes.get(key(b))! - bytes.get(key(a))!);
    const counts = new Map((await countRowsInParallel(target, present, connections, signal)).map((c) => [key(c), c.rows]));
    result.tables = manifest.tables.map((t) => {
      const actual = counts.get(key(t));
      return { schema: t.schema, table: t.table, expected: t.rows, actual, ok: actual === t.rows };
    });
    const bad = result.tables.filter((t) => !t.ok);
    for (const t of bad) {
      result.problems.push(
        t.actual === undefined ? `table ${t.schema}.${t.table} is missing after the restore` : `row count of ${t.schema}.${t.table} is ${t.actual}, the manifest says ${t.expected}`,
      );
    }
    log.info(`row counts: ${result.tables.length - bad.length}/${result.tables.length} tables match the manifest (counted over ${Math.max(1, Math.min(connections, present.length))} connection${Math.min(connections, present.length) > 1 ? 's' : ''})`);

    result.sequencesBehind = await sequencesBehind(client);
    for (const s of result.sequencesBehind) result.problems.push(`sequence ${s}`);
    log.info(`sequences: ${result.sequencesBehind.length ? `${result.sequencesBehind.length} behind their columns` : 'none behind their columns'}`);

    const head = await findMigrationHead(client);
    const expected = manifest.migrationHead?.head;
    if (expected !== undefined || head) {
      result.migrationHead = { expected, actual: head?.head, ok: head?.head === expected };
      if (!result.migrationHead.ok) result.problems.push(`migration head is ${head?.head ?? 'missing'} after the restore, the manifest says ${expected ?? 'none'}`);
      log.info(`migration head (${head?.table ?? manifest.migrationHead?.table}): ${head?.head ?? 'missing'}${result.migrationHead.ok ? ', as recorded' : `, expected ${expected}`}`);
    }

    if (smoke.length) {
      result.smoke = await runSmokeChecks(client, smoke);
      for (const r of result.smoke) {
        log.info(`smoke line ${r.line} (${r.expectation}): ${r.ok ? 'OK' : 'FAILED'}, got ${r.actual}`);
        if (!r.ok) result.problems.push(`smoke check at line ${r.line} expected ${r.expectation}, got ${r.actual}`);
      }
    }
  });
}

/**
 * Counts the rows of `tables` (`count(*)`, the server's parallel scans allowed) over up to
 * `connections` connections to `target` at once, each taking the next table of the list in
 * turn, so a big table's count runs beside the others'. Measured on a 2-core machine after a
 * restore of 1.06 GB (5 M + 2 M rows and three small tables, hint bits not yet set): 0.66–0.98 s
 * over two connections against 1.12–1.24 s over one, for the same server CPU (0.58 against
 * 0.62 s).
 * @returns one count per table, in no particular order.
 * @throws the first connection's or query's error; `signal.reason` when `signal` aborts (every connection is closed).
 */
async function countRowsInParallel(target: DatabaseConnection, tables: { schema: string; table: string }[], connections: number, signal?: AbortSignal): Promise<TableRowCount[]> {
  const queue = [...tables];
  const out: TableRowCount[] = [];
  const worker = () =>
    withClient(target, signal, async (client) => {
      for (let t = queue.shift(); t; t = queue.shift()) out.push(...(await countRows(client, [t])));
    }).catch((err: unknown) => {
      queue.length = 0; // the first failure ends the counting on every connection
      throw err;
    });
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(connections, tables.length)) }, worker));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return out;
}

/** A multi-line message (a program's output) as one line: its non-blank lines joined by " | ", at most 500 characters. */
function oneLine(message: string): string {
  const text = message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ');
  return text.length > 500 ? `${text.slice(0, 499)}…` : text;
}

/**
 * Runs `fn` with a client of `target`, ended afterwards. When `signal` aborts, the connection is
 * closed at once (a running query fails) and `signal.reason` is thrown.
 */
async function withClient<T>(target: DatabaseConnection, signal: AbortSignal | undefined, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  signal?.throwIfAborted();
  const client = await connect(target, 'pg-backup drill');
  const onAbort = () => void client.end().catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    signal?.throwIfAborted();
    const out = await fn(client);
    signal?.throwIfAborted();
    return out;
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await client.end().catch(() => undefined);
  }
}

/**
 * Sequences owned by an integer column (serial or identity) whose next value would collide
 * with existing rows: `last_value` (or, if never called, `last_value - increment`) below the
 * column's max. This is what a data-only restore or a bad `setval` leaves behind (seed 002).
 */
async function sequencesBehind(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ seq: string; col: string; tbl: string; increment: string }>(
    `SELECT format('%I.%I', sn.nspname, s.relname) AS seq, format('%I', a.attname) AS col, format('%I.%I', tn.nspname, t.relname) AS tbl,
            ps.seqincrement::text AS increment
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_sequence ps ON ps.seqrelid = s.oid
       JOIN pg_class t ON t.oid = d.refobjid
       JOIN pg_namespace tn ON tn.oid = t.relnamespace
       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)`,
  );
  const behind: string[] = [];
  for (const r of rows) {
    const state = await client.query<{ last: string; called: boolean; max: string | null }>(
      `SELECT last_value::text AS last, is_called AS called, (SELECT max(${r.col})::text FROM ${r.tbl}) AS max FROM ${r.seq}`,
    );
    const { last, called, max } = state.rows[0]!;
    if (max === null) continue;
    const increment = BigInt(r.increment);
    const current = called ? BigInt(last) : BigInt(last) - increment;
    if (increment > 0n ? current < BigInt(max) : false) behind.push(`${r.seq} is behind ${r.tbl}.${r.col}: its value is ${current}, the column's max is ${max}`);
  }
  return behind;
}

/** Of `extensions`, those the target server cannot create (`pg_available_extensions`). */
async function missingExtensions(target: DatabaseConnection, extensions: string[], signal?: AbortSignal): Promise<string[]> {
  if (extensions.length === 0) return [];
  return withClient(target, signal, async (client) => {
    const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_available_extensions WHERE name = ANY($1::text[])', [extensions]);
    const available = new Set(rows.map((r) => r.name));
    return extensions.filter((e) => !available.has(e));
  });
}

/**
 * Writes the drill log (text) and report (JSON) under the drill folder. A storage failure here
 * (read-only credentials) is a warning: the drill's verdict stands.
 */
export async function archiveDrillLog(
  storage: Storage,
  options: DrillOptions,
  backup: ResolvedBackup | undefined,
  result: DrillResult,
  lines: string[],
  startedAt: Date,
  log: Logger,
): Promise<DrillLabels | undefined> {
  const fromKey = options.backup && options.backup !== 'latest' ? parseManifestKey(options.backup.replace(/\.(?:(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?|dir\/?)$/, '.manifest.json')) : undefined;
  const labels = backup?.manifest ?? fromKey ?? (options.filter?.service && options.filter.environment && options.filter.database ? (options.filter as Required<BackupFilter>) : undefined);
  if (!labels) {
    log.warn('drill log not archived: the backup could not be identified (give --service, --environment and --database)');
    return undefined;
  }
  try {
    const keys = drillRecordKeys(labels, backup?.manifest.id ?? 'unknown', startedAt);
    result.drillLogUri = storage.uri(keys.log);
    result.drillReportUri = storage.uri(keys.report);
    await writeDrillRecord(storage, keys, { ...result, manifest: undefined, backupId: backup?.manifest.id }, lines);
  } catch (err) {
    result.drillLogUri = undefined;
    result.drillReportUri = undefined;
    log.warn(`drill log not archived: ${messageOf(err)}`);
  }
  return { service: labels.service, environment: labels.environment, database: labels.database };
}

/** The labels that name a drill folder: service, environment, and the database (or pgBackRest stanza). */
export type DrillLabels = { service: string; environment: string; database: string };

/**
 * The keys of one drill's JSON report and text log:
 * `drills/<service>/<environment>/<database>/<YYYY>-Q<n>/<id>-drill-<YYYYMMDDTHHMMSSZ>.{json,log}`
 * (`id`: the backup's id, or pgBackRest's backup label). Logical and physical drills share it.
 */
export function drillRecordKeys(labels: DrillLabels, id: string, startedAt: Date): { report: string; log: string } {
  const stem = `${drillFolder(labels, startedAt)}${id}-drill-${utcStamp(startedAt)}`;
  return { report: `${stem}.json`, log: `${stem}.log` };
}

/**
 * Writes a drill's report (JSON, with `tool` added; it must carry `startedAt`, `ok`, `rtoMs` and
 * `backupId` for {@link drillHistory}) and then its log (text lines) at `keys`.
 * @throws the storage's error when a write fails (the caller decides whether that is a warning).
 */
export async function writeDrillRecord(storage: Storage, keys: { report: string; log: string }, report: object, lines: string[]): Promise<void> {
  // Each write has its own deadline: the verdict of a cancelled drill is still written, and a
  // store that does not answer cannot hold the drill's exit for longer than this.
  const deadline = () => AbortSignal.timeout(DRILL_RECORD_DEADLINE_MS);
  await storage.put(keys.report, `${JSON.stringify({ tool: TOOL, ...report }, null, 2)}\n`, { contentType: 'application/json', signal: deadline() });
  await storage.put(keys.log, `${lines.join('\n')}\n`, { contentType: 'text/plain; charset=utf-8', signal: deadline() });
}

/** How long one write of the drill log or report may take (ms), cancelled drills included. */
export const DRILL_RECORD_DEADLINE_MS = 20_000;

/**
 * The newest `limit` drills of one database, read from their JSON reports under
 * `drills/<service>/<environment>/<database>/` (all quarters), newest first.
 */
export async function drillHistory(storage: Storage, labels: DrillLabels, limit: number): Promise<DrillHistoryEntry[]> {
  const folder = drillFolder(labels, new Date()).replace(/\d{4}-Q\d\/$/, '');
  const keys: string[] = [];
  for await (const obj of storage.list(folder)) if (/-drill-\d{8}T\d{6}Z\.json$/.test(obj.key)) keys.push(obj.key);
  const stamp = (k: string) => /-drill-(\d{8}T\d{6}Z)\.json$/.exec(k)![1]!;
  keys.sort((a, b) => (stamp(a) < stamp(b) ? 1 : stamp(a) > stamp(b) ? -1 : 0));
  // The reports are read at once (at most `limit` small GETs), kept in the keys' order.
  const entries = await Promise.all(
    keys.slice(0, limit).map(async (key): Promise<DrillHistoryEntry | undefined> => {
      try {
        const r = JSON.parse(await storage.getText(key)) as { startedAt?: string; ok?: boolean; rtoMs?: number; backupId?: string };
        return { startedAt: String(r.startedAt), ok: r.ok === true, rtoMs: Number(r.rtoMs ?? 0), backupId: r.backupId, reportKey: key };
      } catch {
        return undefined; // an unreadable report is skipped
      }
    }),
  );
  return entries.filter((e): e is DrillHistoryEntry => e !== undefined);
}

/** One major's outcome in an upgrade rehearsal. */
export interface MajorDrillResult {
  /** The target server's major version, e.g. 17. */
  major: number;
  /** `server_version` as the target reported it, trimmed at the first space (`17.10`); undefined when no server started. */
  serverVersion?: string;
  /** Where its server binaries came from: `installed` (PG_BIN_DIR, apt…) or `download` (the npm package). */
  binaries?: 'installed' | 'download';
  /** The npm package the binaries came from, for `download`. */
  packageSpec?: string;
  ok: boolean;
  /** Recovery time into this major, in ms: wall time from its download's start to its checks' end (see DrillResult.rtoMs). */
  rtoMs: number;
  phases: DrillResult['phases'];
  /** The first failed check (one line), when not ok. */
  reason?: string;
  problems: string[];
  extensions: string[];
  tables: TableCheck[];
  sequencesBehind: string[];
  migrationHead?: DrillResult['migrationHead'];
  smoke: DrillResult['smoke'];
}

/**
 * `server_version` as `target` reports it, trimmed at the first space (`15.18 (Debian …)` →
 * `15.18`), or undefined when it cannot be read (the drill's checks report the connection problem).
 */
export async function reportedServerVersion(target: DatabaseConnection): Promise<string | undefined> {
  try {
    const client = await connect(target, 'pg-backup drill');
    try {
      return (await serverFacts(client)).version;
    } finally {
      await client.end().catch(() => undefined);
    }
  } catch {
    return undefined;
  }
}
