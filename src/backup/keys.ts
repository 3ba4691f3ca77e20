import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.ts';
import { SAFETY_FOLDER, isSafetyDumpKey, splitSafetyKey } from './safety.ts';

/**
 * Key layout, relative to the storage location's prefix:
 *
 * ```
 * <service>/<environment>/<database>/YYYY/MM/DD/<database>-<YYYYMMDDTHHMMSSZ>-<6 hex>.dump[.zst|.gz][.age]
 * <service>/<environment>/<database>/YYYY/MM/DD/<database>-<YYYYMMDDTHHMMSSZ>-<6 hex>.manifest.json
 * drills/<service>/<environment>/<database>/<YYYY>-Q<n>/<backup id>-drill-<YYYYMMDDTHHMMSS.mmmZ>.{log,json}
 * ```
 *
 * Dates are UTC. The random suffix makes two dumps started in the same second two backups.
 * Names are percent-encoded into one safe path segment each (see {@link encodeSegment}).
 */

/** The top-level folder that holds drill logs; not a valid service name. */
export const DRILLS_FOLDER = 'drills';

/**
 * Encodes a name (service, environment, database) as one key segment: bytes outside
 * `A-Z a-z 0-9 . _ -` become `%XX` (UTF-8), and a segment of only dots is fully encoded, so a
 * key can never gain a `/` or a `..` segment from a name.
 */
export function encodeSegment(name: string): string {
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9._-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (/^\.+$/.test(out)) out = out.replace(/\./g, '%2E');
  return out;
}

/** Reverses {@link encodeSegment}. */
export function decodeSegment(segment: string): string {
  return decodeURIComponent(segment);
}

/**
 * Validates a service or environment label.
 * @throws UsageError for an empty or over-long label, control characters, or the reserved service name `drills`.
 */
export function validateLabel(kind: 'service' | 'environment', value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!value || value.length > 100 || /[\u0000-\u001f\u007f/]/.test(value)) {
    throw new UsageError(`invalid ${kind} ${JSON.stringify(value)}: use 1-100 characters without "/" or control characters`);
  }
  if (kind === 'service' && value === DRILLS_FOLDER) throw new UsageError(`"${DRILLS_FOLDER}" is reserved for drill logs: choose another service name`);
  if (kind === 'service' && value === SAFETY_FOLDER) throw new UsageError(`"${SAFETY_FOLDER}" is reserved for the safety dumps of restore --clean: choose another service name`);
  return value;
}

/** `YYYYMMDDTHHMMSSZ` for a UTC instant. */
export function utcStamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The stamp in a drill record's key: UTC in ISO 8601 basic format with milliseconds
 * (`20261202T152328.123Z`), so two drills of one backup started within the same second (a
 * rehearsal, a retry, a fast failure) do not write over each other's record. Keys written before
 * 2026-12-02 carry seconds only; {@link DRILL_STAMP} matches both.
 */
export function drillStamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '');
}

/** A regular-expression source matching {@link drillStamp}'s stamps and the older seconds-only ones (`20261123T040000Z`). */
export const DRILL_STAMP = String.raw`\d{8}T\d{6}(?:\.\d{3})?Z`;

/**
 * The reserved database segment of a dump run's globals (roles, memberships, role settings and
 * passwords, tablespaces; `pg_dumpall --globals-only`):
 * `<service>/<environment>/@globals/YYYY/MM/DD/@globals-<stamp>-<6 hex>.sql[.zst|.gz][.age]` and its
 * `.manifest.json`. No database name can produce it: {@link encodeSegment} encodes `@` as `%40`.
 */
export const GLOBALS_DATABASE = '@globals';

/** True for the entry of a run's globals (see {@link GLOBALS_DATABASE}), whose key segment is never a database's. */
export function isGlobalsEntry(entry: { database: string; manifestKey: string }): boolean {
  // A database named "@globals" is stored under "%40globals": only the reserved segment is literal.
  return entry.database === GLOBALS_DATABASE && entry.manifestKey.split('/').includes(GLOBALS_DATABASE);
}

/**
 * A dump run's id: `run-<YYYYMMDDTHHMMSSZ>-<6 hex>`, recorded in the manifest of every database
 * dumped by one `dump` invocation and of its globals, so `restore --server` and `drill --server`
 * find the databases and the globals that belong together.
 */
export function newRunId(startedAt: Date, random: string = randomBytes(3).toString('hex')): string {
  return `run-${utcStamp(startedAt)}-${random}`;
}

/** The keys of one backup. */
export interface BackupKeys {
  /** `<database>-<stamp>-<suffix>`. */
  id: string;
  /** The dump object's key. */
  objectKey: string;
  manifestKey: string;
}

/** Builds the keys for a new backup started at `startedAt`. */
export function backupKeys(
  labels: { service: string; environment: string; database: string },
  startedAt: Date,
  suffix: string,
  random: string = randomBytes(3).toString('hex'),
): BackupKeys {
  // The globals' reserved segment is kept as is (see GLOBALS_DATABASE); every real name is encoded.
  const db = labels.database === GLOBALS_DATABASE ? GLOBALS_DATABASE : encodeSegment(labels.database);
  const iso = startedAt.toISOString();
  const dir = [encodeSegment(labels.service), encodeSegment(labels.environment), db, iso.slice(0, 4), iso.slice(5, 7), iso.slice(8, 10)].join('/');
  const id = `${db}-${utcStamp(startedAt)}-${random}`;
  return { id, objectKey: `${dir}/${id}${suffix}`, manifestKey: `${dir}/${id}.manifest.json` };
}

/** What a manifest key tells without reading the manifest. */
export interface ParsedManifestKey {
  service: string;
  environment: string;
  database: string;
  id: string;
  /** UTC start of the dump, to the second. */
  startedAt: Date;
  manifestKey: string;
  /** Common stem of the backup's objects: the manifest key without `.manifest.json`. */
  stem: string;
  /** Set for a safety dump of `restore --clean` (under `safety-dumps/`, or environment `pre-restore`; see safety.ts). */
  safetyDump?: true;
}

const MANIFEST_KEY = /^([^/]+)\/([^/]+)\/([^/]+)\/\d{4}\/\d{2}\/\d{2}\/([^/]+-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-[0-9a-f]{6})\.manifest\.json$/;

/** Parses a manifest key of the layout above; undefined for any other key. */
export function parseManifestKey(key: string): ParsedManifestKey | undefined {
  const { inFolder, rest } = splitSafetyKey(key);
  const m = MANIFEST_KEY.exec(rest);
  if (!m || m[1] === DRILLS_FOLDER) return undefined;
  try {
    const [, service, environment, database, id, y, mo, d, h, mi, s] = m as unknown as string[];
    return {
      service: decodeSegment(service!),
      environment: decodeSegment(environment!),
      database: decodeSegment(database!),
      id: id!,
      startedAt: new Date(Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +s!)),
      manifestKey: key,
      stem: key.slice(0, -'.manifest.json'.length),
      ...(isSafetyDumpKey(inFolder, decodeSegment(environment!)) ? { safetyDump: true as const } : {}),
    };
  } catch {
    return undefined; // a segment that is not valid percent-encoding
  }
}

/** `drills/<service>/<environment>/<database>/<YYYY>-Q<n>/` for a drill run at `at`. */
export function drillFolder(labels: { service: string; environment: string; database: string }, at: Date): string {
  const quarter = Math.floor(at.getUTCMonth() / 3) + 1;
  return `${DRILLS_FOLDER}/${encodeSegment(labels.service)}/${encodeSegment(labels.environment)}/${encodeSegment(labels.database)}/${at.getUTCFullYear()}-Q${quarter}/`;
}
