import { z } from 'zod';
import { parseManifest } from '../backup/manifest.ts';
import { UsageError, messageOf } from '../errors.ts';
import { NotFoundError, type Storage } from '../storage/index.ts';
import { EnvelopeSchema, INTOTO_PAYLOAD_TYPE, loadPublicKey, verifyEnvelope, type VerifyingKey } from './dsse.ts';
import { DRILL_PREDICATE_TYPE, StatementSchema, canonicalJson, evidenceKeyOf, logicalSubject, physicalSubject, type DrillSubject, type PhysicalBackupRecord } from './statement.ts';

/**
 * The check of one drill report's evidence: its envelope (`<stem>.intoto.jsonl`) carries a
 * signature by a trusted key, over an in-toto statement whose predicate is the stored report and
 * whose subject is the backup the report names. Used by `evidence verify`, and by `status` and
 * `prune` with `--require-signed-drills` (only reports that pass count as drills and proof).
 */

/** The verdict on one report's evidence. */
export type EvidenceState = 'signed' | 'unsigned' | 'forged-signature' | 'forged-report' | 'wrong-subject' | 'unreadable';

/** {@link checkDrillEvidence}'s answer: `ok` only for `signed`. */
export interface EvidenceVerdict {
  state: EvidenceState;
  ok: boolean;
  /** `signed OK`, `UNSIGNED`, `FORGED (bad signature)`, `FORGED (report differs from its signed statement)`, `WRONG SUBJECT`, `UNREADABLE`. */
  label: string;
  /** One line more, e.g. the digests that differ, or that the backup is no longer stored. */
  detail?: string;
  /** The id of the key whose signature verified. */
  keyid?: string;
}

/** What counts as a valid drill signature: Ed25519 public keys (`--public-key`). */
export interface DrillTrust {
  keys: VerifyingKey[];
}

const LABELS: Record<EvidenceState, string> = {
  signed: 'signed OK',
  unsigned: 'UNSIGNED',
  'forged-signature': 'FORGED (bad signature)',
  'forged-report': 'FORGED (report differs from its signed statement)',
  'wrong-subject': 'WRONG SUBJECT',
  unreadable: 'UNREADABLE',
};

function verdict(state: EvidenceState, detail?: string, keyid?: string): EvidenceVerdict {
  return { state, ok: state === 'signed', label: LABELS[state], ...(detail ? { detail } : {}), ...(keyid ? { keyid } : {}) };
}

/** The fields of a drill report that name what it restored. */
const ReportNamesSchema = z.looseObject({
  backupId: z.string().optional(),
  kind: z.string().optional(),
  tool: z.unknown().optional(),
  scope: z.string().optional(),
  backup: z.looseObject({ label: z.string(), type: z.string(), startedAt: z.string(), stoppedAt: z.string(), walStart: z.string().optional(), walStop: z.string().optional() }).optional(),
});

/**
 * The subject a drill report's statement must name: for a logical drill, the dump object and the
 * manifest's SHA-256 (the manifest at `manifestKey`, read and checked to belong to that backup);
 * for a physical drill, the tool's backup record in the report (statement.ts, physicalSubject).
 * @returns undefined when the backup is no longer stored (pruned): the subject cannot be checked.
 * @throws when the manifest exists but cannot be read or parsed.
 */
export async function expectedSubject(storage: Storage, reportText: string, manifestKey: string | undefined): Promise<DrillSubject | undefined> {
  const report = ReportNamesSchema.parse(JSON.parse(reportText));
  if (report.kind === 'physical') {
    return physicalSubject(typeof report.tool === 'string' ? report.tool : 'pgbackrest', report.scope ?? 'unknown', report.backup as PhysicalBackupRecord | undefined);
  }
  if (!manifestKey) return undefined;
  let text: string;
  try {
    text = await storage.getText(manifestKey);
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
  const manifest = parseManifest(text, manifestKey);
  const dir = manifestKey.slice(0, manifestKey.lastIndexOf('/') + 1);
  return logicalSubject(dir + manifest.object.name, manifest.object.sha256);
}

/**
 * Checks the evidence of the drill report at `reportKey` (its text `reportText`, as stored):
 * 1. the envelope beside it exists and has a signature (else `unsigned`);
 * 2. a signature verifies with a trusted key over DSSE's PAE (else `forged-signature`);
 * 3. the payload is an in-toto statement of {@link DRILL_PREDICATE_TYPE} (else `unreadable`);
 * 4. its predicate equals the stored report, compared as canonical JSON (else `forged-report`);
 * 5. its subject equals `expected` (else `wrong-subject`); with `expected` undefined (a pruned
 *    backup) this step is skipped and said in `detail`.
 * Never throws for bad evidence; a storage error other than a missing envelope is thrown.
 */
export async function checkDrillEvidence(storage: Storage, reportKey: string, reportText: string, expected: DrillSubject | undefined, trust: DrillTrust): Promise<EvidenceVerdict> {
  let line: string;
  try {
    line = (await storage.getText(evidenceKeyOf(reportKey))).split('\n').find((l) => l.trim()) ?? '';
  } catch (err) {
    if (err instanceof NotFoundError) return verdict('unsigned', 'no signed statement beside the report');
    throw err;
  }
  let envelope;
  try {
    envelope = EnvelopeSchema.parse(JSON.parse(line));
  } catch (err) {
    return verdict('unreadable', `the envelope is not a DSSE envelope: ${err instanceof z.ZodError ? err.issues[0]!.message : messageOf(err)}`);
  }
  const { state, payload, keyid } = verifyEnvelope(envelope, trust.keys);
  if (state === 'unsigned') return verdict('unsigned', 'the statement carries no signature');
  if (state === 'bad-signature') return verdict('forged-signature', `no signature verifies with the trusted key${trust.keys.length > 1 ? 's' : ''}`);
  if (envelope.payloadType !== INTOTO_PAYLOAD_TYPE) return verdict('unreadable', `payload type ${JSON.stringify(envelope.payloadType)} is not ${INTOTO_PAYLOAD_TYPE}`);
  let statement;
  try {
    statement = StatementSchema.parse(JSON.parse(payload.toString('utf8')));
  } catch (err) {
    return verdict('unreadable', `the payload is not an in-toto statement: ${err instanceof z.ZodError ? err.issues[0]!.message : messageOf(err)}`);
  }
  if (statement.predicateType !== DRILL_PREDICATE_TYPE) return verdict('unreadable', `predicate type ${JSON.stringify(statement.predicateType)} is not ${DRILL_PREDICATE_TYPE}`);
  let stored: unknown;
  try {
    stored = JSON.parse(reportText);
  } catch {
    return verdict('forged-report', 'the stored report is not JSON');
  }
  if (canonicalJson(statement.predicate) !== canonicalJson(stored)) return verdict('forged-report', 'the stored report was changed after it was signed', keyid);
  if (!expected) return verdict('signed', 'the backup is no longer stored: its digest was not compared', keyid);
  const named = statement.subject.find((s) => s.digest.sha256 === expected.digest.sha256);
  if (!named) return verdict('wrong-subject', `the statement is about sha256 ${statement.subject.map((s) => s.digest.sha256 ?? '?').join(', ')}, the backup's manifest says ${expected.digest.sha256}`, keyid);
  if (named.name !== expected.name) return verdict('wrong-subject', `the statement names ${named.name}, the backup is ${expected.name}`, keyid);
  return verdict('signed', undefined, keyid);
}

/**
 * For `status` and `prune` with `--require-signed-drills`: whether the drill report `reportKey`
 * (text `reportText`) of the backup whose manifest is `manifestKey` counts, and if not, a warning
 * line naming it as forged, unsigned or about another backup.
 */
export async function signedDrillCounts(storage: Storage, reportKey: string, reportText: string, manifestKey: string | undefined, trust: DrillTrust): Promise<{ counts: boolean; warning?: string }> {
  let v: EvidenceVerdict;
  try {
    v = await checkDrillEvidence(storage, reportKey, reportText, await expectedSubject(storage, reportText, manifestKey), trust);
  } catch (err) {
    return { counts: false, warning: `not counted: the drill report ${storage.uri(reportKey)} could not be checked: ${messageOf(err).split('\n')[0]}` };
  }
  if (v.ok) return { counts: true };
  return { counts: false, warning: `not counted: the drill report ${storage.uri(reportKey)} is ${v.label}${v.detail ? `: ${v.detail}` : ''}` };
}

/**
 * The trust of `--require-signed-drills --public-key FILE` (status, prune): undefined when not
 * asked for.
 * @throws UsageError when one comes without the other, or the key cannot be read.
 */
export function requireSignedDrills(required: boolean | undefined, publicKeyFile: string | undefined): DrillTrust | undefined {
  if (!required && !publicKeyFile) return undefined;
  if (!required) throw new UsageError('--public-key belongs to --require-signed-drills: add it to count only drills signed with that key');
  if (!publicKeyFile) throw new UsageError('--require-signed-drills needs --public-key FILE (the Ed25519 public key of the drill\'s --sign-key)');
  return { keys: [loadPublicKey(publicKeyFile)] };
}
