import { z } from 'zod';
import { databaseEntries, listBackups, type BackupFilter } from '../backup/catalog.ts';
import { VerifyRecordSchema } from '../backup/proof.ts';
import { UsageError, messageOf } from '../errors.ts';
import { mapLimit } from '../map-limit.ts';
import { NotFoundError, type Storage } from '../storage/index.ts';
import { checkDrillEvidence, expectedSubject, type DrillTrust } from './check.ts';
import { EnvelopeSchema } from './dsse.ts';
import { evidenceKeyOf } from './statement.ts';
import { listDrillReports } from './reports.ts';

/**
 * The quarterly evidence report's data: per database, what the bucket proves about one calendar
 * quarter (UTC) — backups taken, verify results, drills with their RTO against the budget, RPO
 * and signature state, and failures with how long they stayed open — and a short mapping to the
 * controls auditors ask about (SOC 2 A1.2/A1.3, ISO/IEC 27001:2022 A.8.13/A.5.30). Rendered by
 * quarterly-render.ts as JSON, Markdown or a self-contained HTML page.
 */

/** A quarter: `2026-Q4` → [2026-10-01T00:00Z, 2027-01-01T00:00Z). */
export interface Quarter {
  label: string;
  start: Date;
  end: Date;
}

/**
 * Parses `YYYY-Qn` (n 1–4).
 * @throws UsageError for anything else.
 */
export function parseQuarter(value: string): Quarter {
  const m = /^(\d{4})-Q([1-4])$/.exec(value.trim());
  if (!m) throw new UsageError(`--quarter ${JSON.stringify(value)} is not a quarter: give YYYY-Qn, e.g. 2026-Q4`);
  const year = Number(m[1]);
  const q = Number(m[2]);
  return { label: `${year}-Q${q}`, start: new Date(Date.UTC(year, (q - 1) * 3, 1)), end: new Date(Date.UTC(year, q * 3, 1)) };
}

/** The signature state of a drill in the report. */
export type SignatureState = 'signed OK' | 'UNSIGNED' | 'FORGED (bad signature)' | 'FORGED (report differs from its signed statement)' | 'WRONG SUBJECT' | 'UNREADABLE' | 'signed (not checked)' | 'no statement';

/** One drill in the quarter. */
export interface DrillEvidence {
  /** UTC ISO 8601. */
  at: string;
  ok: boolean;
  reason?: string;
  kind: 'logical' | 'physical';
  backupId: string;
  rtoMs: number;
  /** The budget the drill ran with, else the report's `--rto-budget`; null without one. */
  rtoBudgetMs: number | null;
  /** RTO within the budget; null without a budget. */
  withinBudget: boolean | null;
  rpoMs: number | null;
  /** With a public key: the verdict of evidence verify; without: whether the statement carries a signature at all. */
  signature: SignatureState;
  /** The recipient whose identity opened an encrypted backup (an escrow-only drill names the escrow key). */
  openedBy?: string;
  reportKey: string;
}

/** A failure (a failed drill or verify) and when the next passing one closed it. */
export interface FailureWindow {
  kind: 'drill' | 'verify';
  /** UTC ISO 8601: the failed run. */
  openedAt: string;
  /** The next passing run of the same kind; undefined while still open. */
  closedAt?: string;
  /** From `openedAt` to `closedAt` (or to the end of the quarter / the report's time, whichever is first), in ms. */
  openMs: number;
  reason: string;
}

/** One database's (or stanza's) evidence. */
export interface DatabaseEvidence {
  service: string;
  environment: string;
  database: string;
  /** Backups taken in the quarter that are still stored (pruned ones are not seen). */
  backups: number;
  /** Verify records written in the quarter (each backup keeps its latest only). */
  verifies: { ok: number; failed: number };
  drills: DrillEvidence[];
  failures: FailureWindow[];
}

/** One row of the control mapping. */
export interface ControlRow {
  framework: string;
  control: string;
  /** What the control asks, in short (paraphrased; the standard's text governs). */
  asks: string;
  /** What this report shows for it, computed. */
  evidence: string;
  /** `met` when every database has what the row needs, else `gaps`. */
  state: 'met' | 'gaps';
}

/** The quarterly evidence report. */
export interface QuarterlyEvidence {
  quarter: string;
  /** UTC ISO 8601 bounds: [start, end). */
  start: string;
  end: string;
  generatedAt: string;
  from: string;
  /** How drill signatures were judged: `public key <keyid prefix>` or `not checked`. */
  signatureCheck: string;
  databases: DatabaseEvidence[];
  controls: ControlRow[];
  /** Records skipped (unreadable), one line each. */
  warnings: string[];
}

/** Options of {@link collectQuarterlyEvidence}. */
export interface QuarterlyOptions {
  quarter: Quarter;
  filter?: BackupFilter;
  /** Judge signatures with these keys; without, only their presence is shown. */
  trust?: DrillTrust;
  /** RTO budget for drills whose report records none, in ms. */
  rtoBudgetMs?: number;
  now?: Date;
}

const ReportSchema = z.looseObject({
  ok: z.boolean(),
  startedAt: z.string().optional(),
  reason: z.string().optional(),
  kind: z.string().optional(),
  rtoMs: z.number().nonnegative().optional(),
  rpoMs: z.number().optional(),
  budgets: z.looseObject({ maxRtoMs: z.number().positive().optional() }).optional(),
  decryption: z.looseObject({ openedBy: z.string().optional() }).optional(),
});

/**
 * Reads what the bucket holds about `options.quarter` (List and Get only): complete backups,
 * verify records, drill reports and their envelopes. Failures are computed from the sequence of
 * drills (and of verify records) per database, the previous quarter's included so that a failure
 * still open when the quarter began is counted.
 */
export async function collectQuarterlyEvidence(storage: Storage, options: QuarterlyOptions): Promise<QuarterlyEvidence> {
  const { quarter } = options;
  const now = options.now ?? new Date();
  const until = Math.min(quarter.end.getTime(), now.getTime());
  const inQuarter = (t: number) => t >= quarter.start.getTime() && t < quarter.end.getTime();
  const warnings: string[] = [];
  const future: string[] = [];
  const groups = new Map<string, DatabaseEvidence & { verifyRuns: { at: number; ok: boolean; reason?: string }[]; manifests: Map<string, string> }>();
  const groupOf = (l: { service: string; environment: string; database: string }) => {
    const k = JSON.stringify([l.service, l.environment, l.database]);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { service: l.service, environment: l.environment, database: l.database, backups: 0, verifies: { ok: 0, failed: 0 }, drills: [], failures: [], verifyRuns: [], manifests: new Map() }));
    return g;
  };

  // A run's globals are no database of the report (drilled with their run: drill --server).
  const entries = databaseEntries(await listBackups(storage, options.filter ?? {}), options.filter ?? {});
  for (const e of entries) {
    const g = groupOf(e);
    g.manifests.set(e.id, e.manifestKey);
    // A backup stamped after now is not evidence of anything yet (src/backup/clock.ts): not counted.
    if (e.startedAt.getTime() >= now.getTime()) future.push(storage.uri(e.manifestKey));
    else if (inQuarter(e.startedAt.getTime()) && e.objectKey) g.backups++;
  }
  await mapLimit(entries.filter((e) => e.verifyRecordKey), 8, async (e) => {
    try {
      const r = VerifyRecordSchema.parse(JSON.parse(await storage.getText(e.verifyRecordKey!)));
      const at = Date.parse(r.verifiedAt);
      if (at >= until) return;
      groupOf(e).verifyRuns.push({ at, ok: r.ok, reason: r.reason });
      if (inQuarter(at)) groupOf(e).verifies[r.ok ? 'ok' : 'failed']++;
    } catch (err) {
      warnings.push(`ignoring the verify record ${storage.uri(e.verifyRecordKey!)}: ${messageOf(err).split('\n')[0]}`);
    }
  });

  const allRefs = await listDrillReports(storage, options.filter ?? {});
  for (const r of allRefs) if (r.at.getTime() >= now.getTime()) future.push(storage.uri(r.key));
  const refs = allRefs.filter((r) => r.at.getTime() < until);
  const drills = await mapLimit(refs, 8, async (ref) => {
    const g = groupOf(ref);
    let text: string;
    let report: z.infer<typeof ReportSchema>;
    try {
      text = await storage.getText(ref.key);
      report = ReportSchema.parse(JSON.parse(text));
    } catch (err) {
      warnings.push(`ignoring the drill report ${storage.uri(ref.key)}: ${messageOf(err).split('\n')[0]}`);
      return undefined;
    }
    const at = ref.at.getTime();
    const signature = inQuarter(at) ? await signatureOf(storage, ref.key, text, g.manifests.get(ref.backupId), options.trust) : 'no statement';
    const rtoBudgetMs = report.budgets?.maxRtoMs ?? options.rtoBudgetMs ?? null;
    const rtoMs = Math.round(report.rtoMs ?? 0);
    const drill: DrillEvidence = {
      at: ref.at.toISOString(),
      ok: report.ok,
      ...(report.ok || !report.reason ? {} : { reason: report.reason }),
      kind: report.kind === 'physical' ? 'physical' : 'logical',
      backupId: ref.backupId,
      rtoMs,
      rtoBudgetMs,
      withinBudget: rtoBudgetMs === null ? null : rtoMs <= rtoBudgetMs,
      rpoMs: report.rpoMs === undefined ? null : Math.round(report.rpoMs),
      signature,
      ...(report.decryption?.openedBy ? { openedBy: report.decryption.openedBy } : {}),
      reportKey: ref.key,
    };
    return { g, at, drill };
  });

  if (future.length) warnings.push(`not counted, stamped after this report was made (a wrong clock or a forged record): ${future.slice(0, 5).join(', ')}${future.length > 5 ? ` and ${future.length - 5} more` : ''}`);
  for (const d of drills) if (d && inQuarter(d.at)) d.g.drills.push(d.drill);
  for (const g of groups.values()) {
    g.drills.sort((a, b) => (a.at < b.at ? -1 : 1));
    const runs = drills.filter((d) => d?.g === g).map((d) => ({ at: d!.at, ok: d!.drill.ok, reason: d!.drill.reason }));
    g.failures = [...failureWindows('drill', runs, quarter, until), ...failureWindows('verify', g.verifyRuns, quarter, until)].sort((a, b) => (a.openedAt < b.openedAt ? -1 : 1));
  }
  const databases = [...groups.values()]
    .map(({ verifyRuns: _v, manifests: _m, ...d }) => d)
    .filter((d) => d.backups || d.drills.length || d.verifies.ok || d.verifies.failed || d.failures.length)
    .sort((a, b) => (JSON.stringify([a.service, a.environment, a.database]) < JSON.stringify([b.service, b.environment, b.database]) ? -1 : 1));
  return {
    quarter: quarter.label,
    start: quarter.start.toISOString(),
    end: quarter.end.toISOString(),
    generatedAt: now.toISOString(),
    from: storage.url,
    signatureCheck: options.trust ? `public key ${options.trust.keys.map((k) => k.keyid.slice(0, 16)).join(', ')}` : 'not checked (no --public-key)',
    databases,
    controls: controlRows(databases, Boolean(options.trust)),
    warnings,
  };
}

async function signatureOf(storage: Storage, reportKey: string, text: string, manifestKey: string | undefined, trust: DrillTrust | undefined): Promise<SignatureState> {
  try {
    if (trust) return (await checkDrillEvidence(storage, reportKey, text, await expectedSubject(storage, text, manifestKey), trust)).label as SignatureState;
    const line = (await storage.getText(evidenceKeyOf(reportKey))).split('\n').find((l) => l.trim()) ?? '';
    return EnvelopeSchema.parse(JSON.parse(line)).signatures.length ? 'signed (not checked)' : 'UNSIGNED';
  } catch (err) {
    return err instanceof NotFoundError ? 'no statement' : 'UNREADABLE';
  }
}

/**
 * Failure windows from a sequence of runs (any order): each failed run after a passing one (or
 * first) opens a window, the next passing run closes it. Windows that overlap the quarter are
 * kept; `openMs` runs to the close, or to `until` while still open.
 */
export function failureWindows(kind: 'drill' | 'verify', runs: { at: number; ok: boolean; reason?: string }[], quarter: Quarter, until: number): FailureWindow[] {
  const out: FailureWindow[] = [];
  let open: { at: number; reason: string } | undefined;
  const close = (end: number | undefined) => {
    const stop = end ?? until;
    if (stop >= quarter.start.getTime() && open!.at < quarter.end.getTime()) {
      out.push({ kind, openedAt: new Date(open!.at).toISOString(), ...(end !== undefined ? { closedAt: new Date(end).toISOString() } : {}), openMs: Math.max(0, stop - open!.at), reason: open!.reason });
    }
    open = undefined;
  };
  for (const r of [...runs].sort((a, b) => a.at - b.at)) {
    if (!r.ok && !open) open = { at: r.at, reason: r.reason ?? 'no reason recorded' };
    else if (r.ok && open) close(r.at);
  }
  if (open) close(undefined);
  return out;
}

/** The control mapping, with what this report's figures show for each row. */
function controlRows(databases: DatabaseEvidence[], signaturesChecked: boolean): ControlRow[] {
  const n = databases.length;
  const backups = databases.reduce((s, d) => s + d.backups, 0);
  const withBackups = databases.filter((d) => d.backups > 0).length;
  const verifiesOk = databases.reduce((s, d) => s + d.verifies.ok, 0);
  const verifiesFailed = databases.reduce((s, d) => s + d.verifies.failed, 0);
  const drilled = databases.filter((d) => d.drills.some((x) => x.ok)).length;
  const drills = databases.flatMap((d) => d.drills);
  const signed = drills.filter((d) => d.signature === 'signed OK').length;
  const overBudget = drills.filter((d) => d.withinBudget === false).length;
  const open = databases.flatMap((d) => d.failures).filter((f) => !f.closedAt).length;
  const escrow = drills.filter((d) => d.openedBy).length;
  const of = (k: number) => `${k} of ${n} database${n === 1 ? '' : 's'}`;
  const signedText = signaturesChecked ? `; ${signed} of ${drills.length} drill results signed and verified` : '; signatures not checked';
  return [
    { framework: 'SOC 2', control: 'A1.2', asks: 'Backup processes and recovery infrastructure are implemented, operated and monitored to meet availability objectives.', evidence: `${backups} backups taken (${of(withBackups)}); ${verifiesOk} verify runs passed, ${verifiesFailed} failed`, state: withBackups === n && n > 0 ? 'met' : 'gaps' },
    { framework: 'SOC 2', control: 'A1.3', asks: 'Recovery plan procedures are tested.', evidence: `${drills.length} restore drills, ${of(drilled)} with a passing drill${signedText}`, state: drilled === n && n > 0 && (!signaturesChecked || signed === drills.length) ? 'met' : 'gaps' },
    { framework: 'ISO/IEC 27001:2022', control: 'A.8.13', asks: 'Backup copies are maintained and regularly tested in line with the backup policy.', evidence: `${of(withBackups)} backed up in the quarter; ${of(drilled)} restored and checked (row counts) by a drill`, state: withBackups === n && drilled === n && n > 0 ? 'met' : 'gaps' },
    { framework: 'ISO/IEC 27001:2022', control: 'A.5.30', asks: 'ICT readiness for business continuity is planned, maintained and tested against continuity objectives.', evidence: `${overBudget} drills over their RTO budget; ${open} failures still open; ${escrow} drills opened the backup with the recorded recipient key`, state: overBudget === 0 && open === 0 && drilled === n && n > 0 ? 'met' : 'gaps' },
  ];
}
