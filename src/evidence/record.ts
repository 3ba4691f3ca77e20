import { signEnvelope, INTOTO_PAYLOAD_TYPE, type SigningKey } from './dsse.ts';
import { drillStatement, type DrillSubject } from './statement.ts';

/** What a drill needs to write its evidence: the subject it restored and, to sign, a key. */
export interface DrillEvidenceOptions {
  /** Undefined when the drill could not identify its backup: then no statement is written. */
  subject?: DrillSubject;
  /** Ed25519 key (`--sign-key`); without it the envelope is written unsigned (`signatures: []`). */
  signingKey?: SigningKey;
}

/**
 * The envelope file's text for a stored drill report: one JSON line holding the DSSE envelope of
 * the in-toto statement whose predicate is `reportText` parsed (the report exactly as stored).
 */
export function drillEnvelopeLine(reportText: string, evidence: DrillEvidenceOptions & { subject: DrillSubject }): string {
  const statement = drillStatement(evidence.subject, JSON.parse(reportText) as Record<string, unknown>);
  const envelope = signEnvelope(INTOTO_PAYLOAD_TYPE, Buffer.from(JSON.stringify(statement), 'utf8'), evidence.signingKey);
  return `${JSON.stringify(envelope)}\n`;
}
