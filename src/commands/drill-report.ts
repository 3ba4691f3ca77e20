import type { BackupFilter, ResolvedBackup } from '../backup/catalog.ts';
import { DRILL_STAMP, drillFolder, drillStamp, parseManifestKey } from '../backup/keys.ts';
import { clockCheck, isFuture, judgeTimes, parseKeyStamp, type ClockCheck } from '../backup/clock.ts';
import type { Manifest } from '../backup/manifest.ts';
import type { SmokeResult } from '../backup/smoke.ts';
import { messageOf } from '../errors.ts';
import { formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';
import type { Storage } from '../storage/index.ts';
import { TOOL } from '../version.ts';
import { drillEnvelopeLine, type DrillEvidenceOptions } from '../evidence/record.ts';
import { evidenceKeyOf, logicalSubject, runnerFacts } from '../evidence/statement.ts';
import type { SigningKey } from '../evidence/dsse.ts';
import type { DecryptionFacts } from '../evidence/recipients.ts';
import type { GlobalsReport } from '../postgres/globals-restore.ts';

// A drill's result and its record in the bucket: the report's shape (DrillResult), its keys,
// the log and report writes, and the history read back from them. Shared by the logical drill
// (drill.ts), the upgrade rehearsal (drill-majors.ts) and the physical drill (physical/drill.ts).

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
  /** The size of the archive the drill restored (its report's `archiveSizeBytes`); undefined in reports written before that field. */
  archiveSizeBytes?: number;
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
  /** The manifest's `archiveSizeBytes` of the backup drilled: with `rtoMs`, the restore speed a later drill's or restore's ETA is taken from (src/backup/progress-eta.ts). */
  archiveSizeBytes?: number;
  /** Extensions the archive creates. */
  extensions: string[];
  /** `server_version` the restore target reported (`17.10`). */
  serverVersion?: string;
  /** Upgrade rehearsal (`postgresVersions`): one result per server major, ascending. */
  majors?: MajorDrillResult[];
  /** For a client-side encrypted backup: the recipients of the identities given, and the one that opened it (src/evidence/recipients.ts). */
  decryption?: DecryptionFacts;
  /** The drill's budgets (`--max-rto`, `--max-rpo`) in ms, when given: the status and the evidence report judge RTO against them. */
  budgets?: { maxRtoMs?: number; maxRpoMs?: number };
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
  /** The DSSE envelope of the in-toto statement beside the report (`<report stem>.intoto.jsonl`, src/evidence/). */
  drillEvidenceUri?: string;
  /** The drill was stopped by its signal (SIGINT/SIGTERM, closed output) before it finished; `ok` is false. */
  cancelled?: boolean;
  /** The run's globals restored before the database (roles created, roles kept as they were): absent when the run has none. */
  globals?: GlobalsReport;
  /** The privileges check against the dump's record (owners, grants, default privileges, RLS, settings): absent when not run. */
  privileges?: { differences: string[] };
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
 * Writes the drill log (text) and report (JSON) under the drill folder. A storage failure here
 * (read-only credentials) is a warning: the drill's verdict stands.
 */
export async function archiveDrillLog(
  storage: Storage,
  options: { backup?: string; filter?: BackupFilter; signingKey?: SigningKey },
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
    const subject = backup ? logicalSubject(backup.objectKey, backup.manifest.object.sha256) : undefined;
    await writeDrillRecord(storage, keys, { ...result, manifest: undefined, backupId: backup?.manifest.id }, lines, { subject, signingKey: options.signingKey });
    if (subject) result.drillEvidenceUri = storage.uri(evidenceKeyOf(keys.report));
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
 * `drills/<service>/<environment>/<database>/<YYYY>-Q<n>/<id>-drill-<YYYYMMDDTHHMMSS.mmmZ>.{json,log}`
 * (`id`: the backup's id, or pgBackRest's backup label). Logical and physical drills share it.
 */
export function drillRecordKeys(labels: DrillLabels, id: string, startedAt: Date): { report: string; log: string } {
  const stem = `${drillFolder(labels, startedAt)}${id}-drill-${drillStamp(startedAt)}`;
  return { report: `${stem}.json`, log: `${stem}.log` };
}

/**
 * Writes a drill's report (JSON, with `tool` and `runner` added; it must carry `startedAt`, `ok`,
 * `rtoMs` and `backupId` for {@link drillHistory}), then, when `evidence.subject` is known, the
 * DSSE envelope of its in-toto statement (`<stem>.intoto.jsonl`, signed with
 * `evidence.signingKey` or unsigned; src/evidence/), then its log (text lines) at `keys`.
 * @throws the storage's error when a write fails (the caller decides whether that is a warning).
 */
export async function writeDrillRecord(storage: Storage, keys: { report: string; log: string }, report: object, lines: string[], evidence: DrillEvidenceOptions = {}): Promise<void> {
  // Each write has its own deadline: the verdict of a cancelled drill is still written, and a
  // store that does not answer cannot hold the drill's exit for longer than this.
  const deadline = () => AbortSignal.timeout(DRILL_RECORD_DEADLINE_MS);
  const reportText = `${JSON.stringify({ tool: TOOL, runner: runnerFacts(), ...report }, null, 2)}\n`;
  await storage.put(keys.report, reportText, { contentType: 'application/json', signal: deadline() });
  if (evidence.subject) {
    const line = drillEnvelopeLine(reportText, { ...evidence, subject: evidence.subject });
    await storage.put(evidenceKeyOf(keys.report), line, { contentType: 'application/x-ndjson', signal: deadline() });
  }
  await storage.put(keys.log, `${lines.join('\n')}\n`, { contentType: 'text/plain; charset=utf-8', signal: deadline() });
}

/** How long one write of the drill log or report may take (ms), cancelled drills included. */
export const DRILL_RECORD_DEADLINE_MS = 20_000;

/**
 * The newest `limit` drills of one database, read from their JSON reports under
 * `drills/<service>/<environment>/<database>/` (all quarters), newest first. A report whose time
 * is not believed (stamped later than `clock` allows, or its key stamp and `startedAt` apart:
 * src/backup/clock.ts) is left out: it would sit on top of the history for ever.
 */
export async function drillHistory(storage: Storage, labels: DrillLabels, limit: number, clock: ClockCheck = clockCheck()): Promise<DrillHistoryEntry[]> {
  const folder = drillFolder(labels, new Date()).replace(/\d{4}-Q\d\/$/, '');
  const keys: string[] = [];
  const reportKeyPattern = new RegExp(`-drill-(${DRILL_STAMP})\\.json$`);
  for await (const obj of storage.list(folder)) {
    const m = reportKeyPattern.exec(obj.key);
    const keyStamp = m ? parseKeyStamp(m[1]!) : undefined;
    if (m && !(keyStamp && isFuture(clock, keyStamp))) keys.push(obj.key);
  }
  // Seconds-only stamps (older records) sort as if at .000.
  const stamp = (k: string) => reportKeyPattern.exec(k)![1]!.replace(/(\d{6})Z$/, '$1.000Z');
  keys.sort((a, b) => (stamp(a) < stamp(b) ? 1 : stamp(a) > stamp(b) ? -1 : 0));
  // The reports are read at once (at most `limit` small GETs), kept in the keys' order.
  const entries = await Promise.all(
    keys.slice(0, limit).map(async (key): Promise<DrillHistoryEntry | undefined> => {
      try {
        const r = JSON.parse(await storage.getText(key)) as { startedAt?: string; ok?: boolean; rtoMs?: number; backupId?: string; archiveSizeBytes?: unknown };
        if (typeof r.startedAt === 'string' && judgeTimes(clock, { kind: 'drill report', keyStamp: parseKeyStamp(reportKeyPattern.exec(key)![1]!), at: r.startedAt })) return undefined;
        const archiveSizeBytes = typeof r.archiveSizeBytes === 'number' && Number.isFinite(r.archiveSizeBytes) && r.archiveSizeBytes > 0 ? r.archiveSizeBytes : undefined;
        return { startedAt: String(r.startedAt), ok: r.ok === true, rtoMs: Number(r.rtoMs ?? 0), backupId: r.backupId, reportKey: key, ...(archiveSizeBytes ? { archiveSizeBytes } : {}) };
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

