import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import { listBackups, resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import { UsageError, messageOf } from '../errors.ts';
import { mapLimit } from '../map-limit.ts';
import type { Logger } from '../log.ts';
import { checkLocation, openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { checkDrillEvidence, expectedSubject, type EvidenceState, type DrillTrust } from './check.ts';
import { DRILL_PREDICATE_TYPE, canonicalJson } from './statement.ts';
import { listDrillReports } from './reports.ts';

/** Options of {@link verifyEvidence}. */
export interface EvidenceVerifyOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  filter?: BackupFilter;
  /** Only the drills of this backup (a key, an id, or `latest`). */
  backup?: string;
  /** Trusted Ed25519 public keys (`--public-key`). Exactly one of `trust` and `githubOwner`. */
  trust?: DrillTrust;
  /** `--github-owner`: check GitHub artifact attestations with `gh attestation verify --owner`. */
  githubOwner?: string;
  /** The `gh` program (default: `gh` on PATH). */
  ghProgram?: string;
  s3?: S3Settings;
  logger: Logger;
  signal?: AbortSignal;
}

/** The verdict on one drill report. */
export interface ReportEvidence {
  reportUri: string;
  service: string;
  environment: string;
  database: string;
  backupId: string;
  /** When the drill started (from its key), UTC ISO 8601. */
  at: string;
  /** The drill's own verdict, as its report says. */
  drillOk?: boolean;
  state: EvidenceState | 'not-attested';
  ok: boolean;
  /** `signed OK`, `UNSIGNED`, `FORGED (bad signature)`, `WRONG SUBJECT`, … */
  label: string;
  detail?: string;
}

/** The outcome of {@link verifyEvidence}: `ok` when every report checked is signed and about its backup. */
export interface EvidenceVerifyResult {
  ok: boolean;
  reason?: string;
  reports: ReportEvidence[];
}

/**
 * `pg-backup evidence verify`: for every drill report under `from` (narrowed by the filter and
 * `backup`), checks its evidence — with `trust`, the DSSE envelope beside it (check.ts: signature
 * by a trusted key, predicate equal to the stored report, subject equal to the backup's manifest
 * SHA-256); with `githubOwner`, a GitHub artifact attestation of the backup object found by
 * `gh attestation verify <downloaded object> --owner ORG --predicate-type <drill/v1>` whose
 * predicate equals the stored report. `ok` is false when any report is not valid, or when there
 * is none (no evidence is a failed check).
 * @throws UsageError for no or two trust sources, or `gh` missing with `githubOwner`.
 */
export async function verifyEvidence(options: EvidenceVerifyOptions): Promise<EvidenceVerifyResult> {
  if (Boolean(options.trust) === Boolean(options.githubOwner)) throw new UsageError('give --public-key FILE (drills signed with --sign-key) or --github-owner ORG (drills attested by actions/attest), one of them');
  const gh = options.githubOwner ? await findGh(options.ghProgram) : undefined;
  const storage = openStorage(options.from, options.s3);
  await checkLocation(storage); // a wrong --from is a usage error (exit 2), not "no evidence"
  const filter = options.filter ?? {};
  const backups = await listBackups(storage, filter);
  const manifestOf = new Map(backups.map((b) => [`${JSON.stringify([b.service, b.environment, b.database])}${b.id}`, b.manifestKey]));
  let refs = await listDrillReports(storage, filter);
  if (options.backup) {
    const wanted = await resolveBackup(storage, options.backup, filter, backups);
    refs = refs.filter((r) => r.backupId === wanted.manifest.id && r.service === wanted.manifest.service && r.environment === wanted.manifest.environment && r.database === wanted.manifest.database);
  }
  // Reports are checked 8 at a time (a few small GETs each; with --github-owner, one download
  // and one gh run each), kept in the listing's order.
  const reports = await mapLimit(refs, gh ? 2 : 8, async (ref): Promise<ReportEvidence> => {
    options.signal?.throwIfAborted();
    const base = { reportUri: storage.uri(ref.key), service: ref.service, environment: ref.environment, database: ref.database, backupId: ref.backupId, at: ref.at.toISOString() };
    let reportText: string;
    let drillOk: boolean | undefined;
    try {
      reportText = await storage.getText(ref.key);
      const parsed = JSON.parse(reportText) as { ok?: unknown };
      drillOk = typeof parsed.ok === 'boolean' ? parsed.ok : undefined;
    } catch (err) {
      return { ...base, state: 'unreadable', ok: false, label: 'UNREADABLE', detail: `the report cannot be read: ${messageOf(err).split('\n')[0]}` };
    }
    const manifestKey = manifestOf.get(`${JSON.stringify([ref.service, ref.environment, ref.database])}${ref.backupId}`);
    try {
      const expected = await expectedSubject(storage, reportText, manifestKey);
      const v = gh
        ? await attestedOnGitHub(storage, gh, options.githubOwner!, reportText, manifestKey, expected?.name, options.signal)
        : await checkDrillEvidence(storage, ref.key, reportText, expected, options.trust!);
      return { ...base, drillOk, state: v.state, ok: v.ok, label: v.label, ...(v.detail ? { detail: v.detail } : {}) };
    } catch (err) {
      if (err instanceof UsageError || options.signal?.aborted) throw err;
      return { ...base, drillOk, state: 'unreadable', ok: false, label: 'UNREADABLE', detail: messageOf(err).split('\n')[0] };
    }
  });
  const bad = reports.filter((r) => !r.ok);
  const scope = [filter.service, filter.environment, filter.database].filter(Boolean).join('/');
  const reason = reports.length === 0 ? `no drill report under ${storage.url}${scope ? ` for ${scope}` : ''}${options.backup ? ` of backup ${options.backup}` : ''}: nothing proves a restore` : bad.length ? `${bad.length} of ${reports.length} drill report${reports.length > 1 ? 's' : ''} not valid: ${bad.map((r) => `${r.reportUri} ${r.label}`).join('; ')}` : undefined;
  return { ok: !reason, ...(reason ? { reason } : {}), reports };
}

/** The `gh` program: `program` or `gh` on PATH, checked by running `gh --version`. @throws UsageError when it does not run. */
async function findGh(program = 'gh'): Promise<string> {
  const r = await execa(program, ['--version'], { reject: false, timeout: 20_000 });
  if (r.exitCode !== 0) throw new UsageError(`--github-owner verifies with "gh attestation verify", and the GitHub CLI (gh) is not installed here: install it (https://cli.github.com), or verify drills signed with --sign-key using --public-key`);
  return program;
}

/**
 * Keyless (Sigstore) verification through the GitHub CLI: the backup object is downloaded into a
 * temp directory (removed after), and `gh attestation verify FILE --owner OWNER --predicate-type
 * <drill/v1> --format json` checks the attestation GitHub stores for its SHA-256 (signed by a
 * workflow of OWNER); its statement's predicate must equal the stored report. Needs network
 * access to GitHub and `GH_TOKEN`; cannot run offline.
 */
async function attestedOnGitHub(storage: Storage, gh: string, owner: string, reportText: string, manifestKey: string | undefined, objectKey: string | undefined, signal?: AbortSignal): Promise<{ state: ReportEvidence['state']; ok: boolean; label: string; detail?: string }> {
  if (!manifestKey || !objectKey) return { state: 'unreadable', ok: false, label: 'UNREADABLE', detail: 'the backup is not stored (pruned, or a physical drill): gh attestation verify needs the object' };
  if (objectKey.endsWith('.dir')) return { state: 'unreadable', ok: false, label: 'UNREADABLE', detail: 'a directory-format backup is many files: gh attestation verify needs one (use --sign-key and --public-key for these)' };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pg-backup-attest-'));
  try {
    const file = path.join(dir, path.basename(objectKey));
    await pipeline(await storage.get(objectKey, { signal }), createWriteStream(file), { signal });
    const r = await execa(gh, ['attestation', 'verify', file, '--owner', owner, '--predicate-type', DRILL_PREDICATE_TYPE, '--format', 'json'], { reject: false, cancelSignal: signal, timeout: 300_000 });
    if (r.exitCode !== 0) return { state: 'not-attested', ok: false, label: 'NOT ATTESTED', detail: `gh attestation verify: ${String(r.stderr || r.stdout).split('\n').find((l) => l.trim()) ?? `exit ${r.exitCode}`}` };
    let results: { verificationResult?: { statement?: { predicateType?: string; predicate?: unknown } } }[];
    try {
      results = JSON.parse(String(r.stdout)) as typeof results;
    } catch {
      return { state: 'unreadable', ok: false, label: 'UNREADABLE', detail: 'gh attestation verify printed no JSON' };
    }
    const stored = canonicalJson(JSON.parse(reportText));
    const match = results.some((x) => x.verificationResult?.statement?.predicateType === DRILL_PREDICATE_TYPE && canonicalJson(x.verificationResult.statement.predicate) === stored);
    return match ? { state: 'signed', ok: true, label: 'signed OK', detail: `attested by a workflow of ${owner} (gh attestation verify)` } : { state: 'forged-report', ok: false, label: 'FORGED (report differs from its signed statement)', detail: `${results.length} attestation(s) of the backup verified, none has this report as predicate` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
