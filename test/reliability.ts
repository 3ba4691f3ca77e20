// Fault tests record what they observed — the fault, what the tool did, its exit code, the
// error line it printed and what the bucket held afterwards (from the same listing the test
// asserted) — as one JSON line per fault in the file named by PGB_RELIABILITY_LOG.
// `npm run reliability` (scripts/reliability.ts) runs the fault tests with that variable set and
// regenerates docs/reliability.md from the rows; test/unit/reliability-doc.test.ts fails when a
// fault test's id is missing from the doc. Without the variable, recording does nothing.
import { appendFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openMultipartUploads, root, s3Keys } from './helpers.ts';

/** One recorded fault: a row of docs/reliability.md. */
export interface FaultRecord {
  /** Stable id, a string literal at the call site (`faultId: 'net-stall'`): the doc check finds ids by that pattern. */
  faultId: string;
  /** The fault injected, for a reader. */
  fault: string;
  /** What the tool did, as the test asserted it. */
  outcome: string;
  /** The exit code observed (or a short description, e.g. `rejects` for an in-process call). */
  exit: number | string;
  /** What the test found left behind, usually from {@link leftBehind}. */
  left: string;
  /** `import.meta.url` of the test file. */
  file: string;
  /** The tool's last stderr line (its error message), if any; normalised to keep the doc stable. */
  message?: string;
  /** Wall-clock time of the faulty run in ms, if measured. */
  durationMs?: number;
  /** Extra figures (e.g. the soak's per-cycle peak RSS). */
  figures?: Record<string, unknown>;
}

/** The row as written to the log (file relative to test/, message normalised). */
export type RecordedFault = Omit<FaultRecord, 'file'> & { file: string };

/**
 * Normalises an error line for the doc: random test prefixes, database names, temp dirs,
 * backup ids and ports are replaced by `…`, so two runs of the suite produce the same text.
 */
export function normaliseMessage(line: string): string {
  return line
    .replace(/s3:\/\/[^\s/]+\/t-[a-z]+-[0-9a-f]{8}(\/\S*)?/g, 's3://…')
    .replace(/file:\/\/\S+/g, 'file://…')
    .replace(/\/tmp\/[^\s:'"]+/g, '/tmp/…')
    .replace(/\b([a-z][a-z_]*)_[0-9a-f]{6}\b/g, '$1_…')
    .replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:…')
    .replace(/\b\d{8}T\d{6}Z-[0-9a-f]{6}\b/g, '…')
    .replace(/\bsnapshot [0-9A-F-]+\b/g, 'snapshot …')
    .replace(/\b[0-9a-f]{64}\b/g, '<sha256>')
    .slice(0, 320);
}

/** The last line of a program's stderr (where the CLI puts its one error line). */
export function lastLine(stderr: string): string {
  return stderr.trim().split('\n').at(-1) ?? '';
}

/**
 * Appends `record` to the file named by `PGB_RELIABILITY_LOG` (JSON lines); a no-op when the
 * variable is unset. Call it only after the test's assertions passed, so a row is a passed test.
 */
export async function recordFault(record: FaultRecord): Promise<void> {
  const log = process.env.PGB_RELIABILITY_LOG;
  if (!log) return;
  const row: RecordedFault = {
    ...record,
    file: path.relative(path.join(root, 'test'), fileURLToPath(record.file)),
    message: record.message === undefined ? undefined : normaliseMessage(record.message),
  };
  await appendFile(log, `${JSON.stringify(row)}\n`);
}

/**
 * Describes what a storage location holds, from a real listing: for `s3://`, the objects under
 * the prefix and the open multipart uploads (ListMultipartUploads); for `file://`, the files.
 * E.g. `nothing; no open multipart upload`, `1 complete backup (object + manifest); no open
 * multipart upload`, `1 drill log (.log + .json)`.
 */
export async function leftBehind(location: string): Promise<string> {
  let keys = location.startsWith('s3://') ? await s3Keys(location) : await filesUnder(fileURLToPath(location));
  const uploads = location.startsWith('s3://') ? await openMultipartUploads(location) : [];
  // A run's globals (stored first, complete before the databases start) are told apart.
  const globals = keys.filter((k) => k.includes('/@globals/') && k.endsWith('.manifest.json')).length;
  keys = keys.filter((k) => !k.includes('/@globals/'));
  const manifests = keys.filter((k) => k.endsWith('.manifest.json'));
  const drills = keys.filter((k) => k.startsWith('drills/'));
  const objects = keys.filter((k) => !manifests.includes(k) && !drills.includes(k));
  const hasObject = (manifest: string) => objects.some((k) => k.startsWith(`${manifest.slice(0, -'.manifest.json'.length)}.`));
  const complete = manifests.filter(hasObject).length;
  const withoutObject = manifests.length - complete;
  const orphans = objects.filter((k) => !manifests.some((m) => k.startsWith(`${m.slice(0, -'.manifest.json'.length)}.`))).length;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const parts: string[] = [];
  if (complete) parts.push(`${plural(complete, 'complete backup')} (object + manifest)`);
  if (withoutObject) parts.push(`${plural(withoutObject, 'manifest')} whose object is missing`);
  if (orphans) parts.push(`${plural(orphans, 'object')} without a manifest (never listed)`);
  if (drills.length) parts.push(`the drill log (${drills.map((k) => path.extname(k)).sort().join(' + ')})`);
  if (!parts.length) parts.push('nothing');
  if (globals) parts.push(`the run's globals (${plural(globals, 'complete object')}, stored first)`);
  if (location.startsWith('s3://')) parts.push(uploads.length ? `${uploads.length} open multipart upload${uploads.length > 1 ? 's' : ''}` : 'no open multipart upload');
  return parts.join('; ');
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const name of await readdir(path.join(dir, rel))) {
      const p = path.join(rel, name);
      if ((await stat(path.join(dir, p))).isDirectory()) await walk(p);
      else out.push(p);
    }
  };
  await walk('');
  return out;
}
