import { createHash } from 'node:crypto';
import os from 'node:os';
import { z } from 'zod';
import type { PhysicalBackup } from '../physical/driver.ts';

/**
 * Drill results as in-toto statements (in-toto attestation framework, Statement v1:
 * https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md). The subject is the
 * backup that was restored; the predicate is the drill report exactly as it is stored beside it
 * (so a verifier can compare the two). The statement travels in a DSSE envelope (dsse.ts),
 * stored as one JSON line at `<report stem>.intoto.jsonl`, the file name SLSA and
 * `slsa-verifier` use for attestation bundles.
 */

/** `_type` of an in-toto Statement v1. */
export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';

/**
 * The predicate type of a drill result: the drill report as pg-backup writes it (docs/evidence.md
 * describes its fields). Version 1; a change that removes or renames a field gets a new version.
 */
export const DRILL_PREDICATE_TYPE = 'https://pg-backup-actions.dev/drill/v1';

/** Suffix of the envelope file beside a drill report `<stem>.json`. */
export const EVIDENCE_SUFFIX = '.intoto.jsonl';

/** The key of the envelope beside the drill report `reportKey` (`…-drill-<stamp>.json` → `…-drill-<stamp>.intoto.jsonl`). */
export function evidenceKeyOf(reportKey: string): string {
  return `${reportKey.replace(/\.json$/, '')}${EVIDENCE_SUFFIX}`;
}

const HEX_DIGEST = /^[0-9a-f]+$/;

/** One subject: a name and a digest set (algorithm → lowercase hex). */
export const SubjectSchema = z.object({ name: z.string().min(1), digest: z.record(z.string(), z.string().regex(HEX_DIGEST)).refine((d) => Object.keys(d).length > 0, 'empty digest set') });

/** An in-toto Statement v1. */
export const StatementSchema = z.object({
  _type: z.literal(STATEMENT_TYPE),
  subject: z.array(SubjectSchema).min(1),
  predicateType: z.string().min(1),
  predicate: z.record(z.string(), z.unknown()),
});

/** A parsed statement. */
export type Statement = z.infer<typeof StatementSchema>;

/** The subject of a drill statement: what was restored, by name and SHA-256 (hex). */
export interface DrillSubject {
  name: string;
  digest: { sha256: string };
}

/**
 * The subject of a logical drill: the dump object's key relative to the location (the same in a
 * mirror) and the manifest's `object.sha256` (of the stored bytes, encrypted ones included; for
 * the directory format, the SHA-256 of its file list, manifest.ts). `gh attestation verify` and
 * `sha256sum` of the downloaded object find the same digest.
 */
export function logicalSubject(objectKey: string, sha256: string): DrillSubject {
  return { name: objectKey, digest: { sha256 } };
}

/** What a physical drill restored: the tool's backup record (src/physical/driver.ts). */
export type PhysicalBackupRecord = PhysicalBackup;

/**
 * The subject of a physical drill: `<tool>:<stanza>/<label>` and the SHA-256 of the backup record
 * as canonical JSON (keys sorted). A physical backup is a tree of files that pg-backup does not
 * hash, so this digest names the backup (label, type, times, WAL range), not its bytes:
 * `pgbackrest verify` (`--pgbackrest-verify`) is what checks those (docs/evidence.md).
 */
export function physicalSubject(tool: string, stanza: string, backup: PhysicalBackupRecord | undefined): DrillSubject {
  const record = backup ? { label: backup.label, type: backup.type, startedAt: backup.startedAt, stoppedAt: backup.stoppedAt, walStart: backup.walStart, walStop: backup.walStop } : { label: 'unknown' };
  return { name: `${tool}:${stanza}/${backup?.label ?? 'unknown'}`, digest: { sha256: createHash('sha256').update(canonicalJson(record)).digest('hex') } };
}

/** JSON with object keys sorted at every level and `undefined` members left out. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** A drill statement: `subject` restored, the stored report as predicate. */
export function drillStatement(subject: DrillSubject, report: Record<string, unknown>): Statement {
  return { _type: STATEMENT_TYPE, subject: [subject], predicateType: DRILL_PREDICATE_TYPE, predicate: report };
}

/** Where a drill ran, recorded in its report: the OS, CPU architecture, Node, and in GitHub Actions the run. */
export interface RunnerFacts {
  os: string;
  arch: string;
  node: string;
  /** In GitHub Actions: the repository, workflow, run id and attempt, the commit, and the run's URL. */
  github?: { repository?: string; workflow?: string; runId?: string; runAttempt?: string; sha?: string; runUrl?: string; runnerName?: string };
}

/** The {@link RunnerFacts} of this process. */
export function runnerFacts(env: NodeJS.ProcessEnv = process.env): RunnerFacts {
  const facts: RunnerFacts = { os: `${os.platform()} ${os.release()}`, arch: os.arch(), node: process.version };
  if (env.GITHUB_ACTIONS === 'true') {
    const server = env.GITHUB_SERVER_URL ?? 'https://github.com';
    facts.github = {
      repository: env.GITHUB_REPOSITORY,
      workflow: env.GITHUB_WORKFLOW_REF ?? env.GITHUB_WORKFLOW,
      runId: env.GITHUB_RUN_ID,
      runAttempt: env.GITHUB_RUN_ATTEMPT,
      sha: env.GITHUB_SHA,
      runUrl: env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID ? `${server}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}` : undefined,
      runnerName: env.RUNNER_NAME,
    };
  }
  return facts;
}
