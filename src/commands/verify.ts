import { Writable } from 'node:stream';
import { AmbiguousLatestError, confirmStored, databaseEntries, isBelieved, judgeNewest, listBackups, resolveBackup, type BackupEntry, type BackupFilter, type ResolvedBackup } from '../backup/catalog.ts';
import { parseMaxClockSkew, type ClockCheck, type TimeProblem } from '../backup/clock.ts';
import { parseDuration } from '../duration.ts';
import { parseManifest, type Manifest } from '../backup/manifest.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { identitiesFor, loadIdentities } from '../backup/encryption.ts';
import { requireZstd } from '../backup/compression.ts';
import { storedParts } from '../backup/parts.ts';
import { downloadArchive, readbackProblems, streamBackup, teeSinks, type ArchiveSink, type DirectSink } from '../backup/readback.ts';
import { readArchiveSink, restoreBinaries, restoreLocalArchive, restoreSink, type RestoreBinaries } from '../postgres/archive.ts';
import { requireRestrictedPsql } from '../postgres/plain-sql.ts';
import { isGlobalsManifest, readGlobalsSink } from '../backup/globals.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { prefetchPrograms } from '../postgres/binaries.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { createThrowawayDatabase, startThrowawayCluster, workDirOf, type ThrowawayCluster } from '../postgres/cluster.ts';
import { clusterIsolation } from '../postgres/cluster-user.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { checkLocation, openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { meteredStorage } from '../backup/progress-eta.ts';
import { startRestoreProgress } from './step-progress.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import { backupKeys } from '../backup/keys.ts';
import { VERIFY_RECORD_SUFFIX, verifyRecordKey, type VerifyRecord } from '../backup/proof.ts';
import { TOOL } from '../version.ts';

/**
 * How deep verify goes; each level includes the ones before it.
 * - `none`: no download: the freshness checks (`maxAge`, `expectEvery`), suspicion, and that the
 *   stored objects exist with the manifest's sizes (one listing; with `latest` over several
 *   databases, the newest backup of each).
 * - `checksum`: download; size and SHA-256 against the manifest.
 * - `archive`: and read the whole archive with `pg_restore --file=/dev/null`.
 * - `schema`: and replay the schema into a throwaway PostgreSQL (`pg_restore --schema-only`).
 */
export const VERIFY_LEVELS = ['none', 'checksum', 'archive', 'schema'] as const;
export type VerifyLevel = (typeof VERIFY_LEVELS)[number];

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  /** `latest` (default), a manifest or dump key, or its full URI. */
  backup?: string;
  /** With `latest`, and for the freshness checks: which service / environment / database. */
  filter?: BackupFilter;
  /** Default `archive`. */
  level?: VerifyLevel;
  /** Fail when the newest complete backup in scope is older than this (`30h`). */
  maxAge?: string;
  /** Expected cadence (`6h`): gaps longer than 1.5× this in the listed history (and up to now) fail. */
  expectEvery?: string;
  /**
   * A backup stamped later than now + this (`10m`, the default), or whose key stamp and
   * manifest disagree, is never `latest` and never counts as fresh (src/backup/clock.ts).
   */
  maxClockSkew?: string;
  /** Turn suspicions (a much smaller backup, a collapsed table) into failures. Default: warnings. */
  failOnSuspicion?: boolean;
  /** Parent directory of the throwaway cluster for `schema`. */
  workDir?: string;
  /** `schema`: run the throwaway PostgreSQL as this process's own OS user when no other can be had (`--allow-same-os-user`; see `DrillCommonOptions.allowSameOsUser`). */
  allowSameOsUser?: boolean;
  /** Why the same OS user is acceptable, for the log (the demo's own data). */
  sameOsUserReason?: string;
  s3?: S3Settings;
  /** age identities for client-side encrypted backups; default `PG_BACKUP_AGE_IDENTITY(_FILE)`. Without one, `checksum` checks the stored bytes only. */
  ageIdentities?: string[];
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
  /**
   * Write the verdict to `<id>.verify.json` beside the backup (see `src/backup/proof.ts`), so a
   * prune knows the backup is proven. Needs s3:PutObject there; verify usually runs with
   * read-only credentials, so a failed write is a warning and the verdict stands. Default false.
   */
  record?: boolean;
}

/** A stretch of time without a backup, longer than the expected cadence allows. */
export interface CadenceGap {
  scope: string;
  /** UTC ISO 8601: the backup before the gap. */
  from: string;
  /** UTC ISO 8601: the backup after the gap, or the check time. */
  to: string;
  durationMs: number;
}

/** The verdict of {@link verify}. A failed check is a result (`ok: false`), not an exception. */
export interface VerifyResult {
  ok: boolean;
  level: VerifyLevel;
  /** Why the backup is not intact; absent when ok. */
  reason?: string;
  problems: string[];
  /** Signs of an emptied or shrunken database (failures with `failOnSuspicion`, else warnings). */
  suspicions: string[];
  backupUri?: string;
  manifestUri?: string;
  manifest?: Manifest;
  /** Bytes downloaded. */
  sizeBytes: number;
  sha256?: string;
  /** Age of the newest complete backup in scope, in ms (when `maxAge` or `expectEvery` was given). */
  newestAgeMs?: number;
  gaps: CadenceGap[];
  durationMs: number;
  /** URI of the verify record written (`record`); absent when none was written. */
  recordUri?: string;
}

/**
 * Proves a stored backup intact and readable, and that backups are not overdue. Reads the
 * manifest; re-downloads the object and checks size and SHA-256 against it (`checksum`); reads
 * the whole archive with `pg_restore --file=/dev/null`, which reads every data block, unlike
 * `pg_restore --list`, which passes truncated archives (`archive`); replays the schema into a
 * throwaway PostgreSQL (`schema`). Streams; uses no local disk but the throwaway cluster.
 * Compares the backup with the previous one (suspicion) and checks freshness when asked.
 * Needs read-only credentials (List, Get). With `record`, the verdict is also written to
 * `<id>.verify.json` (the proof `prune` honours; a write the credentials refuse is a warning).
 * @throws UsageError for bad options, no matching backup, unusable storage or missing binaries.
 */
export async function verify(options: VerifyOptions): Promise<VerifyResult> {
  // Who runs the schema level's throwaway cluster is settled before anything is read: a refusal (exit 2) leaves nothing behind.
  if (options.level === 'schema') await clusterIsolation({ allowSameOsUser: options.allowSameOsUser, reason: options.sameOsUserReason });
  const result = await verifyBackup(options);
  // A cancelled verify proves nothing either way: no verdict, no record.
  options.signal?.throwIfAborted();
  if (options.record) await recordVerification(options, result);
  return result;
}

/**
 * Writes `result` as the verify record of its backup (`<id>.verify.json`, schema
 * `VerifyRecordSchema`). Nothing is written at level `none` (it proves nothing) or when no backup
 * was found. A failed write is a warning.
 */
async function recordVerification(options: VerifyOptions, result: VerifyResult): Promise<void> {
  const { logger } = options;
  if (!result.manifest || !result.manifestUri) return logger.warn('verification not recorded: no backup was found');
  if (result.level === 'none') return logger.warn('verification not recorded: level none downloads nothing and proves nothing');
  const storage = openStorage(options.from, options.s3);
  const m = result.manifest;
  const manifestKey = backupKeys(m, new Date(m.startedAt), '', m.id.slice(-6)).manifestKey;
  if (storage.uri(manifestKey) !== result.manifestUri) return logger.warn(`verification not recorded: ${result.manifestUri} is not where the key layout puts backup ${m.id}`);
  const key = verifyRecordKey(manifestKey);
  const now = (options.now ?? (() => new Date()))();
  const record: VerifyRecord = { recordVersion: 1, tool: TOOL, backupId: m.id, level: result.level, ok: result.ok, reason: result.reason, sha256: result.sha256, verifiedAt: now.toISOString(), durationMs: result.durationMs };
  try {
    await storage.put(key, `${JSON.stringify(record, null, 2)}\n`, 'application/json');
    result.recordUri = storage.uri(key);
    logger.info(`verification recorded in ${result.recordUri}`);
  } catch (err) {
    logger.warn(`verification not recorded (the verdict stands): ${messageOf(err)}; grant s3:PutObject on */*${VERIFY_RECORD_SUFFIX} to the verifier, or drop --record`);
  }
}

async function verifyBackup(options: VerifyOptions): Promise<VerifyResult> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  const started = Date.now();
  const level = options.level ?? 'archive';
  if (!VERIFY_LEVELS.includes(level)) throw new UsageError(`unknown verify level ${JSON.stringify(level)}: use ${VERIFY_LEVELS.join(', ')}`);
  const maxAgeMs = options.maxAge ? parseDuration(options.maxAge, '--max-age') : undefined;
  const everyMs = options.expectEvery ? parseDuration(options.expectEvery, '--expect-every') : undefined;
  const clock: ClockCheck = { now: now(), maxSkewMs: parseMaxClockSkew(options.maxClockSkew) };
  const storage = openStorage(options.from, options.s3);
  // The programs the archive's read needs are looked up while the store is listed.
  if (level === 'archive' || level === 'schema') {
    prefetchPrograms('pg_restore');
    requireZstd().catch(() => undefined);
  }
  await checkLocation(storage);
  const result: VerifyResult = { ok: false, level, problems: [], suspicions: [], sizeBytes: 0, gaps: [], durationMs: 0 };
  const finish = () => {
    result.ok = result.problems.length === 0 && (!options.failOnSuspicion || result.suspicions.length === 0);
    result.reason = result.problems[0] ?? (result.ok ? undefined : result.suspicions[0]);
    result.durationMs = Date.now() - started;
    for (const s of result.suspicions) logger.warn(`suspicious: ${s}`);
    if (result.ok) logger.info(`verify OK (${result.level}) in ${formatSeconds(result.durationMs)}`);
    // The first problem is the reason the caller prints as the run's last line (`verify failed: …`): said once.
    else for (const p of result.problems.slice(1)) logger.warn(`verify FAILED: ${p}`);
    return result;
  };

  // Freshness and cadence need the listing; so does latest.
  const needsHistory = maxAgeMs !== undefined || everyMs !== undefined || (options.backup ?? 'latest') === 'latest';
  const history = needsHistory ? await listBackups(storage, options.filter) : undefined;
  // A backup stamped in the future or misdated is never fresh and never latest: judged first.
  if (history) await judgeNewest(storage, history, clock);
  const believed = history?.filter(isBelieved);
  for (const e of history ?? []) if (!isBelieved(e)) logger.warn(`not counted: ${storage.uri(e.manifestKey)} is ${(e.time as TimeProblem).problem}`);
  if (believed) checkFreshness(databaseEntries(believed, options.filter), clock.now, maxAgeMs, everyMs, options, result, history!.length - believed.length);
  if (level === 'none' && (options.backup ?? 'latest') === 'latest' && believed && new Set(databaseEntries(believed, options.filter).map((e) => `${e.service}/${e.environment}/${e.database}`)).size > 1) {
    await verifyNewestOfEachGroup(storage, believed, result, logger);
    return finish();
  }

  let backup: ResolvedBackup;
  try {
    backup = await resolveBackup(storage, options.backup, options.filter, history, { clock });
  } catch (err) {
    if (err instanceof CheckFailedError || (err instanceof UsageError && !(err instanceof AmbiguousLatestError) && history && (maxAgeMs !== undefined || everyMs !== undefined))) {
      result.problems.push(err.message);
      return finish();
    }
    throw err;
  }
  const { manifest } = backup;
  // A run's globals (pg_dumpall's plain SQL) are read to the end and checked for its trailer; they
  // are replayed by restore --server and drill --server, which create the roles, not here.
  const globals = isGlobalsManifest(manifest);
  const replaySchema = level === 'schema' && !globals;
  if (level === 'schema' && globals) result.level = 'archive';
  if (level === 'schema' && globals) logger.info(`${backup.objectKey} holds a run's globals (roles, tablespaces): checked to the end (level archive); drill --server replays them`);
  result.manifest = manifest;
  result.backupUri = storage.uri(backup.objectKey);
  result.manifestUri = storage.uri(backup.manifestKey);
  if (level === 'none') {
    await checkSuspicion(storage, backup, believed, result, logger);
    result.problems.push(...(await confirmStored(storage, backup)));
    return finish();
  }

  const identities = level === 'checksum' && !options.ageIdentities?.length && !loadIdentities() ? undefined : identitiesFor(manifest.encryption, options.ageIdentities, result.backupUri);
  if (manifest.encryption && !identities) logger.warn(`${result.backupUri} is encrypted with age and no identity was given: only the stored bytes are checked, not the decryption`);
  // The comparison with the previous backup (one more manifest to read) runs beside the read of
  // this one; the pg_restore for the archive's format and zstd were looked up during the listing.
  const suspicion = checkSuspicion(storage, backup, believed, result, logger);
  suspicion.catch(() => undefined); // awaited below; a failure before that must not go unhandled
  const [bins] = await Promise.all([level === 'checksum' ? undefined : restoreBinaries(manifest), manifest.compression.algorithm === 'zstd' ? requireZstd() : undefined]);
  // Plain SQL replays (level schema) through psql in restricted mode only: an older psql is refused before anything starts.
  if (replaySchema && manifest.format === 'plain' && bins?.psql) requireRestrictedPsql(bins.psql, 'replay a plain SQL backup (verify --level schema)');
  logger.info(`verifying ${result.backupUri} (${formatBytes(manifest.object.sizeBytes)}, ${manifest.compression.algorithm}, pg_dump ${manifest.pgDump.version}) at level ${result.level}`);
  let cluster: ThrowawayCluster | undefined;
  let scratch: string | undefined;
  const progress = startRestoreProgress('verify', storage, manifest, logger);
  const counted = meteredStorage(storage, (n) => progress.addBytes(n));
  try {
    let schemaTarget: DatabaseConnection | undefined;
    if (replaySchema) {
      cluster = await startThrowawayCluster({ minMajor: manifest.server.major, workDir: options.workDir, logger, signal: options.signal, allowSameOsUser: options.allowSameOsUser, sameOsUserReason: options.sameOsUserReason });
      schemaTarget = await createThrowawayDatabase(cluster, manifest.database, manifest.format === 'plain' ? manifest.roles : undefined);
    }
    const schemaSink = (b: RestoreBinaries, target: DatabaseConnection): ArchiveSink => {
      // custom: the schema alone; plain SQL cannot be split, so it replays whole.
      const sink = restoreSink(manifest.format, b, target, manifest.format === 'plain' ? [] : ['--schema-only', '--no-owner', '--no-acl'], options.signal, options.workDir);
      const done = sink.done.catch((err: unknown) => Promise.reject(new Error(`schema replay failed: ${messageOf(err)}`)));
      done.catch(() => undefined);
      return { stream: sink.stream, done };
    };
    if (manifest.format === 'directory' && bins) {
      // A directory archive is read from local disk: download it, then pg_restore the folder.
      scratch = await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-verify-'));
      progress.phase('read', { bytes: 0, totalBytes: manifest.object.sizeBytes });
      const local = await downloadArchive(counted, backup, scratch, options.signal, identities);
      result.sizeBytes = local.sizeBytes;
      result.sha256 = manifest.object.sha256;
      result.problems.push(...local.problems);
      if (local.problems.length === 0) {
        const read = await runPgProgram(bins.pgRestore, ['--file=/dev/null', local.path], { signal: options.signal, stdout: 'ignore' }).done.then(() => undefined, (err: unknown) => messageOf(err));
        if (read) result.problems.push(`archive unreadable: ${read}`);
        if (schemaTarget) {
          const replay = await restoreLocalArchive('directory', bins, local.path, schemaTarget, { args: ['--schema-only', '--no-owner', '--no-acl'], signal: options.signal }).then(() => undefined, (err: unknown) => messageOf(err));
          if (replay) result.problems.push(`schema replay failed: ${replay}`);
        }
      }
    } else {
      // The sinks' programs start only once the download started (streamBackup opens them).
      const openSinks = (): ArchiveSink => {
        const sinks: ArchiveSink[] = [];
        if (bins) sinks.push(globals ? readGlobalsSink() : readArchiveSink(manifest.format, bins.pgRestore, options.signal));
        if (bins && schemaTarget) sinks.push(schemaSink(bins, schemaTarget));
        return sinks.length ? teeSinks(sinks) : { stream: new Writable({ write: (_c, _e, cb) => cb() }), done: Promise.resolve() };
      };
      // One reader of a zstd custom archive (level archive) or none (checksum): zstd writes
      // straight into pg_restore's stdin (or /dev/null), not through this process.
      const sink: (() => ArchiveSink) | DirectSink = !bins ? { kind: 'discard' } : !schemaTarget && manifest.format === 'custom' ? { kind: 'program', start: (input) => runPgProgram(bins.pgRestore, ['--file=/dev/null'], { stdin: input, stdout: 'ignore', signal: options.signal }), fallback: openSinks } : openSinks;
      let totalBytes = 0;
      progress.phase('read', { bytes: 0, totalBytes: manifest.object.sizeBytes });
      for (const part of storedParts(backup)) {
        const outcome = await streamBackup(counted, part, sink, options.signal, identities);
        totalBytes += outcome.sizeBytes;
        result.sha256 = outcome.sha256;
        result.problems.push(...readbackProblems(outcome, part).map((p) => p.replace(/archive unreadable: (schema replay failed)/, '$1')));
      }
      result.sizeBytes = totalBytes;
    }
    await suspicion;
    if (result.problems.length === 0) {
      logger.info(`size ${result.sizeBytes} bytes and sha256 match the manifest${bins ? `; ${manifest.format === 'plain' ? 'the SQL is complete' : 'pg_restore read the whole archive'}` : ''}${cluster ? `; the schema replays into PostgreSQL ${cluster.version}` : ''}`);
    }
  } finally {
    progress.stop();
    await suspicion.catch(() => undefined); // nothing left running when verify returns
    // Removed on every path (a failure, a signal), each step on its own.
    await cluster?.stop().catch((err: unknown) => logger.warn(`removing the throwaway cluster failed: ${messageOf(err)}`));
    if (scratch) await rm(scratch, { recursive: true, force: true }).catch((err: unknown) => logger.warn(`removing ${scratch} failed: ${messageOf(err)}`));
  }
  options.signal?.throwIfAborted();
  return finish();
}

/**
 * `--level none` over a location that holds several databases: the newest backup of each
 * service/environment/database is read (manifest), confirmed stored with its size
 * ({@link confirmStored}) and compared with the one before it (suspicion).
 */
async function verifyNewestOfEachGroup(storage: Storage, history: BackupEntry[], result: VerifyResult, logger: Logger): Promise<void> {
  const seen = new Set<string>();
  for (const entry of history) {
    const scope = `${entry.service}/${entry.environment}/${entry.database}`;
    if (seen.has(scope)) continue;
    seen.add(scope);
    try {
      const backup = await resolveBackup(storage, entry.manifestKey);
      result.problems.push(...(await confirmStored(storage, backup)));
      await checkSuspicion(storage, backup, history, result, logger);
    } catch (err) {
      if (!(err instanceof CheckFailedError)) throw err;
      result.problems.push(err.message);
    }
  }
  if (result.problems.length === 0) logger.info(`checked the newest backup of each of ${seen.size} databases: manifest valid, objects stored with their sizes`);
}

/**
 * `--max-age` and `--expect-every` over the listed history, per service/environment/database.
 * `history` holds the backups whose times are believed (see `judgeNewest`); `untrusted` counts
 * those left out (stamped in the future or misdated), for the message.
 */
function checkFreshness(history: BackupEntry[], now: Date, maxAgeMs: number | undefined, everyMs: number | undefined, options: VerifyOptions, result: VerifyResult, untrusted = 0): void {
  if (maxAgeMs === undefined && everyMs === undefined) return;
  const scopeOf = (e: BackupEntry) => `${e.service}/${e.environment}/${e.database}`;
  if (history.length === 0) {
    const scope = [options.filter?.service, options.filter?.environment, options.filter?.database].filter(Boolean).join('/') || 'this location';
    result.problems.push(untrusted ? `no complete backup whose time is believed for ${scope} (${untrusted} stamped in the future or misdated, not counted): backups are overdue` : `no complete backup at all for ${scope}: backups are overdue`);
    return;
  }
  result.newestAgeMs = now.getTime() - history[0]!.startedAt.getTime();
  const groups = new Map<string, BackupEntry[]>();
  for (const e of history) groups.set(scopeOf(e), [...(groups.get(scopeOf(e)) ?? []), e]);
  for (const [scope, entries] of groups) {
    const newest = entries[0]!;
    const age = now.getTime() - newest.startedAt.getTime();
    if (maxAgeMs !== undefined && age > maxAgeMs) {
      result.problems.push(`the newest backup of ${scope} is ${formatSeconds(age)} old (taken ${newest.startedAt.toISOString()}), over --max-age ${options.maxAge}: backups are overdue`);
    }
    if (everyMs !== undefined) {
      const times = [...entries.map((e) => e.startedAt.getTime()).reverse(), now.getTime()];
      for (let i = 1; i < times.length; i++) {
        const span = times[i]! - times[i - 1]!;
        if (span > everyMs * 1.5) {
          const gap = { scope, from: new Date(times[i - 1]!).toISOString(), to: new Date(times[i]!).toISOString(), durationMs: span };
          result.gaps.push(gap);
          result.problems.push(`no backup of ${scope} from ${gap.from} to ${i === times.length - 1 ? 'now' : gap.to} (${formatSeconds(span)}; expected every ${options.expectEvery})`);
        }
      }
    }
  }
}

/**
 * Compares a backup with the previous one of the same database: a backup under half the
 * previous size, or a table that lost more than half of at least 100 rows (or vanished), is
 * suspicious — an emptied database dumps "fine".
 */
async function checkSuspicion(storage: Storage, backup: ResolvedBackup, history: BackupEntry[] | undefined, result: VerifyResult, logger: Logger): Promise<void> {
  const m = backup.manifest;
  const entries = history ?? (await listBackups(storage, { service: m.service, environment: m.environment, database: m.database }));
  const same = entries.filter((e) => e.service === m.service && e.environment === m.environment && e.database === m.database);
  const index = same.findIndex((e) => e.manifestKey === backup.manifestKey);
  const previousEntry = index === -1 ? undefined : same[index + 1];
  if (!previousEntry) return;
  let previous: Manifest;
  try {
    previous = parseManifest(await storage.getText(previousEntry.manifestKey), previousEntry.manifestKey);
  } catch (err) {
    logger.warn(`cannot compare with the previous backup: ${messageOf(err)}`);
    return;
  }
  if (previous.object.sizeBytes > 0 && m.object.sizeBytes < previous.object.sizeBytes * 0.5) {
    const pct = Math.round((m.object.sizeBytes / previous.object.sizeBytes) * 100);
    result.suspicions.push(`backup is ${formatBytes(m.object.sizeBytes)}, ${pct}% of the previous one (${formatBytes(previous.object.sizeBytes)}, ${previous.startedAt})`);
  }
  const now = new Map(m.tables.map((t) => [`${t.schema}.${t.table}`, t.rows]));
  for (const t of previous.tables) {
    if (t.rows < 100) continue;
    const rows = now.get(`${t.schema}.${t.table}`);
    if (rows === undefined) result.suspicions.push(`table ${t.schema}.${t.table} (${t.rows} rows in the previous backup) is gone`);
    else if (rows < t.rows * 0.5) result.suspicions.push(`table ${t.schema}.${t.table} fell from ${t.rows} to ${rows} rows since the previous backup`);
  }
}
