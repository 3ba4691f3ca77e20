import { mkdtemp, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import { clockCheck, parseMaxClockSkew } from '../backup/clock.ts';
import { identitiesFor } from '../backup/encryption.ts';
import { downloadArchive } from '../backup/readback.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';
import { archiveExtensions, restoreBinaries, restoreLocalArchive } from '../postgres/archive.ts';
import { addDataOffsets } from '../postgres/archive-offsets.ts';
import { findPgBinary, prefetchPrograms, type PgBinary } from '../postgres/binaries.ts';
import { clusterIsolation } from '../postgres/cluster-user.ts';
import { createThrowawayDatabase, startThrowawayCluster, workDirOf, type ThrowawayCluster } from '../postgres/cluster.ts';
import { resolveConnection, type DatabaseConnection } from '../postgres/connection.ts';
import { ensureDrillSpace } from '../postgres/disk.ts';
import { requireRestrictedPsql } from '../postgres/plain-sql.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { RepairScript, sqlComment, sqlIdent, sqlLiteral, sqlQualified } from '../postgres/repair-sql.ts';
import { connect } from '../postgres/server.ts';
import { compareTables, keyOrder, parseTableName, tableInfo, unescapeCopy, type ComparePlan, type CopyRow, type TableInfo, type TableName } from '../postgres/table-diff.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';
import { downloadWhileClusterStarts, type DrillPhases } from './drill.ts';
import { takeSafetyDump } from './safety-dump.ts';
import { meteredStorage, startStepProgress } from '../backup/progress-eta.ts';
import { missingExtensions, withClient } from './drill-checks.ts';

/** Options of {@link diff}. */
export interface DiffOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  /** `latest`, a backup id, a manifest or dump key, or its full URI. */
  backup: string;
  filter?: BackupFilter;
  /** `SCHEMA.TABLE` as psql reads it (`public.orders`, `"Sales"."Order Lines"`). */
  table: string;
  /** The live database holding the table. */
  targetUrl: string;
  /** Write the repair script here (atomically: a temp file beside it, renamed at the end). */
  sqlFile?: string;
  /** The repair deletes the live rows the backup lacks (default: left alone). */
  includeExtra?: boolean;
  /** Run the repair on the live database (after a safety dump of the table), in one transaction. */
  apply?: boolean;
  /** With `apply`: take the safety dump first (default true; false only for tests and people who have their own). */
  safetyDump?: boolean;
  /** Examples kept per kind of difference (default 5). */
  examples?: number;
  /** Parent directory of the downloaded archive and the throwaway cluster (default `PG_BACKUP_WORK_DIR` or the temp dir). */
  workDir?: string;
  s3?: S3Settings;
  ageIdentities?: string[];
  /** With `latest`: a backup stamped later than now + this (`10m`) is passed over. */
  maxClockSkew?: string;
  /** As for a drill: run the throwaway cluster as this OS user when there is no root or sudo (see src/postgres/cluster-user.ts). */
  allowSameOsUser?: boolean;
  logger: Logger;
  signal?: AbortSignal;
}

/** A value as both sides print it (text output of its type; NULL as null). */
export type DiffValue = string | null;

/** One example row of a difference: its key, and the values that matter. */
export interface DiffExample {
  key: Record<string, DiffValue>;
  /** missing: the backup's values; extra: the live values (the compared columns outside the key). */
  values?: Record<string, DiffValue>;
  /** changed: each differing column with the backup's and the live value. */
  changes?: { column: string; backup: DiffValue; live: DiffValue }[];
}

/** What {@link diff} found (and did). */
export interface DiffResult {
  /** No row missing, extra or changed. */
  identical: boolean;
  /** `schema.table`. */
  table: TableName;
  backupUri: string;
  backupId: string;
  /** When the backup was taken (its dump started), ISO 8601 UTC. */
  backupTakenAt: string;
  /** The live database, `user@host:port/db`. */
  target: string;
  /** The columns rows are matched by, and where they come from (the live table's). */
  key: { columns: string[]; kind: 'primary key' | 'unique index'; index: string };
  /** The columns compared, key first. */
  columns: string[];
  /** Columns not compared, with why (generated, or on one side only). */
  skippedColumns: { column: string; reason: string }[];
  /** missing: rows in the backup not live; extra: live rows not in the backup; changed: same key, other values. */
  counts: { missing: number; extra: number; changed: number; backupRows: number; liveRows: number };
  examples: { missing: DiffExample[]; extra: DiffExample[]; changed: DiffExample[] };
  /** The repair script written (`sqlFile`), absolute. */
  sqlFile?: string;
  /** What the repair script does: statements per kind. */
  repair?: { inserts: number; updates: number; deletes: number; extraLeftAlone: number };
  /** With `apply`: the repair ran and committed. */
  applied?: { inserted: number; updated: number; deleted: number; safetyDump?: { backupUri: string; manifestUri: string; restoreCommand: string } };
  /** Wall time of the whole diff, ms. */
  durationMs: number;
}

/** Longest value kept in an example, in characters (the rest is cut and marked `…`). */
const EXAMPLE_CHARS = 200;

/**
 * Compares one table of a backup with the live table, row by row, and optionally repairs it.
 *
 * 1. Checks first (nothing downloaded yet): the live table exists and has a key (its primary key,
 *    else a unique index on NOT NULL columns without expression or predicate), and the backup's
 *    manifest lists the table with its rows. Each refusal is a UsageError (one line, exit 2).
 * 2. The backup is downloaded and checked against its manifest (size, SHA-256) while a
 *    throwaway cluster starts (the drill's machinery, run by the cluster user; docs/security.md).
 *    Custom and directory archives: the schema's pre-data section (types, functions, tables; no
 *    indexes, constraints or triggers), then that table's rows alone (`pg_restore --data-only
 *    -n SCHEMA -t TABLE`). Plain SQL: all of it, through psql in restricted mode. The copy's
 *    row count must equal the manifest's.
 * 3. Both tables stream sorted by key and are merge-joined in bounded memory
 *    (src/postgres/table-diff.ts). The repair script, when asked for, is written as the rows
 *    stream (src/postgres/repair-sql.ts) and put in place atomically once the comparison ended.
 * 4. With `apply` and differences: a safety dump of the live table into
 *    `<from>/safety-dumps/<service>/<environment>/<database>/…` (src/backup/safety.ts), then the
 *    script through `psql -v ON_ERROR_STOP=1` in one transaction: all of it or nothing.
 *
 * The throwaway cluster and the scratch directory are removed on every path.
 * @throws UsageError for bad options, a table missing on either side, a table without a key.
 * @throws CheckFailedError when the backup does not match its manifest, its copy of the table cannot be restored, or the repair failed (rolled back).
 */
export async function diff(options: DiffOptions): Promise<DiffResult> {
  const started = Date.now();
  const { logger: log, signal } = options;
  if (!options.backup?.trim()) throw new UsageError('diff needs --backup KEY (from "pg-backup list") or --backup latest');
  const name = parseTableName(options.table);
  const shown = `${name.schema}.${name.table}`;
  const examplesWanted = options.examples ?? 5;
  const sqlFile = options.sqlFile ? path.resolve(options.sqlFile) : undefined;
  if (sqlFile) {
    const dir = await stat(path.dirname(sqlFile)).catch(() => undefined);
    if (!dir?.isDirectory()) throw new UsageError(`--sql-file ${options.sqlFile}: the directory ${path.dirname(sqlFile)} does not exist; create it or write the script elsewhere`);
    if ((await stat(sqlFile).catch(() => undefined))?.isDirectory()) throw new UsageError(`--sql-file ${options.sqlFile} is a directory: give the name of the script to write, e.g. ${path.join(sqlFile, 'repair.sql')}`);
  }
  const storage = openStorage(options.from, options.s3);
  const live = resolveConnection(options.targetUrl);
  prefetchPrograms('pg_restore', 'psql', 'initdb');

  // 1. The live table and its key, then the backup's manifest.
  const liveInfo = await withClient(live, signal, (client) => tableInfo(client, name));
  if (!liveInfo) throw new UsageError(`table ${shown} does not exist in ${live.display}: give SCHEMA.TABLE as it is named there (quote mixed case: "Sales"."Orders"), or restore the whole table with pg-backup restore`);
  if (!liveInfo.key) {
    throw new UsageError(`table ${shown} in ${live.display} has neither a primary key nor a unique index on NOT NULL columns: rows cannot be matched one to one, so diff refuses it; add a key, or restore the table side by side and compare by hand`);
  }
  const backup = await resolveBackup(storage, options.backup, options.filter, undefined, { clock: clockCheck(new Date(), parseMaxClockSkew(options.maxClockSkew)), warn: (line) => log.warn(line) });
  const { manifest } = backup;
  const backupUri = storage.uri(backup.objectKey);
  if (manifest.kind === 'globals') throw new UsageError(`${backupUri} is a globals backup (roles, tablespaces): it holds no table; name a database's backup`);
  const inManifest = manifest.tables.find((t) => t.schema === name.schema && t.table === name.table);
  if (!inManifest) {
    if (manifest.tablesWithoutData?.some((t) => t.schema === name.schema && t.table === name.table)) {
      throw new UsageError(`backup ${manifest.id} holds table ${shown} without its rows (dumped with --exclude-table-data): there is nothing to compare; pick a backup that has them`);
    }
    throw new UsageError(`table ${shown} is not in backup ${manifest.id} of ${manifest.database} (${manifest.tables.length} tables): check the name, or pick a backup taken while the table existed`);
  }
  log.info(`diff of ${shown}: backup ${backupUri} (taken ${manifest.startedAt}, ${inManifest.rows} rows) against ${live.display}, matched by ${liveInfo.key.kind} (${liveInfo.key.columns.join(', ')})`);

  const identities = identitiesFor(manifest.encryption, options.ageIdentities, backupUri);
  await clusterIsolation({ allowSameOsUser: options.allowSameOsUser });
  const bins = await restoreBinaries(manifest);
  if (manifest.format === 'plain' && bins.psql) requireRestrictedPsql(bins.psql, 'restore a plain SQL backup for a diff');
  const psql = bins.psql ?? (await findPgBinary('psql', 10, 'reading the tables for a diff'));
  const parent = workDirOf(options.workDir);
  await ensureDrillSpace(parent, manifest, { throwaway: true });

  const held: { cluster?: ThrowawayCluster } = {};
  let scratch: string | undefined;
  let script: RepairScript | undefined;
  // Progress and ETA (src/backup/progress-eta.ts): download bytes, then the rows compared of the manifest's count.
  const progress = startStepProgress({ label: `diff ${shown}`, logger: log });
  try {
    signal?.throwIfAborted();
    scratch = await mkdtemp(path.join(parent, 'pg-backup-diff-'));
    // 2. Download ∥ cluster start (one owner), then the table alone into the cluster.
    const phases: DrillPhases = { downloadMs: 0, clusterReadyMs: 0, restoreMs: 0, checksMs: 0, shutdownMs: 0 };
    progress.phase('download', { bytes: 0, totalBytes: manifest.object.sizeBytes });
    const ready = await log.group('download + cluster start', () =>
      downloadWhileClusterStarts({
        download: (s) =>
          downloadArchive(meteredStorage(storage, (n) => progress.addBytes(n)), backup, scratch!, s, identities).then(async (local) => {
            if (manifest.format === 'custom' && local.problems.length === 0) await addDataOffsets(local.path, log, s);
            return local;
          }),
        cluster: async (s) => {
          const cluster = await startThrowawayCluster({ minMajor: manifest.server.major, workDir: options.workDir, logger: log, signal: s, bulkRestore: {}, allowSameOsUser: options.allowSameOsUser });
          held.cluster = cluster;
          s.throwIfAborted();
          return createThrowawayDatabase(cluster, manifest.database, manifest.format === 'plain' ? manifest.roles : undefined);
        },
        signal,
        phases,
        log,
      }),
    );
    if (ready.local.problems.length) throw new CheckFailedError(`the backup does not match its manifest: ${ready.local.problems.join('; ')}`);
    const copy = ready.target!;
    progress.phase('restore', { tablesDone: 0, tablesTotal: 1, detail: `loading ${shown}` });
    await restoreTable(manifest.format, bins, ready.local.path, copy, name, log, signal);
    const backupInfo = await withClient(copy, signal, (client) => tableInfo(client, name));
    if (!backupInfo) throw new CheckFailedError(`the backup's archive holds no table ${shown} although its manifest lists it: the archive and its manifest disagree`);

    // 3. Compare (and write the script as the rows stream).
    const { plan, skipped } = comparePlan(liveInfo, backupInfo);
    for (const s of skipped) log.warn(`column ${s.column} of ${shown} is not compared: ${s.reason}`);
    script = sqlFile || options.apply ? await RepairScript.create(sqlFile ?? path.join(scratch, 'repair.sql')) : undefined;
    const result: DiffResult = {
      identical: false,
      table: name,
      backupUri,
      backupId: manifest.id,
      backupTakenAt: manifest.startedAt,
      target: live.display,
      key: liveInfo.key,
      columns: [...plan.key.map((k) => k.name), ...plan.values],
      skippedColumns: skipped,
      counts: { missing: 0, extra: 0, changed: 0, backupRows: 0, liveRows: 0 },
      examples: { missing: [], extra: [], changed: [] },
      durationMs: 0,
    };
    const writer = script ? statementWriter(script, liveInfo, plan, options.includeExtra === true) : undefined;
    const columns = result.columns;
    const k = plan.key.length;
    const keyOf = (row: CopyRow) => Object.fromEntries(plan.key.map((c, i) => [c.name, clip(unescapeCopy(row[i]!))]));
    const valuesOf = (row: CopyRow) => Object.fromEntries(plan.values.map((c, i) => [c, clip(unescapeCopy(row[k + i]!))]));
    log.info(`comparing ${shown} by ${plan.key.map((c) => `${c.name} (${c.order === 'bytes' ? 'UTF-8 bytes of its text' : c.order})`).join(', ')}: ${columns.length} columns`);
    const compareStart = Date.now();
    progress.phase('compare', { tablesFraction: 0, detail: `0 of ${inManifest.rows} rows` });
    const counts = await log.group('compare', () =>
      compareTables(psql, copy, live, plan, {
        missing: (row) => {
          if (result.counts.missing++ < examplesWanted) result.examples.missing.push({ key: keyOf(row), values: valuesOf(row) });
          return writer?.missing(row);
        },
        extra: (row) => {
          if (result.counts.extra++ < examplesWanted) result.examples.extra.push({ key: keyOf(row), values: valuesOf(row) });
          return writer?.extra(row);
        },
        changed: (b, l, changed) => {
          if (result.counts.changed++ < examplesWanted) {
            result.examples.changed.push({ key: keyOf(b), changes: changed.map((f) => ({ column: columns[f]!, backup: clip(unescapeCopy(b[f]!)), live: clip(unescapeCopy(l[f]!)) })) });
          }
          return writer?.changed(b, changed);
        },
      }, signal, {
        // The copy has no index (post-data is not restored): its sort runs in memory rather than
        // in temp files. Only the throwaway cluster's session; the live server's are left alone.
        backupSettings: "SET work_mem = '256MB'",
        onProgress: (c) => progress.update({ tablesFraction: inManifest.rows ? Math.min(1, c.backupRows / inManifest.rows) : undefined, detail: `${c.backupRows} of ${inManifest.rows} rows` }),
      }),
    );
    result.counts.backupRows = counts.backupRows;
    result.counts.liveRows = counts.liveRows;
    log.info(`compare phase: ${formatSeconds(Date.now() - compareStart)} for ${counts.backupRows} + ${counts.liveRows} rows`);
    if (counts.backupRows !== inManifest.rows) {
      throw new CheckFailedError(`the backup's copy of ${shown} holds ${counts.backupRows} rows, its manifest counted ${inManifest.rows} when it was dumped: the restore lost rows; nothing was compared`);
    }
    result.identical = result.counts.missing + result.counts.extra + result.counts.changed === 0;
    if (script && writer) {
      result.repair = { inserts: writer.counts.inserts, updates: writer.counts.updates, deletes: writer.counts.deletes, extraLeftAlone: options.includeExtra ? 0 : result.counts.extra };
      await script.commit(scriptHeader(result, liveInfo, plan, options.includeExtra === true), writer.beforeCommit());
      if (sqlFile) {
        result.sqlFile = sqlFile;
        log.info(`repair script: ${sqlFile} (${result.repair.inserts} INSERT, ${result.repair.updates} UPDATE, ${result.repair.deletes} DELETE${result.repair.extraLeftAlone ? `; ${result.repair.extraLeftAlone} extra rows left alone: --include-extra deletes them` : ''})`);
      }
    }

    // 4. Apply.
    if (options.apply && script) {
      const { inserts, updates, deletes } = result.repair!;
      if (inserts + updates + deletes === 0) {
        log.info('nothing to apply: the live table already holds the backup\'s rows' + (result.counts.extra ? ` (and ${result.counts.extra} extra rows, left alone without --include-extra)` : ''));
      } else {
        let safety: NonNullable<DiffResult['applied']>['safetyDump'];
        if (options.safetyDump !== false) safety = await safetyDumpOfTable(options, manifest, name, live, log);
        log.info(`applying the repair to ${live.display} in one transaction: ${inserts} INSERT, ${updates} UPDATE, ${deletes} DELETE`);
        await applyScript(psql, live, script.file, signal);
        result.applied = { inserted: inserts, updated: updates, deleted: deletes, safetyDump: safety };
        log.info(`repair committed: ${shown} now holds the backup's rows${options.includeExtra ? '' : result.counts.extra ? ` (plus ${result.counts.extra} extra rows, left alone)` : ''}`);
      }
    }
    result.durationMs = Date.now() - started;
    return result;
  } catch (err) {
    await script?.discard();
    throw err;
  } finally {
    progress.stop();
    const cluster = held.cluster;
    await Promise.all([
      cluster?.stop().then(
        () => log.info('throwaway cluster removed'),
        (err: unknown) => log.warn(`removing the throwaway cluster failed: ${messageOf(err)} (remove ${cluster.dir} by hand)`),
      ),
      scratch ? rm(scratch, { recursive: true, force: true }).catch((err: unknown) => log.warn(`removing ${scratch} failed: ${messageOf(err)}`)) : undefined,
    ]);
  }
}

/** A value cut to {@link EXAMPLE_CHARS} characters for an example. */
function clip(value: DiffValue): DiffValue {
  return value !== null && value.length > EXAMPLE_CHARS ? `${value.slice(0, EXAMPLE_CHARS - 1)}…` : value;
}

/**
 * Restores the table's rows (and what its definition needs) from a local archive into the
 * throwaway database. custom/directory: `--section=pre-data` (every type, function and table
 * definition, no data, no index, constraint or trigger), then `--data-only -n SCHEMA -t TABLE`
 * (exact names; pg_restore's `-t` takes no pattern). plain: the whole SQL (restricted psql).
 * @throws CheckFailedError with pg_restore's or psql's reason.
 */
async function restoreTable(format: 'custom' | 'directory' | 'plain', bins: Awaited<ReturnType<typeof restoreBinaries>>, archive: string, target: DatabaseConnection, name: TableName, log: Logger, signal?: AbortSignal): Promise<void> {
  const extensions = await archiveExtensions(format, bins.pgRestore, archive, signal);
  const missing = await missingExtensions(target, extensions, signal);
  if (missing.length) throw new CheckFailedError(`the throwaway cluster lacks extension${missing.length > 1 ? 's' : ''} ${missing.join(', ')} that the backup's schema needs: install ${missing.length > 1 ? 'them' : 'it'} on this machine (e.g. postgresql-<major>-${missing[0]})`);
  const started = Date.now();
  try {
    if (format === 'plain') {
      log.info('restoring the plain SQL backup (all of it: plain SQL cannot be restored in part) into the throwaway cluster');
      await restoreLocalArchive(format, bins, archive, target, { signal });
    } else {
      await restoreLocalArchive(format, bins, archive, target, { args: ['--no-owner', '--no-acl', '--section=pre-data'], signal });
      await restoreLocalArchive(format, bins, archive, target, { args: ['--no-owner', '--no-acl', '--data-only', `--schema=${name.schema}`, `--table=${name.table}`], signal });
    }
  } catch (err) {
    signal?.throwIfAborted();
    throw new CheckFailedError(`restoring ${name.schema}.${name.table} from the backup into the throwaway cluster failed: ${messageOf(err)}`);
  }
  log.info(`restore phase: ${formatSeconds(Date.now() - started)}`);
}

/**
 * The columns compared and how the key is ordered: the live table's columns that are not
 * generated and that the backup's table has too (by name), the live key first.
 * @throws UsageError when the backup's table lacks a key column.
 */
export function comparePlan(live: TableInfo, backup: TableInfo): { plan: ComparePlan; skipped: { column: string; reason: string }[] } {
  const backupColumns = new Map(backup.columns.map((c) => [c.name, c]));
  const skipped: { column: string; reason: string }[] = [];
  const keyColumns = live.key!.columns;
  const key = keyColumns.map((name) => {
    const there = backupColumns.get(name);
    if (!there) throw new UsageError(`the backup's ${live.schema}.${live.table} has no column ${name}, part of the live table's ${live.key!.kind}: rows cannot be matched; the table's key changed since the backup`);
    const here = live.columns.find((c) => c.name === name)!;
    return { name, order: keyOrder(here.typname, there.typname) };
  });
  const values: string[] = [];
  for (const c of live.columns) {
    if (keyColumns.includes(c.name)) continue;
    const there = backupColumns.get(c.name);
    if (c.generated) skipped.push({ column: c.name, reason: 'generated: the server computes it' });
    else if (!there) skipped.push({ column: c.name, reason: 'added since the backup: left as it is' });
    else if (there.generated) skipped.push({ column: c.name, reason: 'generated in the backup: the server computes it' });
    else values.push(c.name);
  }
  for (const c of backup.columns) {
    if (!c.generated && !live.columns.some((l) => l.name === c.name)) skipped.push({ column: c.name, reason: 'dropped since the backup: its values cannot be put back by this repair' });
  }
  return { plan: { table: { schema: live.schema, table: live.table }, key, values }, skipped };
}

/** Writes the repair statements for each difference into the script's parts, and counts them. */
function statementWriter(script: RepairScript, live: TableInfo, plan: ComparePlan, includeExtra: boolean) {
  const table = sqlQualified(plan.table.schema, plan.table.table);
  const names = [...plan.key.map((k) => k.name), ...plan.values];
  const quoted = names.map(sqlIdent);
  const info = new Map(live.columns.map((c) => [c.name, c]));
  const identity = names.some((n) => info.get(n)?.identity);
  const insertHead = `INSERT INTO ${table} (${quoted.join(', ')})${identity ? ' OVERRIDING SYSTEM VALUE' : ''} VALUES (`;
  const where = (row: CopyRow) => plan.key.map((c, i) => `${quoted[i]} = ${sqlLiteral(unescapeCopy(row[i]!))}`).join(' AND ');
  const counts = { inserts: 0, updates: 0, deletes: 0 };
  return {
    counts,
    missing(row: CopyRow) {
      counts.inserts++;
      return script.inserts.add(`${insertHead}${row.map((f) => sqlLiteral(unescapeCopy(f))).join(', ')});\n`);
    },
    extra(row: CopyRow) {
      if (!includeExtra) return;
      counts.deletes++;
      return script.deletes.add(`DELETE FROM ${table} WHERE ${where(row)};\n`);
    },
    changed(backup: CopyRow, changed: number[]) {
      // A GENERATED ALWAYS identity column can only be updated to DEFAULT: left out.
      const set = changed.filter((f) => info.get(names[f]!)?.identity !== 'a');
      if (set.length === 0) return script.updates.add(`-- ${where(backup).replace(/\n/g, ' ')}: differs only in GENERATED ALWAYS identity columns, which UPDATE cannot set\n`);
      counts.updates++;
      return script.updates.add(`UPDATE ${table} SET ${set.map((f) => `${quoted[f]} = ${sqlLiteral(unescapeCopy(backup[f]!))}`).join(', ')} WHERE ${where(backup)};\n`);
    },
    /** After the INSERTs: sequences owned by inserted columns moved past the inserted values (never back). */
    beforeCommit(): string {
      if (counts.inserts === 0) return '';
      const lines: string[] = [];
      for (const column of live.sequenceColumns) {
        if (!names.includes(column)) continue;
        const seq = `pg_get_serial_sequence(format('%I.%I', ${sqlLiteral(plan.table.schema)}, ${sqlLiteral(plan.table.table)}), ${sqlLiteral(column)})::regclass`;
        lines.push(
          `-- the sequence of ${terminalSafe(column)}: moved past the highest value now in the table, never backwards\n`,
          `SELECT setval(x.seq, x.m) FROM (SELECT ${seq} AS seq, (SELECT max(${sqlIdent(column)}) FROM ${table}) AS m) AS x\n`,
          ` WHERE x.m IS NOT NULL AND (x.m > (SELECT s.last_value FROM pg_sequences AS s WHERE format('%I.%I', s.schemaname, s.sequencename)::regclass = x.seq)) IS NOT FALSE;\n`,
        );
      }
      return lines.join('');
    },
  };
}

/** A name for a comment line: one line, controls escaped. */
function terminalSafe(text: string): string {
  return sqlComment(text).slice(3, -1);
}

/** The script's header: what it does, with what, and how to apply it; then the session settings its literals need. */
function scriptHeader(result: DiffResult, live: TableInfo, plan: ComparePlan, includeExtra: boolean): string {
  const r = result.repair!;
  const table = `${result.table.schema}.${result.table.table}`;
  const generated = live.columns.filter((c) => c.generated).map((c) => c.name);
  const identities = live.columns.filter((c) => c.identity).map((c) => `${c.name} (${c.identity === 'a' ? 'ALWAYS' : 'BY DEFAULT'})`);
  const lines = [
    `pg-backup diff: repair script for ${table} in ${result.target}`,
    `from backup ${result.backupUri} (taken ${result.backupTakenAt}), rows matched by ${result.key.kind} ${result.key.columns.join(', ')}`,
    `found: ${result.counts.missing} missing (in the backup, not live), ${result.counts.changed} changed, ${result.counts.extra} extra (live only); backup ${result.counts.backupRows} rows, live ${result.counts.liveRows} rows`,
    `does: ${r.inserts} INSERT of missing rows, ${r.updates} UPDATE back to the backup's values, ${r.deletes} DELETE of extra rows${includeExtra ? '' : ` (extra rows left alone: ${r.extraLeftAlone}; pg-backup diff --include-extra deletes them)`}`,
    'one transaction: all of it or nothing. Review it, then apply it with:',
    `  psql -X -v ON_ERROR_STOP=1 -f THIS_FILE "postgresql://…/${result.target.replace(/^.*\//, '')}"`,
    `triggers: ${live.triggers.length ? `the table's triggers FIRE for every statement below (${live.triggers.join(', ')});` : 'the table has none;'} foreign keys are checked.`,
    '  To keep triggers from firing, a superuser may add "SET LOCAL session_replication_role = replica;" after BEGIN (this also skips foreign-key checks).',
    `generated columns: ${generated.length ? `${generated.join(', ')}: left out, the server computes them` : 'none'}`,
    `identity columns: ${identities.length ? `${identities.join(', ')}: INSERTs say OVERRIDING SYSTEM VALUE to keep the backup's values; UPDATE cannot set a GENERATED ALWAYS one (such differences are listed as comments)` : 'none'}`,
    `columns compared and written: ${[...plan.key.map((k) => k.name), ...plan.values].join(', ')}`,
    ...result.skippedColumns.map((s) => `not written: ${s.column}: ${s.reason}`),
    'values are string literals with standard_conforming_strings on (set below); U&\'…\' literals spell control characters as \\XXXX',
    'rows changed live after the diff ran are not seen by it: an UPDATE or DELETE of a row that no longer matches changes nothing',
  ];
  const settings = [
    "SET client_encoding = 'UTF8';",
    'SET standard_conforming_strings = on;',
    "SET DateStyle = 'ISO, YMD';",
    "SET IntervalStyle = 'postgres';",
    "SET TimeZone = 'UTC';",
    "SET lc_monetary = 'C';",
  ];
  return `${lines.map(sqlComment).join('')}\n${settings.join('\n')}\n\n`;
}

/**
 * The safety dump of the live table before the repair: `dump --table` of that one table into the
 * location's safety folder (src/backup/safety.ts), under the backup's service and environment.
 * @throws the dump's error, as a refusal: nothing was changed.
 */
async function safetyDumpOfTable(options: DiffOptions, manifest: { id: string; service: string; environment: string }, name: TableName, live: DatabaseConnection, log: Logger) {
  // pg_dump --table takes a psql pattern: each part double-quoted is taken literally.
  const pattern = `"${name.schema.replace(/"/g, '""')}"."${name.table.replace(/"/g, '""')}"`;
  return takeSafetyDump({
    databaseUrl: options.targetUrl,
    from: options.from,
    service: manifest.service,
    environment: manifest.environment,
    tables: [pattern],
    s3: options.s3,
    logger: log,
    signal: options.signal,
    what: `${name.schema}.${name.table} in ${live.display}`,
    why: 'before the repair',
    reason: `safety dump before pg-backup diff --apply of ${name.schema}.${name.table} from ${manifest.id}`,
    refused: (cause) => `repair refused, nothing was changed in ${live.display}: the safety dump of ${name.schema}.${name.table} failed (${cause})`,
  });
}

/**
 * Runs the repair script on the live database: `psql -X -q -v ON_ERROR_STOP=1 -f FILE`. The
 * script is one transaction (BEGIN … COMMIT); psql stops at the first error, and the session's
 * end rolls it back.
 * @throws CheckFailedError with psql's reason: the table is as it was.
 */
async function applyScript(psql: PgBinary, live: DatabaseConnection, file: string, signal?: AbortSignal): Promise<void> {
  const p = runPgProgram(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', file], { connection: live, signal, stdout: 'ignore' });
  try {
    await p.done;
  } catch (err) {
    signal?.throwIfAborted();
    throw new CheckFailedError(`the repair failed and was rolled back, ${live.display} is as it was: ${messageOf(err)}`);
  }
}

