import { chown, mkdir, mkdtemp, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import { execa } from 'execa';
import path from 'node:path';
import { validateLabel } from '../backup/keys.ts';
import { runSmokeChecks, type SmokeCheck, type SmokeResult } from '../backup/smoke.ts';
import { drillBudgets, drillHistory, drillRecordKeys, writeDrillRecord, type DrillCommonOptions, type DrillHistoryEntry } from '../commands/drill.ts';
import { formatSeconds } from '../format.ts';
import { evidenceKeyOf, physicalSubject } from '../evidence/statement.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { recordingLogger, type Logger } from '../log.ts';
import { workDirOf } from '../postgres/cluster.ts';
import { clusterIsolation, readAsClusterUser, removeClusterDirs, type ClusterIsolation } from '../postgres/cluster-user.ts';
import { openStorage } from '../storage/index.ts';
import type { ArchiveFacts, PhysicalBackup, PhysicalDriver } from './driver.ts';
import { walSegmentName, walSegmentNumber } from './pgbackrest.ts';
import { startRestoredServer, type RestoredServer } from './restored-server.ts';
import { parseTargetTime, pgbackrestTime, type RecoveryTarget } from './target-time.ts';

/**
 * Options of {@link physicalDrill}: the common drill options (work dir, smoke SQL, budgets, S3
 * settings of `logTo`, logger, signal) plus the physical ones. `workDir` holds the drill's
 * private directory (restored data directory, socket, log); `maxRto` budgets restore + WAL
 * replay until promotion; `maxRpo` the age of the newest archived WAL segment.
 */
export interface PhysicalDrillOptions extends DrillCommonOptions {
  /** The backup tool's driver, e.g. `new PgBackRestDriver({ stanza })`. */
  driver: PhysicalDriver;
  /** `--target-time`: ISO 8601 with a zone, or `latest`/undefined for the end of the archive. */
  targetTime?: string;
  /** Where the drill log and report go (`s3://BUCKET/PREFIX` or `file:///DIR`); none: not archived. */
  logTo?: string;
  /** Labels of the drill folder `drills/<service>/<environment>/<stanza>/`. Default `default`. */
  service?: string;
  environment?: string;
  /** The database the smoke SQL runs in. Default `postgres`. */
  database?: string;
  /** Also check every file of the repository (`pgbackrest verify`). */
  verifyRepository?: boolean;
}

/** How recovery ended on the restored server. */
export interface RecoveryOutcome {
  /** The timeline the promotion created, and where it branched off (an LSN). */
  timeline: number;
  switchLsn?: string;
  /** PostgreSQL's reason in the timeline history: `before 2026-… (time)`, `no recovery target specified`. */
  stopReason?: string;
  /** Commit time of the last transaction replayed (UTC ISO 8601). */
  lastTransactionAt?: string;
  /** The last WAL segment replay read, and the newest one the archive holds. */
  lastSegment?: string;
  archiveNewestSegment?: string;
}

/** The outcome of {@link physicalDrill}; a failed drill is a result (`ok: false`), not an exception. */
export interface PhysicalDrillResult {
  ok: boolean;
  reason?: string;
  problems: string[];
  kind: 'physical';
  /** `pgbackrest`. */
  tool: string;
  toolVersion?: string;
  /** The stanza. */
  scope: string;
  service: string;
  environment: string;
  target: { type: 'latest' } | { type: 'time'; time: string; pgbackrest: string };
  /** The backup restored (the tool's label). */
  backup?: PhysicalBackup;
  startedAt: string;
  /** Restore + WAL replay until promotion, in ms. */
  rtoMs: number;
  /**
   * `handoverMs`: stopping the promoted server, giving its files to the cluster user and starting
   * it again for the checks (startRestoredServer): not part of the RTO.
   */
  phases: { restoreMs: number; replayMs: number; handoverMs: number; checksMs: number };
  /** Age of the newest archived WAL segment at drill start, in ms. */
  rpoMs?: number;
  newestWal?: { segment: string; archivedAt?: string };
  recovery?: RecoveryOutcome;
  /** `database: extension version` of every extension in the restored cluster. */
  extensions: string[];
  smoke: SmokeResult[];
  repositoryVerify?: { ok: boolean; problems: string[] };
  history: DrillHistoryEntry[];
  drillLogUri?: string;
  drillReportUri?: string;
  /** The DSSE envelope of the in-toto statement beside the report (src/evidence/). */
  drillEvidenceUri?: string;
  /** The drill's budgets (`--max-rto`, `--max-rpo`) in ms, when given. */
  budgets?: { maxRtoMs?: number; maxRpoMs?: number };
}

/**
 * A point-in-time restore drill of a physical backup: the driver restores the backup chosen for
 * the target into a private directory under the work dir (the source cluster and the repository
 * are only read), a PostgreSQL of the backup's major replays WAL from the archive until the
 * target (or the end of the archive) and is promoted; then the checks: it reached a consistent
 * state and accepts connections; recovery stopped where asked (at the target time; at the end of
 * the archive — replay that ends before the newest archived segment is a gap in the WAL, named
 * with the tool's own reason); every extension in every database is available; the smoke SQL
 * passes; optionally the tool verifies the whole repository. RTO = restore + replay until
 * promotion; RPO = age of the newest archived WAL segment (from the tool, at drill start). The
 * drill log (ending `restore drill OK` or `restore drill FAILED: …`) and a JSON report go to
 * `drills/<service>/<environment>/<stanza>/<YYYY>-Q<n>/` at `logTo`, as for a logical drill. The
 * restored server and its directory are always removed.
 * @throws UsageError for bad options, a missing tool or missing server binaries.
 */
export async function physicalDrill(options: PhysicalDrillOptions): Promise<PhysicalDrillResult> {
  const now = options.now ?? (() => new Date());
  const log = recordingLogger(options.logger);
  const driver = options.driver;
  const service = validateLabel('service', options.service ?? 'default');
  const environment = validateLabel('environment', options.environment ?? 'default');
  const target: RecoveryTarget = parseTargetTime(options.targetTime);
  const { maxRtoMs, maxRpoMs, smokeChecks } = await drillBudgets(options);
  // Not bound to the command's signal: a cancelled drill still writes its verdict (each write has its own deadline).
  const storage = options.logTo ? openStorage(options.logTo, { ...options.s3, signal: undefined }) : undefined;
  const startedAt = now();
  const result: PhysicalDrillResult = {
    ok: false,
    problems: [],
    kind: 'physical',
    tool: driver.tool,
    scope: driver.scope,
    service,
    environment,
    target: target.type === 'time' ? { type: 'time', time: target.iso, pgbackrest: pgbackrestTime(target.at) } : { type: 'latest' },
    startedAt: startedAt.toISOString(),
    rtoMs: 0,
    phases: { restoreMs: 0, replayMs: 0, handoverMs: 0, checksMs: 0 },
    extensions: [],
    smoke: [],
    history: [],
  };
  // Who runs the restored server: settled before anything starts (a refusal, exit 2, leaves nothing behind).
  const checksUser = await clusterIsolation({ allowSameOsUser: options.allowSameOsUser });
  const recoveryUser = await pgbackrestIsolation();
  const user = recoveryUser.mode === 'root' ? recoveryUser.user : undefined;
  await warnReadableCredentials(driver, checksUser, log);
  result.toolVersion = await driver.version(options.signal);
  let dir: string | undefined;
  let server: RestoredServer | undefined;
  try {
    log.info(`restore drill of ${driver.describe()} (${result.toolVersion}), target: ${target.type === 'time' ? `${target.iso} (${pgbackrestTime(target.at)})` : 'the end of the WAL archive (latest)'}`);
    const facts = await driver.inspect(options.signal);
    describeArchive(facts, startedAt, result, log);
    if (facts.backups.length === 0) throw new CheckFailedError(`${driver.describe()} has no backup to restore`);

    // Phase 1: the restore, into a private directory (0700, owned by the server's OS user).
    dir = await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-pitr-'));
    if (user) await chown(dir, user.uid, user.gid);
    const dataDir = path.join(dir, 'data');
    await mkdir(dataDir, { mode: 0o700 });
    if (user) await chown(dataDir, user.uid, user.gid);
    const restoreStart = Date.now();
    const restored = await log.group('restore', () =>
      driver.restore({ dataDir, tablespaceDir: path.join(dir!, 'tablespaces'), target, signal: options.signal, onLine: (l) => log.info(`  ${l}`) }).finally(() => {
        result.phases.restoreMs = Date.now() - restoreStart;
      }),
    );
    result.backup = facts.backups.find((b) => b.label === restored.backupLabel) ?? (restored.backupLabel ? { label: restored.backupLabel, type: '?', startedAt: '', stoppedAt: '' } : undefined);
    log.info(`restore phase: ${formatSeconds(result.phases.restoreMs)}${result.backup ? `, backup ${result.backup.label} (${result.backup.type}, stopped ${result.backup.stoppedAt})` : ''}`);

    // Phase 2: WAL replay until promotion.
    const replayStart = Date.now();
    let promotedAt: number | undefined;
    try {
      server = await log.group('replay', () =>
        startRestoredServer({
          dataDir,
          major: facts.pgMajor,
          recovery: recoveryUser,
          checks: checksUser,
          env: driver.serverEnv(),
          onPromoted: () => {
            promotedAt = Date.now();
          },
          onHandedOver: (description) => log.info(`promoted server restarted for the checks: ${description}; repository credentials not in its environment`),
          signal: options.signal,
          timeoutMs: maxRtoMs !== undefined ? Math.max(maxRtoMs * 2, 60_000) : 24 * 3_600_000,
          onStarted: (port) => log.info(`PostgreSQL ${facts.pgMajor} replaying WAL (private socket, port ${port}, no TCP)`),
        }),
      );
    } catch (err) {
      if (!(err instanceof CheckFailedError)) throw err;
      // A gap before the target: name the first segment the archive cannot give, in the tool's words.
      const serverLog = await readFile(path.join(dir, 'server.log'), 'utf8').catch(() => '');
      for (const line of serverLog.trim().split('\n').slice(-15)) if (line) log.info(`  server: ${line}`);
      const explained = await explainStop(driver, serverLog, dataDir, options.signal);
      throw new CheckFailedError(`${err.message}${explained ? `; ${explained}` : ''}`);
    } finally {
      result.phases.replayMs = (promotedAt ?? Date.now()) - replayStart;
      if (promotedAt) result.phases.handoverMs = Date.now() - promotedAt;
    }
    log.info(`replay phase: ${formatSeconds(result.phases.replayMs)}, promoted; restarted for the checks in ${formatSeconds(result.phases.handoverMs)}`);

    // Phase 3: checks.
    const checksStart = Date.now();
    await log.group('checks', () => runChecks(server!, driver, facts, target, dataDir, smokeChecks, options, result, log, checksUser));
    if (options.verifyRepository) {
      const verification = await log.group('verify repository', () => driver.verifyRepository(options.signal));
      result.repositoryVerify = verification;
      result.problems.push(...verification.problems);
      log.info(`repository verify: ${verification.ok ? 'every file valid' : `${verification.problems.length} problem(s)`}`);
    }
    result.phases.checksMs = Date.now() - checksStart;
    log.info(`checks phase: ${formatSeconds(result.phases.checksMs)}`);
  } catch (err) {
    if (!(err instanceof CheckFailedError)) throw err;
    result.problems.push(err.message);
  } finally {
    if (server) {
      await server.stop();
      log.info('restored server stopped');
    }
    if (dir) await removeClusterDirs(checksUser, [dir]);
  }

  result.rtoMs = result.phases.restoreMs + result.phases.replayMs;
  if (maxRtoMs !== undefined || maxRpoMs !== undefined) result.budgets = { maxRtoMs, maxRpoMs };
  if (maxRtoMs !== undefined && result.rtoMs > maxRtoMs) result.problems.push(`RTO ${formatSeconds(result.rtoMs)} exceeds the budget --max-rto ${options.maxRto}`);
  if (maxRpoMs !== undefined && result.rpoMs !== undefined && result.rpoMs > maxRpoMs) {
    result.problems.push(`RPO ${formatSeconds(result.rpoMs)} (age of the newest archived WAL) exceeds the budget --max-rpo ${options.maxRpo}`);
  }
  if (maxRpoMs !== undefined && result.rpoMs === undefined) log.warn('RPO unknown: the tool did not tell when the newest WAL segment was archived');
  result.ok = result.problems.length === 0;
  if (result.problems[0]) result.reason = result.problems[0];
  // Each problem once: the first is the reason the CLI prints last (`drill failed: …`), as in drill().
  for (const p of result.problems.slice(1)) log.warn(p);
  log.info(`RTO ${formatSeconds(result.rtoMs)} (restore ${formatSeconds(result.phases.restoreMs)}, WAL replay until promotion ${formatSeconds(result.phases.replayMs)}); checks ${formatSeconds(result.phases.checksMs)}`);
  if (result.ok) log.info('restore drill OK');
  else log.debug(`restore drill FAILED: ${result.reason}`); // the drill log's last line; on the terminal with --verbose

  const labels = { service, environment, database: driver.scope };
  if (!storage) {
    log.warn('drill log not archived: give --log-to s3://BUCKET/PREFIX (or file:///DIR) to keep it and the RTO history');
    return result;
  }
  try {
    const keys = drillRecordKeys(labels, result.backup?.label ?? 'unknown', startedAt);
    result.drillLogUri = storage.uri(keys.log);
    result.drillReportUri = storage.uri(keys.report);
    const subject = physicalSubject(driver.tool, driver.scope, result.backup);
    await writeDrillRecord(storage, keys, { ...result, backupId: result.backup?.label }, log.lines, { subject: result.backup ? subject : undefined, signingKey: options.signingKey });
    if (result.backup) result.drillEvidenceUri = storage.uri(evidenceKeyOf(keys.report));
  } catch (err) {
    result.drillLogUri = undefined;
    result.drillReportUri = undefined;
    options.logger.warn(`drill log not archived: ${messageOf(err)}`);
    return result;
  }
  result.history = await drillHistory(storage, labels, 10).catch((err: unknown) => {
    options.logger.warn(`cannot read the previous drills: ${messageOf(err)}`);
    return [];
  });
  return result;
}

/**
 * Who runs the restored server during recovery, whose restore_command (`pgbackrest
 * archive-get`) must read the repository and pgBackRest's configuration: as root, OS user
 * `PG_BACKUP_PGBACKREST_USER` (default `postgres`, the user pgBackRest runs as in the
 * PostgreSQL packages); otherwise this process's own user. No restored SQL runs in that phase
 * (see startRestoredServer).
 * @throws UsageError when root and that user does not exist.
 */
export async function pgbackrestIsolation(): Promise<ClusterIsolation> {
  const info = os.userInfo();
  const self = { name: info.username, uid: info.uid, gid: info.gid };
  if (self.uid !== 0) return { mode: 'same-user', user: self, self, isolateNetwork: false, description: `recovery runs as OS user ${self.name}` };
  const name = process.env.PG_BACKUP_PGBACKREST_USER || 'postgres';
  const r = await execa('id', [name], { reject: false, env: { LC_ALL: 'C' } });
  const uid = /uid=(\d+)/.exec(String(r.stdout))?.[1];
  const gid = /gid=(\d+)/.exec(String(r.stdout))?.[1];
  if (r.exitCode !== 0 || !uid || !gid) throw new UsageError(`the restored server's recovery runs as the OS user that reads the pgBackRest repository, ${JSON.stringify(name)}, which does not exist: set PG_BACKUP_PGBACKREST_USER to the user pgBackRest runs as`);
  return { mode: 'root', user: { name, uid: Number(uid), gid: Number(gid) }, self, isolateNetwork: false, description: `recovery runs as OS user ${name} (uid ${uid})` };
}

/**
 * Warns about each of the tool's configuration files that every OS user can read: the restored
 * server's checks run as the cluster user, and code restored from the backup could read the
 * repository's credentials there.
 */
async function warnReadableCredentials(driver: PhysicalDriver, checksUser: ClusterIsolation, log: Logger): Promise<void> {
  if (checksUser.mode === 'same-user') return; // that user reads the file whatever its mode
  for (const file of driver.credentialFiles?.() ?? []) {
    const s = await stat(file).catch(() => undefined);
    if (!s || !(s.mode & 0o004)) continue;
    log.warn(`${file} is readable by every OS user (mode ${(s.mode & 0o777).toString(8).padStart(4, '0')}): the restored server's checks run as ${checksUser.user.name}, and code restored from the backup could read the repository's credentials in it; make it readable by its owner and group only (chmod 640)`);
  }
}

/** Logs the archive's facts and sets the RPO (age of the newest archived segment). */
function describeArchive(facts: ArchiveFacts, startedAt: Date, result: PhysicalDrillResult, log: Logger): void {
  const oldest = facts.backups[0];
  const newest = facts.backups.at(-1);
  log.info(`PostgreSQL ${facts.pgMajor}; ${facts.backups.length} backup(s)${oldest ? `, oldest ${oldest.label} (stopped ${oldest.stoppedAt}), newest ${newest!.label} (stopped ${newest!.stoppedAt})` : ''}`);
  if (facts.newestWal) {
    result.newestWal = { segment: facts.newestWal, archivedAt: facts.newestWalArchivedAt?.toISOString() };
    if (facts.newestWalArchivedAt) result.rpoMs = Math.max(0, startedAt.getTime() - facts.newestWalArchivedAt.getTime());
    log.info(`WAL archive: ${facts.oldestWal ?? '?'} … ${facts.newestWal}${facts.newestWalArchivedAt ? `, newest archived ${facts.newestWalArchivedAt.toISOString()} (RPO ${formatSeconds(result.rpoMs!)})` : ''}`);
  } else {
    log.info('WAL archive: empty');
  }
}

/**
 * When the server stopped before the target (`recovery ended before configured recovery target
 * was reached`), the tool's reason for the segment after the last one restored.
 */
async function explainStop(driver: PhysicalDriver, serverLog: string, dataDir: string, signal?: AbortSignal): Promise<string | undefined> {
  if (!/recovery ended before configured recovery target was reached/.test(serverLog)) return undefined;
  const restored = [...serverLog.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]!).at(-1);
  if (!restored) return undefined;
  const next = walSegmentName(Number.parseInt(restored.slice(0, 8), 16), walSegmentNumber(restored) + 1n);
  const why = await driver.explainMissingWal(next, dataDir, signal).catch(() => undefined);
  return why ? `${driver.tool}: ${why}` : undefined;
}

/** The checks on the promoted server; every failure goes to `result.problems`. */
async function runChecks(
  server: RestoredServer,
  driver: PhysicalDriver,
  facts: ArchiveFacts,
  target: RecoveryTarget,
  dataDir: string,
  smoke: SmokeCheck[],
  options: PhysicalDrillOptions,
  result: PhysicalDrillResult,
  log: Logger,
  checksUser: ClusterIsolation,
): Promise<void> {
  const serverLog = await server.log();
  if (!/consistent recovery state reached/.test(serverLog)) result.problems.push('the restored server never logged "consistent recovery state reached"');
  else log.info('consistent recovery state reached; promoted; accepts connections');

  const client = await server.connect();
  let databases: string[] = [];
  try {
    const { rows } = await client.query<{ tli: number; last: Date | null; seg: string }>(
      `SELECT timeline_id AS tli, pg_last_xact_replay_timestamp() AS last, current_setting('wal_segment_size') AS seg FROM pg_control_checkpoint()`,
    );
    const { tli, last, seg } = rows[0]!;
    const segmentBytes = parseSize(seg);
    // The server was restarted after its promotion (startRestoredServer), so replay's last commit time comes from the recovery log.
    const lastReplayed = last ?? lastTransactionInLog(serverLog);
    const recovery: RecoveryOutcome = { timeline: tli, lastTransactionAt: lastReplayed?.toISOString() };
    result.recovery = recovery;
    const history = (await readAsClusterUser(checksUser, path.join(dataDir, 'pg_wal', `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`))) ?? '';
    const branch = history.trim().split('\n').filter((l) => /^\d+\t/.test(l)).at(-1)?.split('\t');
    if (branch) {
      recovery.switchLsn = branch[1];
      recovery.stopReason = branch[2]?.trim();
      recovery.lastSegment = walSegmentName(Number(branch[0]), lsnToSegment(branch[1]!, segmentBytes), segmentBytes);
    }
    recovery.archiveNewestSegment = facts.newestWal;
    log.info(`recovery ended at ${recovery.switchLsn ?? '?'} (${recovery.stopReason ?? "no timeline history"}), new timeline ${recovery.timeline}; last transaction replayed at ${recovery.lastTransactionAt ?? 'none'}`);

    if (target.type === 'time') {
      // Stopped at the target: PostgreSQL records "before/after <commit time>" in the history file.
      if (!recovery.stopReason || !/^(before|after) /.test(recovery.stopReason)) {
        result.problems.push(`recovery did not stop at the target time ${target.iso}: ${recovery.stopReason ?? 'no timeline history'}`);
      } else if (lastReplayed && lastReplayed.getTime() > target.at.getTime()) {
        result.problems.push(`recovery replayed a transaction committed at ${lastReplayed.toISOString()}, after the target time ${target.iso}`);
      } else {
        log.info(`recovery stopped at the target: ${recovery.stopReason}`);
      }
    } else if (recovery.lastSegment && facts.newestWal) {
      // The end of the archive: replay that stopped before the newest archived segment met a gap.
      const stoppedAt = walSegmentNumber(recovery.lastSegment, segmentBytes);
      const newest = walSegmentNumber(facts.newestWal, segmentBytes);
      if (newest > stoppedAt) {
        const why = await driver.explainMissingWal(recovery.lastSegment, dataDir, options.signal).catch((err: unknown) => messageOf(err));
        result.problems.push(
          `WAL gap: recovery ended at ${recovery.switchLsn} in segment ${recovery.lastSegment}, but the archive holds WAL up to ${facts.newestWal}${why ? `; ${driver.tool}: ${why}` : ''}`,
        );
      } else {
        log.info(`recovery reached the end of the archive (${facts.newestWal})`);
      }
    }

    const dbs = await client.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname`);
    databases = dbs.rows.map((r) => r.datname);
  } finally {
    await client.end().catch(() => undefined);
  }

  // Extensions: every one installed in a restored database must be available on this server.
  for (const db of databases) {
    const c = await server.connect(db);
    try {
      const { rows } = await c.query<{ name: string; version: string; available: boolean }>(
        `SELECT e.extname AS name, e.extversion AS version,
                EXISTS (SELECT 1 FROM pg_available_extension_versions v WHERE v.name = e.extname AND v.version = e.extversion) AS available
           FROM pg_extension e WHERE e.extname <> 'plpgsql' ORDER BY 1`,
      );
      for (const r of rows) {
        result.extensions.push(`${db}: ${r.name} ${r.version}`);
        if (!r.available) result.problems.push(`database ${db} uses extension ${r.name} ${r.version}, which this server does not have: install it on the drill machine (e.g. postgresql-${facts.pgMajor}-${r.name})`);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  }
  log.info(`extensions: ${result.extensions.length ? result.extensions.join(', ') : 'none beyond plpgsql'}`);

  if (smoke.length) {
    const database = options.database ?? 'postgres';
    const c = await server.connect(database).catch((err: unknown) => {
      throw new CheckFailedError(`cannot connect to database ${database} of the restored cluster for the smoke SQL: ${messageOf(err)}`);
    });
    try {
      result.smoke = await runSmokeChecks(c, smoke);
    } finally {
      await c.end().catch(() => undefined);
    }
    for (const r of result.smoke) {
      log.info(`smoke line ${r.line} (${r.expectation}): ${r.ok ? 'OK' : 'FAILED'}, got ${r.actual}`);
      if (!r.ok) result.problems.push(`smoke check at line ${r.line} expected ${r.expectation}, got ${r.actual}`);
    }
  }
}

/**
 * The commit time of the last transaction replayed, from PostgreSQL's end-of-recovery line
 * (`last completed transaction was at log time 2026-12-07 16:06:19.069012+00`; the restored
 * server logs in UTC, `log_timezone` being set by throwawaySettings), or undefined.
 */
export function lastTransactionInLog(log: string): Date | undefined {
  const m = [...log.matchAll(/last completed transaction was at log time (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(?::?(\d\d))?/g)].at(-1);
  if (!m) return undefined;
  const at = new Date(`${m[1]}T${m[2]}${m[3]}:${m[4] ?? '00'}`);
  return Number.isNaN(at.getTime()) ? undefined : at;
}

/** `16MB` (SHOW wal_segment_size) in bytes. */
function parseSize(text: string): number {
  const m = /^(\d+)\s*(kB|MB|GB)?$/.exec(text.trim());
  if (!m) return 16 * 1024 * 1024;
  return Number(m[1]) * ({ kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[m[2] ?? ''] ?? 1);
}

/** The segment number holding LSN `X/Y`. */
function lsnToSegment(lsn: string, segmentBytes: number): bigint {
  const [hi, lo] = lsn.split('/');
  return ((BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`)) / BigInt(segmentBytes);
}
