import { createHash, randomBytes } from 'node:crypto';
import { refuseGlobals } from '../backup/globals.ts';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Transform, Writable, pipeline, type Readable } from 'node:stream';
import { execa } from 'execa';
import { resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import { clockCheck, parseMaxClockSkew } from '../backup/clock.ts';
import { startCodec } from '../backup/compression.ts';
import { identitiesFor, startDecrypt } from '../backup/encryption.ts';
import { storedParts, type StoredPart } from '../backup/parts.ts';
import { downloadArchive, streamBackup, type ArchiveSink } from '../backup/readback.ts';
import { restoreBinaries, type RestoreBinaries } from '../postgres/archive.ts';
import { plainSqlGate, requireRestrictedPsql, type PlainSqlGate } from '../postgres/plain-sql.ts';
import { parseDuration } from '../duration.ts';
import type { PgBinary } from '../postgres/binaries.ts';
import { workDirOf } from '../postgres/cluster.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { libpqEnv, resolveConnection, type DatabaseConnection } from '../postgres/connection.ts';
import type { DumpFormat } from '../postgres/dump-options.ts';
import { connect, serverFacts } from '../postgres/server.ts';
import { writeWithBackpressure } from '../postgres/processes.ts';
import { findProfile, resolveRestoreProfile } from '../postgres/profiles.ts';
import { platformOwnerHint, refusedEntries, refusedMessage, writeSkipList } from '../postgres/managed-target.ts';
import { classifyRestoreFailure, describeBlockers, parseToc, preflightRestore, targetContents, watchLockWaits, type FaultParty, type LockWatch, type RestoreFault, type TocEntry } from '../postgres/target.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { takeSafetyDump } from './safety-dump.ts';
import { checkPrivileges } from './server-restore-steps.ts';
import type { Privileges } from '../postgres/privileges.ts';
import { RestoreChecksFailedError, requireChecks, runRestoreChecks, type RestoreCheckOptions, type RestoreChecks } from './restore-checks.ts';
import { existingRelations, parseTableName, parseTocWithDependencies, selectTables, targetHas, tocList, type OutsideForeignKey, type TableName, type TocSelection } from '../postgres/toc.ts';
import { ArchiveRowCounter, archiveRowProblems, countDirectoryRows, type ArchiveRowCounts } from '../postgres/archive-rows.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import { meteredStorage, type StepProgress } from '../backup/progress-eta.ts';
import type { StderrLineFilter } from '../postgres/processes.ts';
import { restorePhase, startRestoreProgress } from './step-progress.ts';

/** Options of {@link restore}. */
export interface RestoreOptions {
  from: string;
  /** `latest`, a manifest or dump key, or its full URI. Required: a restore names what it restores. */
  backup: string;
  filter?: BackupFilter;
  /** The database to restore into; it must exist, and be empty unless `clean` is set. */
  targetUrl: string;
  /** The target as a parsed connection (with its password), in place of parsing `targetUrl` (restore --swap's new database). */
  targetConnection?: DatabaseConnection;
  /**
   * Consent to restore into a database that is not empty: the backup's objects that exist there
   * are dropped and re-created (`pg_restore --clean --if-exists`), in the same transaction as
   * the rest of the restore. Objects of the target that the backup does not hold stay.
   */
  clean?: boolean;
  /** Do not restore ownership / privileges (`--no-owner`, `--no-acl`): for a server without the source's roles. */
  noOwner?: boolean;
  noAcl?: boolean;
  /**
   * The target's managed platform (`supabase`, `neon`, `rds`, `cloudsql`, `azure`;
   * src/postgres/profiles.ts): the defaults of `noOwner` / `noAcl` when they are not given, and
   * the platform's names in the pre-flight's advice.
   */
  profile?: string;
  /**
   * Leave out the archive's entries the target refuses (event triggers, extensions it cannot
   * create, comments on extensions it does not own…: src/postgres/managed-target.ts) and restore
   * the rest, still in one transaction (`pg_restore -L`). Without it such entries refuse the
   * restore, named, before anything is written.
   */
  skipRefused?: boolean;
  /**
   * With `clean` and a target that is not empty: first dump the target into the location's
   * safety folder (`safety-dumps/<service>/<environment>/<target database>/…`, the service and
   * environment of the backup; see src/backup/safety.ts), and refuse the restore when that dump
   * fails. Default true.
   */
  safetyDump?: boolean;
  /**
   * How long the restore waits for any one lock on the target (a table it replaces that an open
   * transaction uses), as a duration (`60s`, `2m`; {@link parseDuration}). Default 60 s. After 5 s
   * of waiting one line names the blocking sessions; when it runs out the restore fails and
   * rolls back. Bad values are a UsageError.
   */
  lockWaitTimeout?: string;
  /**
   * HOOK for the manifest's `privileges` record (owners and grants; restore --server's
   * src/postgres/privileges.ts): passed to the checks after the restore (restore-checks.ts
   * `RestoreCheckOptions.privileges`); called only when the manifest has that record.
   */
  privilegesCheck?: RestoreCheckOptions['privileges'];
  /** What the error of failed checks says about the state left (default: committed, and the way back); restore --swap says the new database is dropped. */
  checksFailed?: string;
  /**
   * Directory format: where the archive is downloaded first (it needs `archiveSizeBytes`); plain
   * SQL larger than 256 KiB: where it is spooled (private directory) until it matched its
   * manifest. Default `PG_BACKUP_WORK_DIR` or the temp dir.
   */
  workDir?: string;
  s3?: S3Settings;
  /** age identities for a client-side encrypted backup; default `PG_BACKUP_AGE_IDENTITY(_FILE)`. */
  ageIdentities?: string[];
  /** With `latest`: a backup stamped later than now + this (`10m`, the default) is passed over (src/backup/clock.ts). */
  maxClockSkew?: string;
  /**
   * `--table SCHEMA.TABLE` (repeatable): restore only these tables with what belongs to them
   * (src/postgres/toc.ts `selectTables`), into a database that may hold other objects. Custom
   * and directory backups only.
   */
  tables?: string[];
  /** `--schema NAME` (repeatable): every table of these schemas, as `tables` does. */
  schemas?: string[];
  logger: Logger;
  signal?: AbortSignal;
}

/** What {@link restore} did. */
export interface RestoreResult {
  backupUri: string;
  target: string;
  durationMs: number;
  sizeBytes: number;
  /** The target held user objects, replaced under `--clean`. */
  replaced: boolean;
  /** The dump of the target taken before it was replaced. */
  safetyDump?: { backupUri: string; manifestUri: string; restoreCommand: string };
  /** The checks after the restore: row counts against the manifest, sequences (restore-checks.ts). */
  checks: RestoreChecks;
  /** With `tables`/`schemas`: what was selected from the TOC. */
  selection?: {
    tables: TableName[];
    /** TOC entries restored (with the session entries). */
    entries: number;
    /** Foreign keys not restored: they reference a table outside the selection. */
    outsideForeignKeys: OutsideForeignKey[];
    /** Objects outside the selection restored because the target lacked them. */
    prerequisites: string[];
  };
  /** With `skipRefused`: the entries left out, e.g. `event trigger audit_ddl`. */
  skipped?: string[];
}

const PARTY: Record<FaultParty, string> = { target: 'the target database', archive: 'the backup archive', storage: 'the storage' };

/**
 * A restore that was refused before anything was written, or that failed and was rolled back:
 * the target is as it was. Names whose fault it was ({@link FaultParty}). Exit code 1.
 */
export class RestoreFailedError extends CheckFailedError {
  readonly party: FaultParty;
  constructor(party: FaultParty, target: string, reason: string, phase: 'refused' | 'rolled back') {
    super(
      phase === 'refused'
        ? `restore refused, nothing was changed in ${target} (cause: ${PARTY[party]}): ${reason}`
        : `restore failed and was rolled back, ${target} is as it was (cause: ${PARTY[party]}): ${reason}`,
    );
    this.party = party;
  }
}

/**
 * Restores a backup into an existing database, all or nothing.
 *
 * 1. **Checks before touching anything**: the target's server major; that the target is empty
 *    ({@link targetContents}) unless `clean` is given (else a {@link UsageError}, exit 2); the
 *    archive's TOC (custom: read from the head of the object, a partial download; directory:
 *    after the download) and {@link preflightRestore}: owners, rights, extensions, and with
 *    `clean` the objects outside the backup that depend on ones it replaces, and the lock table;
 *    the entries a target refuses to a role that is not a superuser (event triggers,
 *    extensions, comments on extensions…: `refusedEntries`), named, or left out with
 *    `skipRefused`. `profile` sets the `noOwner` / `noAcl` defaults for the target's platform.
 * 2. With `clean` into a non-empty target: a safety dump of the target (see `safetyDump`).
 * 3. **One transaction**: custom streams download → decrypt → decompress → `pg_restore
 *    --single-transaction --exit-on-error` (no local disk), the last 256 KiB of the archive held
 *    back until the downloaded object's size and SHA-256 equal the manifest's, so a damaged or
 *    truncated backup is never committed (pg_restore is stopped, the server rolls back); plain →
 *    nothing reaches psql before the whole object matched its manifest and the SQL ends with
 *    pg_dump's trailer (held in memory, or spooled to a private file under `workDir`), then
 *    `psql -v ON_ERROR_STOP=1 --single-transaction` in restricted mode (`\restrict` with a random
 *    key: no psql meta-command in the SQL runs; plain-sql.ts); directory: downloaded and
 *    checked first, then `pg_restore --single-transaction` with one job (a transaction cannot
 *    span `--jobs`). Each lock is awaited for at most `lockWaitTimeout` (the blocking sessions
 *    are named after 5 s; target.ts `watchLockWaits`).
 *
 * 4. **The checks** (restore-checks.ts): the rows of each restored table are counted in the
 *    archive before the commit (custom: as it streams, checked with the held-back tail; directory:
 *    its files before pg_restore starts; src/postgres/archive-rows.ts) — a count that differs from
 *    the manifest stops pg_restore and the server rolls back — and in the target after the
 *    commit, with the sequences (plain SQL: after the commit only).
 *
 * With `tables`/`schemas` (custom and directory only), the TOC is read with its dependencies
 * and only the selected tables with what belongs to them are restored (`pg_restore --use-list`;
 * src/postgres/toc.ts `selectTables`): the target may hold other objects, but not the selected
 * relations unless `clean`; a foreign key to a table outside the selection is left out and
 * named (a warning and `selection.outsideForeignKeys`).
 *
 * Whatever fails, the target is left as it was, and the error names the cause: the target
 * (rights, dependencies, existing objects, lock table, disk), the archive, or the storage.
 * @throws RestoreChecksFailedError (a CheckFailedError, exit 1) when the row counts differ from the manifest:
 *   before the commit (rolled back), or after it (committed; the message says how to go back).
 * @throws UsageError for bad options, a target that is not empty without `clean`, an older target server.
 * @throws RestoreFailedError (a CheckFailedError) when a check refuses the restore or the restore failed and was rolled back.
 */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const { logger } = options;
  // A managed target's profile chooses --no-owner / --no-acl when they were not given.
  const profile = findProfile(options.profile);
  const resolved = resolveRestoreProfile(profile, { noOwner: options.noOwner, noAcl: options.noAcl });
  if (resolved.note) logger.info(resolved.note);
  options = { ...options, noOwner: resolved.noOwner, noAcl: resolved.noAcl };
  if (!options.backup?.trim()) throw new UsageError('restore needs --backup KEY (from "pg-backup list") or --backup latest');
  const lockWaitMs = parseDuration(options.lockWaitTimeout ?? '60s', '--lock-wait-timeout');
  if (lockWaitMs < 1000) throw new UsageError(`--lock-wait-timeout ${JSON.stringify(options.lockWaitTimeout)} is too short: give at least 1s (e.g. 30s, 2m)`);
  const storage = openStorage(options.from, options.s3);
  const target = options.targetConnection ?? resolveConnection(options.targetUrl);
  const backup = await resolveBackup(storage, options.backup, options.filter, undefined, { clock: clockCheck(new Date(), parseMaxClockSkew(options.maxClockSkew)), warn: (line) => logger.warn(line) });
  const { manifest } = backup;
  refuseGlobals(manifest, 'restore'); // a run's globals alone: restore --server restores the whole run
  const backupUri = storage.uri(backup.objectKey);
  const clean = options.clean === true;
  const wanted = { tables: (options.tables ?? []).map(parseTableName), schemas: (options.schemas ?? []).map((s) => s.trim()) };
  if (wanted.schemas.some((s) => !s)) throw new UsageError('--schema needs a schema name (e.g. --schema sales)');
  const selecting = wanted.tables.length > 0 || wanted.schemas.length > 0;
  if (selecting && manifest.format === 'plain') {
    throw new UsageError(`--table/--schema need a custom or directory backup: ${manifest.id} is plain SQL, which has no TOC to pick tables from; restore it whole into an empty database (CREATE DATABASE …) and copy the table from there, or use "pg-backup diff" for rows`);
  }
  const noOwner = options.noOwner === true || manifest.options?.noOwner === true;

  const client = await connect(target, 'pg-backup restore');
  let contents: Awaited<ReturnType<typeof targetContents>>;
  try {
    const facts = await serverFacts(client);
    if (facts.major < manifest.server.major) {
      throw new UsageError(`target ${target.display} runs PostgreSQL ${facts.version}, older than the backup's source (${manifest.server.version}): restore into major ${manifest.server.major} or newer`);
    }
    contents = await targetContents(client);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  if (contents && !clean && !selecting) {
    await client.end().catch(() => undefined);
    throw new UsageError(`target ${target.display} is not empty: it holds ${contents.description}; restore into an empty database (CREATE DATABASE …), or pass --clean to replace the backup's objects there (the target is dumped first)`);
  }
  if (contents && manifest.format === 'plain' && !manifest.options?.clean) {
    await client.end().catch(() => undefined);
    throw new UsageError(`target ${target.display} is not empty (${contents.description}) and this plain SQL backup was dumped without --clean, so it cannot replace objects: restore it into an empty database`);
  }

  let scratch: string | undefined;
  let progress: StepProgress | undefined;
  try {
    const identities = identitiesFor(manifest.encryption, options.ageIdentities, backupUri);
    const bins = await restoreBinaries(manifest);
    // Plain SQL is replayed by psql in restricted mode only: an older psql is refused before anything is written.
    if (manifest.format === 'plain' && bins.psql) requireRestrictedPsql(bins.psql, 'restore a plain SQL backup');
    const args = ['--single-transaction', '--exit-on-error'];
    if (clean) args.push('--clean', '--if-exists');
    if (options.noOwner) args.push('--no-owner');
    if (options.noAcl) args.push('--no-acl');
    if (manifest.format === 'plain' && (options.noOwner || options.noAcl)) {
      logger.warn('--no-owner and --no-acl are chosen at dump time for plain SQL dumps; they are ignored here');
    }

    // 1. The archive's TOC, and the checks against the target.
    let toc: TocEntry[] | undefined;
    let tocText: string | undefined;
    let localArchive: string | undefined;
    let sizeBytes = 0;
    if (manifest.format === 'custom') {
      const [part] = storedParts(backup);
      tocText = await readStreamedToc(storage, part!, bins.pgRestore, identities, target.display, options.signal);
      toc = parseToc(tocText);
    } else if (manifest.format === 'directory') {
      scratch = await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-restore-'));
      logger.info(`downloading ${backupUri} into ${scratch} (needs ${formatBytes(manifest.archiveSizeBytes)} free)`);
      progress = startRestoreProgress('restore', storage, manifest, logger);
      progress.phase('download', { bytes: 0, totalBytes: manifest.object.sizeBytes });
      const local = await downloadArchive(meteredStorage(storage, (n) => progress!.addBytes(n)), backup, scratch, options.signal, identities);
      if (local.problems.length) {
        const party: FaultParty = local.problems.some((p) => /download failed/.test(p)) ? 'storage' : 'archive';
        throw new RestoreFailedError(party, target.display, local.problems.join('; '), 'refused');
      }
      localArchive = local.path;
      sizeBytes = local.sizeBytes;
      const listed = await execa(bins.pgRestore.path, ['--list', '--verbose', local.path], { reject: false, maxBuffer: 256 * 1024 * 1024 });
      if (listed.exitCode !== 0) throw new RestoreFailedError('archive', target.display, classifyRestoreFailure('pg_restore', listed.stderr, `exit code ${listed.exitCode}`).reason, 'refused');
      tocText = listed.stdout;
      toc = parseToc(listed.stdout);
    }
    // Entries a managed (non-superuser) target refuses: named, or left out with --skip-refused.
    const refused = toc ? await refusedEntries(client, toc, { noOwner, profile }) : [];
    // The other checks look at what is left (a refused entry is named once, by refusedMessage).
    const refusedIds = new Set(refused.map((r) => r.entry.dumpId));
    toc = toc?.filter((e) => !refusedIds.has(e.dumpId));
    if (refused.length && options.skipRefused) {
      logger.warn(`leaving out ${refused.length} entr${refused.length === 1 ? 'y' : 'ies'} the target refuses (--skip-refused): ${refused.map((r) => `${r.label} (${r.reason})`).join(', ')}`);
      // With --table/--schema the selection's own list leaves them out (below).
      if (!selecting) {
        scratch ??= await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-restore-'));
        args.push(`--use-list=${await writeSkipList(tocText ?? '', refusedIds, scratch)}`);
      }
    }
    // --table/--schema: the selected entries become the TOC restored (a `-L` list).
    let selection: TocSelection | undefined;
    if (selecting) {
      selection = await selectTables(parseTocWithDependencies(tocText ?? ''), wanted, (entries) => targetHas(client, entries));
      if (refusedIds.size) selection = { ...selection, entries: selection.entries.filter((e) => !refusedIds.has(e.dumpId)) };
      const existing = clean ? [] : await existingRelations(client, selection);
      if (existing.length) {
        await client.end().catch(() => undefined);
        throw new UsageError(`target ${target.display} already has ${existing.slice(0, 5).join(', ')}${existing.length > 5 ? ` and ${existing.length - 5} more` : ''}: pass --clean to replace ${existing.length > 1 ? 'them' : 'it'} (the target is dumped first), or restore into another database`);
      }
      toc = selection.entries;
      for (const fk of selection.outsideForeignKeys) {
        logger.warn(`foreign key ${fk.constraint} of ${fk.table} references ${fk.references.join(', ')}, which ${fk.references.length > 1 ? 'are' : 'is'} not selected: it is not restored (add --table ${fk.references[0]} to restore it with its key, or re-create it by hand)`);
      }
      if (selection.prerequisites.length) logger.info(`also restored, because the target lacks them: ${selection.prerequisites.join(', ')}`);
      logger.info(`selected from the TOC: ${selection.tables.map((t) => `${t.schema}.${t.table}`).join(', ')} (${selection.entries.length} entries with their indexes, constraints, triggers, sequences, comments and grants)`);
      scratch ??= await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-restore-'));
      const listFile = path.join(scratch, 'selected.list');
      await writeFile(listFile, tocList(selection.entries), { mode: 0o600 });
      args.push('--use-list', listFile);
    }
    const tables = selection ? selection.tables : [...manifest.tables, ...(manifest.tablesWithoutData ?? [])];
    const { problems, warnings } = await preflightRestore(client, { toc, tables, clean, noOwner });
    if (refused.length && !options.skipRefused) problems.unshift(refusedMessage(refused));
    const ownerHint = toc && problems.some((p) => /owns objects in the backup|OWNER TO/.test(p)) ? platformOwnerHint(toc, { noOwner, profile }) : undefined;
    if (ownerHint) problems.push(ownerHint);
    await client.end().catch(() => undefined);
    for (const w of warnings) logger.warn(w);
    if (problems.length) throw new RestoreFailedError('target', target.display, problems.join('; '), 'refused');
    logger.info(`target ${target.display}: ${contents ? `holds ${contents.description}; ${selecting ? (clean ? '--clean replaces the selected objects' : 'the selected objects are not there') : "--clean replaces the backup's objects"}` : 'empty'}; checks passed (owners, rights${clean ? ', dependencies' : ''}${toc ? ', lock table' : ''})`);

    // 2. The safety dump.
    let safety: RestoreResult['safetyDump'];
    if (contents && options.safetyDump !== false) {
      safety = await takeSafetyDump({
        databaseUrl: options.targetUrl,
        from: options.from,
        service: manifest.service,
        environment: manifest.environment,
        s3: options.s3,
        logger,
        signal: options.signal,
        what: target.display,
        why: 'before replacing its objects (skip with --no-safety-dump)',
        reason: `safety dump before restoring ${manifest.id} with --clean`,
        refused: (cause) => `restore refused, nothing was changed in ${target.display}: the safety dump of ${target.display} failed (${cause}): fix that, or pass --no-safety-dump to replace its objects without one`,
      });
    }

    // 3. The restore, in one transaction.
    logger.info(`restoring ${backupUri} (${formatBytes(manifest.object.sizeBytes)}, taken ${manifest.startedAt}) into ${target.display} in one transaction with ${bins.psql ? `psql ${bins.psql.version}` : `pg_restore ${bins.pgRestore.version}`}`);
    const started = Date.now();
    // The restoring program's session, named so that its lock waits can be watched.
    const appName = `pg-backup-restore-${randomBytes(4).toString('hex')}`;
    const watch = await startLockWatch(target, appName, lockWaitMs, logger);
    progress ??= startRestoreProgress('restore', storage, manifest, logger);
    // One job (a single transaction): pg_restore's --verbose lines are read as a serial run's.
    const verboseLines = await restorePhase(progress, manifest, { serial: true, tables: selection?.tables });
    const counted = localArchive ? storage : meteredStorage(storage, (n) => progress!.addBytes(n));
    if (!localArchive) progress.update({ bytes: 0, totalBytes: manifest.object.sizeBytes });
    // The rows each restored table must have (the manifest's counts), checked in the archive before the commit.
    const withoutData = new Set((manifest.tablesWithoutData ?? []).map((t) => `${t.schema}\u0000${t.table}`));
    const selectedKeys = selection ? new Set(selection.tables.map((t) => `${t.schema}\u0000${t.table}`)) : undefined;
    const expectedRows = manifest.tables.filter((t) => (!selectedKeys || selectedKeys.has(`${t.schema}\u0000${t.table}`)) && !withoutData.has(`${t.schema}\u0000${t.table}`));
    let beforeCommit: { counted: boolean; note: string } = { counted: false, note: 'plain SQL: the rows are counted after the commit only' };
    const rowVerdict = (counts: ArchiveRowCounts | { unsupported: string }): string[] => {
      if ('unsupported' in counts) {
        beforeCommit = { counted: false, note: `the archive's rows could not be counted before the commit (${counts.unsupported}): counted after it only` };
        logger.warn(beforeCommit.note);
        return [];
      }
      const { problems } = archiveRowProblems(counts, expectedRows);
      beforeCommit = { counted: true, note: problems.length ? `the archive's rows differ from the manifest: nothing was committed` : `the archive's rows of ${expectedRows.length} table${expectedRows.length === 1 ? '' : 's'} match the manifest (counted before the commit)` };
      return problems;
    };
    const rolledBack = (problems: string[], phase: string) =>
      new RestoreChecksFailedError(
        `restore into ${target.display}: the checks before the commit failed: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}; ${phase}, ${target.display} is as it was (the manifest and the archive disagree: take another backup, or run pg-backup verify on this one)`,
        { backupUri, target: target.display, checks: { ok: false, beforeCommit, problems } },
      );
    try {
      if (localArchive) {
        const problems = rowVerdict(await countDirectoryRows(localArchive, toc ?? []));
        if (problems.length) throw rolledBack(problems, 'nothing was restored');
        const program = startRestoreProgram(manifest.format, bins, target, args, localArchive, options.signal, appName, verboseLines);
        await program.done.catch((err: unknown) => {
          throw new RestoreFailedError(program.fault()?.party ?? 'target', target.display, program.fault()?.reason ?? messageOf(err), 'rolled back');
        });
      } else if (manifest.format === 'plain') {
        sizeBytes = await streamPlainRestore(counted, storedParts(backup)[0]!, bins, target, identities, options.signal, appName, options.workDir);
      } else {
        let rowProblems: string[] = [];
        sizeBytes = await streamRestore(counted, storedParts(backup)[0]!, manifest.format, bins, target, args, identities, options.signal, appName, verboseLines, (counts) => {
          rowProblems = rowVerdict(counts);
          return rowProblems.length === 0;
        }).catch((err: unknown) => {
          throw rowProblems.length ? rolledBack(rowProblems, 'pg_restore was stopped before its commit and the server rolled back') : err;
        });
      }
    } catch (err) {
      const waited = await watch?.timedOut();
      if (waited && !options.signal?.aborted) {
        const them = waited.blockers.length === 1 ? 'that session' : 'those sessions';
        throw new RestoreFailedError(
          'target',
          target.display,
          `it waited ${formatSeconds(waited.waitedMs)} for a lock held by ${describeBlockers(waited.blockers)} and gave up (--lock-wait-timeout ${formatSeconds(lockWaitMs)}): end ${them} or let ${waited.blockers.length === 1 ? 'its' : 'their'} transaction${waited.blockers.length === 1 ? '' : 's'} finish (SELECT pg_terminate_backend(pid) as a last resort), then run the restore again, or give it longer with --lock-wait-timeout`,
          'rolled back',
        );
      }
      throw err;
    } finally {
      progress.stop();
      await watch?.stop();
    }
    const durationMs = Date.now() - started;
    logger.info(`restored ${selection ? selection.tables.map((t) => `${t.schema}.${t.table}`).join(', ') : manifest.database} into ${target.display} in ${formatSeconds(durationMs)} (committed as one transaction)`);

    // 4. The checks in the restored database (the archive's rows were counted before the commit; restore-checks.ts).
    if (beforeCommit.counted) logger.info(beforeCommit.note);
    // Owners and grants against the dump's record: for a whole restore that kept them (a selection
    // restores only part of what the record lists; the target database's own owner, ACL and
    // settings are the target's, not the backup's).
    const privilegesCheck = options.privilegesCheck ?? (!selection && !options.noOwner && !options.noAcl && !manifest.options?.noOwner && !manifest.options?.noAcl
      ? (conn: DatabaseConnection, record: unknown, signal?: AbortSignal) => checkPrivileges(conn, record as Privileges, { withDatabase: false, log: logger, signal })
      : undefined);
    const checks = { ...(await runRestoreChecks(target, manifest, { tables: selection?.tables, privileges: privilegesCheck, logger, signal: options.signal })), beforeCommit };
    const result: RestoreResult = {
      backupUri,
      target: target.display,
      durationMs,
      sizeBytes,
      replaced: contents !== undefined,
      safetyDump: safety,
      checks,
      ...(selection ? { selection: { tables: selection.tables, entries: selection.entries.length, outsideForeignKeys: selection.outsideForeignKeys, prerequisites: selection.prerequisites } } : {}),
      ...(options.skipRefused && refused.length ? { skipped: refused.map((r) => r.label) } : {}),
    };
    const back = safety ? `the restore is committed: to go back to the target as it was, ${safety.restoreCommand}` : 'the restore is committed: inspect the tables named, and restore another backup if the data is wrong';
    requireChecks(checks, `restore into ${target.display}`, options.checksFailed ?? back, result);
    return result;
  } finally {
    progress?.stop();
    await client.end().catch(() => undefined);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Starts {@link watchLockWaits} over the restore's session `appName` on its own connection; when
 * that connection cannot be opened, warns and restores without the watch.
 */
async function startLockWatch(target: DatabaseConnection, appName: string, timeoutMs: number, logger: Logger): Promise<LockWatch | undefined> {
  try {
    const client = await connect(target, 'pg-backup restore lock watch');
    return watchLockWaits(client, appName, { timeoutMs, notice: (line) => logger.warn(line) });
  } catch (err) {
    logger.warn(`cannot watch the restore's lock waits (${messageOf(err)}): it may wait for locks without a limit`);
    return undefined;
  }
}

/**
 * Restores plain SQL: the object streams through hashing, decryption and decompression into a
 * {@link plainSqlGate}, which holds the SQL (memory up to 256 KiB, else a private spool file
 * under `workDir`) and starts psql — in restricted mode, one transaction — only once the object
 * matched its manifest and the SQL ends with pg_dump's completion line. So nothing of a damaged
 * or altered object reaches the server, and nothing in any SQL runs on this machine.
 * @returns the bytes downloaded.
 * @throws RestoreFailedError: refused (nothing sent) or rolled back (psql failed), naming the cause.
 */
async function streamPlainRestore(
  storage: Storage,
  part: StoredPart,
  bins: RestoreBinaries,
  target: DatabaseConnection,
  identities: string[] | undefined,
  signal: AbortSignal | undefined,
  appName: string,
  workDir: string | undefined,
): Promise<number> {
  let program: RestoreProgram | undefined;
  let gate: PlainSqlGate | undefined;
  const outcome = await streamBackup(
    storage,
    part,
    () =>
      (gate = plainSqlGate(() => {
        program = startRestoreProgram('plain', bins, target, [], undefined, signal, appName);
        return program;
      }, { workDir })),
    signal,
    identities,
  );
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('cancelled');
  const name = target.display;
  const phase = program ? 'rolled back' : 'refused';
  if (outcome.downloadError) throw new RestoreFailedError('storage', name, `download failed: ${outcome.downloadError}`, phase);
  const differs = outcome.checksumSkipped
    ? []
    : [
        outcome.sizeBytes !== part.sizeBytes && `size mismatch: the object has ${outcome.sizeBytes} bytes, the manifest says ${part.sizeBytes}`,
        outcome.sha256 !== part.sha256 && `sha256 mismatch: the object hashes to ${outcome.sha256}, the manifest says ${part.sha256}`,
      ];
  const archive = [...differs, outcome.decryptError, outcome.decompressError && `decompression failed: ${outcome.decompressError}`, gate?.refusal()].filter(Boolean);
  if (archive.length) throw new RestoreFailedError('archive', name, `${archive.join('; ')}; none of its SQL was run`, phase);
  const fault = program?.fault();
  if (fault) throw new RestoreFailedError(fault.party, name, fault.reason, 'rolled back');
  if (outcome.restoreError) {
    if (program) throw new RestoreFailedError('target', name, outcome.restoreError, 'rolled back');
    throw new CheckFailedError(`restore refused, nothing was changed in ${name}: ${outcome.restoreError}`);
  }
  return outcome.sizeBytes;
}

/** Bytes of the decompressed stream held back until the stored object's checksum is known. */
const HOLD_BACK_BYTES = 256 * 1024;

/**
 * Streams one stored custom archive into a single-transaction pg_restore (plain SQL takes
 * {@link streamPlainRestore}). The stored bytes are hashed on the way in; the last
 * {@link HOLD_BACK_BYTES} of the decompressed archive reach the program only once size and
 * SHA-256 equal the manifest's. Otherwise the program is stopped before it can commit.
 * @returns the bytes downloaded.
 * @throws RestoreFailedError naming the cause.
 */
async function streamRestore(
  storage: Storage,
  part: StoredPart,
  format: DumpFormat,
  bins: RestoreBinaries,
  target: DatabaseConnection,
  args: string[],
  identities: string[] | undefined,
  signal: AbortSignal | undefined,
  appName: string,
  verboseLines?: StderrLineFilter,
  rowsMatch?: (counts: ArchiveRowCounts | { unsupported: string }) => boolean,
): Promise<number> {
  let resolveVerdict!: (v: { sizeBytes: number; sha256?: string; error?: string }) => void;
  const verdict = new Promise<{ sizeBytes: number; sha256?: string; error?: string }>((resolve) => (resolveVerdict = resolve));
  const hashing: Storage = {
    url: storage.url,
    uri: (k) => storage.uri(k),
    keyOf: (u) => storage.keyOf(u),
    upload: (k, b, o) => storage.upload(k, b, o),
    put: (k, b, o) => storage.put(k, b, o),
    getText: (k) => storage.getText(k),
    list: (p) => storage.list(p),
    delete: (k) => storage.delete(k),
    get: async (key) => {
      const source = await storage.get(key);
      const hash = createHash('sha256');
      let n = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, callback) {
          hash.update(chunk);
          n += chunk.length;
          callback(null, chunk);
        },
        flush(callback) {
          resolveVerdict({ sizeBytes: n, sha256: hash.digest('hex') });
          callback();
        },
      });
      pipeline(source, meter, (err) => {
        if (err) resolveVerdict({ sizeBytes: n, error: messageOf(err) });
      });
      return meter;
    },
  };
  let mismatch: string | undefined;
  const sinkCheck = verdict.then((v) => {
    if (v.error) mismatch = `download failed: ${v.error}`;
    else if (v.sizeBytes !== part.sizeBytes) mismatch = `size mismatch: the object has ${v.sizeBytes} bytes, the manifest says ${part.sizeBytes}`;
    else if (v.sha256 !== part.sha256) mismatch = `sha256 mismatch: the object hashes to ${v.sha256}, the manifest says ${part.sha256}`;
    return mismatch === undefined;
  });
  let program: RestoreProgram | undefined;
  const outcome = await streamBackup(
    hashing,
    part,
    () => {
      program = startRestoreProgram(format, bins, target, args, undefined, signal, appName, verboseLines);
      const p = program;
      const counter = rowsMatch && new ArchiveRowCounter();
      const stream = holdBack(p, async () => (await sinkCheck) && (!counter || rowsMatch!(counter.finish())), counter ? (chunk) => counter.push(chunk) : undefined);
      return { stream, done: p.done } satisfies ArchiveSink;
    },
    signal,
    identities,
  );
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('cancelled');
  const fault = program?.fault();
  const failed = outcome.downloadError || outcome.decryptError || outcome.decompressError || outcome.restoreError || mismatch;
  if (!failed) return outcome.sizeBytes;
  const name = target.display;
  // The download failing first is the storage's fault.
  if (outcome.downloadError) throw new RestoreFailedError('storage', name, `download failed: ${outcome.downloadError}`, 'rolled back');
  // Then evidence against the archive: it differs from its manifest, or cannot be decrypted or decompressed.
  const differs = mismatch && !mismatch.startsWith('download failed') ? mismatch : undefined;
  const archive = [differs, outcome.decryptError, outcome.decompressError && `decompression failed: ${outcome.decompressError}`]
    .filter(Boolean)
    .join('; ');
  if (archive) throw new RestoreFailedError('archive', name, archive, 'rolled back');
  // Then what pg_restore/psql said (the download may have been stopped because of it).
  if (fault && !/was stopped/.test(outcome.restoreError ?? '')) throw new RestoreFailedError(fault.party, name, fault.reason, 'rolled back');
  if (mismatch) throw new RestoreFailedError('storage', name, mismatch, 'rolled back');
  throw new RestoreFailedError(fault?.party ?? 'archive', name, fault?.reason ?? outcome.restoreError ?? 'the restore failed', 'rolled back');
}

/**
 * The sink's writable: forwards into the program's stdin but holds back the last
 * {@link HOLD_BACK_BYTES}; at the end it asks `release()` and writes the tail and closes stdin
 * only when it says yes, else stops the program. It finishes only once the program exited 0 and
 * fails with the program's own reason (the {@link ArchiveSink} contract); destroyed before its
 * end, it stops the program before its input closes, so nothing cut off is committed. A dead
 * program's stdin is drained, never waited on.
 */
function holdBack(program: RestoreProgram, release: () => Promise<boolean>, observe?: (chunk: Buffer) => void): Writable {
  const inner = program.stdin;
  const held: Buffer[] = [];
  let heldBytes = 0;
  let dead = false;
  let ended = false;
  inner.on('error', () => (dead = true));
  inner.on('close', () => (dead = true));
  const forward = (buf: Buffer) => (dead ? Promise.resolve() : writeWithBackpressure(inner, buf));
  return new Writable({
    write(chunk: Buffer, _enc, callback) {
      observe?.(chunk);
      held.push(chunk);
      heldBytes += chunk.length;
      void (async () => {
        while (held.length > 1 && heldBytes - held[0]!.length >= HOLD_BACK_BYTES) {
          const first = held.shift()!;
          heldBytes -= first.length;
          await forward(first);
        }
        callback();
      })();
    },
    final(callback) {
      void (async () => {
        const tail = Buffer.concat(held);
        if (!(await release())) {
          program.stop();
          await program.done.catch(() => undefined);
          return callback(new Error('stopped before commit: the archive does not match its manifest'));
        }
        await forward(tail);
        ended = true;
        if (!dead && !inner.destroyed) inner.end();
        program.done.then(() => callback(), (err: Error) => callback(err));
      })();
    },
    destroy(err, callback) {
      if (!ended) program.stop();
      callback(err);
    },
  });
}

/** A running pg_restore or psql that restores into the target. */
interface RestoreProgram {
  stdin: Writable;
  /** Resolves on exit code 0; rejects otherwise (see {@link fault}). */
  done: Promise<void>;
  /** Why it failed, attributed, once `done` rejected. */
  fault(): RestoreFault | undefined;
  /** Stops it before it can commit (SIGTERM; the server rolls the transaction back). */
  stop(): void;
}

/**
 * Starts the program that restores into `target` in one transaction: `psql -X -q -v
 * ON_ERROR_STOP=1 --single-transaction` for plain SQL, `pg_restore` with `args` otherwise. Reads
 * `file` or, without it, stdin. The password goes in `PGPASSWORD`; the whole stderr is kept to
 * attribute a failure ({@link classifyRestoreFailure}). With `verboseLines` (pg_restore only),
 * --verbose is added and its progress lines go to that filter, not into the kept stderr
 * (src/postgres/restore-progress.ts).
 */
function startRestoreProgram(format: DumpFormat, bins: RestoreBinaries, target: DatabaseConnection, args: string[], file: string | undefined, signal: AbortSignal | undefined, appName: string, verboseLines?: StderrLineFilter): RestoreProgram {
  const stopper = new AbortController();
  const cancel = signal ? AbortSignal.any([signal, stopper.signal]) : stopper.signal;
  const bin: PgBinary = format === 'plain' ? bins.psql! : bins.pgRestore;
  const argv =
    format === 'plain'
      ? ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', file ?? '-', `--dbname=${named(target.url, appName)}`]
      : [...args, ...(verboseLines ? ['--verbose'] : []), `--dbname=${named(target.url, appName)}`, ...(file ? [file] : [])];
  const child = execa(bin.path, argv, {
    env: { ...libpqEnv(target), PGAPPNAME: appName },
    stdin: file ? 'ignore' : 'pipe',
    stdout: 'ignore',
    stderr: verboseLines && format !== 'plain' ? [verboseLines, 'pipe'] : 'pipe',
    buffer: { stdout: false, stderr: true },
    cancelSignal: cancel,
    forceKillAfterDelay: 5_000,
    maxBuffer: { stderr: 4 * 1024 * 1024 },
  });
  let fault: RestoreFault | undefined;
  const done = child.then(
    () => undefined,
    (err: { exitCode?: number; signal?: string; stderr?: string; isCanceled?: boolean }) => {
      const how = err.isCanceled ? 'was stopped' : err.signal ? `was killed by ${err.signal}` : `exited with code ${err.exitCode}`;
      fault = classifyRestoreFailure(bin.program, err.stderr ?? '', how);
      throw new Error(`${bin.program} ${how}: ${fault.reason}`);
    },
  );
  done.catch(() => undefined);
  const stdin = child.stdin ?? new Writable({ write: (_c, _e, cb) => cb() });
  stdin.on('error', () => undefined);
  return { stdin, done, fault: () => fault, stop: () => stopper.abort(new Error('stopped before commit')) };
}

/** `url` with `application_name` set to `appName` (a name in the URL would override `PGAPPNAME`); `appName` has no character that needs encoding (libpq reads `+` as a plus). */
function named(url: string, appName: string): string {
  try {
    const u = new URL(url);
    u.searchParams.set('application_name', appName);
    return u.href;
  } catch {
    return url;
  }
}

/**
 * Reads the TOC at the head of a custom archive without downloading the rest: the object
 * streams through decryption and decompression into `pg_restore --list`, and the download is
 * stopped once pg_restore has read the TOC and exited.
 * @returns pg_restore's `--list` output.
 * @throws RestoreFailedError: the storage (the download failed) or the archive (unreadable TOC).
 */
async function readStreamedToc(storage: Storage, part: StoredPart, pgRestore: PgBinary, identities: string[] | undefined, target: string, signal?: AbortSignal): Promise<string> {
  let source: Readable;
  try {
    source = await storage.get(part.key);
  } catch (err) {
    throw new RestoreFailedError('storage', target, `download failed: ${messageOf(err)}`, 'refused');
  }
  let downloadError: string | undefined;
  let stageError: string | undefined;
  let settled = false;
  // A stage that fails because pg_restore stopped reading (EPIPE, killed at teardown) tells nothing.
  const noteStage = (err: unknown) => {
    const m = messageOf(err);
    if (!settled && !/EPIPE|Broken pipe|SIGPIPE|SIGKILL|SIGTERM|stopped before the end|cancel/i.test(m)) stageError ??= m;
  };
  const decrypt = part.encrypted ? startDecrypt(identities!) : undefined;
  const codec = await startCodec(part.compression, 'decompress', signal);
  const child = execa(pgRestore.path, ['--list', '--verbose'], { stdin: 'pipe', stdout: 'pipe', stderr: 'pipe', reject: false, cancelSignal: signal, forceKillAfterDelay: 2_000, maxBuffer: 256 * 1024 * 1024 });
  child.stdin!.on('error', () => undefined);
  codec.stream.on('error', () => undefined);
  decrypt?.stream.on('error', () => undefined);
  // Each stage ends the next when it fails, so pg_restore never waits on input that cannot come.
  source.on('error', (err) => {
    if (!settled) downloadError ??= messageOf(err);
    (decrypt?.stream ?? codec.stream).end();
  });
  if (decrypt) {
    source.pipe(decrypt.stream);
    decrypt.done.catch((err: unknown) => {
      noteStage(err);
      codec.stream.end();
    });
    decrypt.stream.pipe(codec.stream);
  } else {
    source.pipe(codec.stream);
  }
  codec.done.catch((err: unknown) => {
    noteStage(err);
    child.stdin!.end();
  });
  codec.stream.pipe(child.stdin!);
  const listed = await child;
  settled = true;
  source.unpipe();
  source.destroy();
  codec.abort();
  decrypt?.stream.destroy();
  await Promise.allSettled([decrypt?.done, codec.done]);
  if (listed.exitCode === 0) return listed.stdout;
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('cancelled');
  if (downloadError) throw new RestoreFailedError('storage', target, `download failed: ${downloadError}`, 'refused');
  const reading = classifyRestoreFailure('pg_restore', listed.stderr, `exit code ${listed.exitCode}`).reason;
  throw new RestoreFailedError('archive', target, `the archive's TOC is unreadable: ${reading}${stageError ? `; ${stageError}` : ''}`, 'refused');
}
