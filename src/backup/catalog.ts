import { CheckFailedError, UsageError } from '../errors.ts';
import { NotFoundError, checkLocation, type Storage } from '../storage/index.ts';
import { isBackupIdRef, manifestKeyOfId } from './backup-id.ts';
import { clockCheck, isFuture, judgeTimes, type ClockCheck, type TimeProblem } from './clock.ts';
import { GLOBALS_DATABASE, encodeSegment, isGlobalsEntry, parseManifestKey, type ParsedManifestKey } from './keys.ts';
import { parseManifest, type Manifest } from './manifest.ts';
import { VerifyRecordSchema, verifyRecordKey } from './proof.ts';
import { mapLimit } from '../map-limit.ts';
import { storedParts } from './parts.ts';
import { parseBackupObjectKey, type BackupStatus } from './retention.ts';
import { SAFETY_PREFIX } from './safety.ts';

/** Narrows a listing to one service, environment and/or database. */
export interface BackupFilter {
  service?: string;
  environment?: string;
  database?: string;
}

/** A complete backup (its manifest exists) as a listing shows it. */
export interface BackupEntry extends ParsedManifestKey {
  /** The dump object's key, if the listing holds it. */
  objectKey: string | undefined;
  /** The dump object's stored size in bytes, if the listing holds it. */
  sizeBytes: number | undefined;
  /**
   * Every object of the backup the listing holds (manifest, dump object, `<id>.dir/` files,
   * sidecars, verify record): key → stored size in bytes.
   */
  objects: Map<string, number>;
  /** The key of the backup's verify record (`<stem>.verify.json`, see proof.ts), if the listing holds one. */
  verifyRecordKey: string | undefined;
  /**
   * The verdict on its times once {@link judgeNewest} judged it: `ok`, or why they are not
   * believed (`future`, `misdated`; see clock.ts). Absent: not judged (an older backup behind a
   * believed one, whose time cannot make it win anything).
   */
  time?: TimeProblem | 'ok';
  /** Its manifest as {@link judgeNewest} read it (saves a second read). */
  resolved?: ResolvedBackup;
}

/** Whether an entry's times are believed: judged `ok`, or not judged (see {@link BackupEntry.time}). */
export function isBelieved(entry: BackupEntry): boolean {
  return entry.time === undefined || entry.time === 'ok';
}

/**
 * Judges the times of the newest backups of each service/environment/database in `entries`
 * (newest first, as {@link listBackups} returns them), in place: a backup whose key is stamped
 * later than `clock` allows is marked `future` without a read; the newest one that is not has
 * its manifest read and its `startedAt`/`finishedAt` judged against the clock and its key
 * stamp ({@link judgeTimes}); when it is not believed either, the next one is read, and so on
 * until one is. So the backup every decision on time takes (latest, freshness) is a believed
 * one, at the cost of one manifest read per group (plus one per untrusted backup). A manifest
 * that cannot be read ends its group's walk unjudged: that is not a clock matter, and the
 * caller's own read reports it. Idempotent; 8 groups at a time. Needs Get.
 * @throws UsageError when the credentials may not read (exit 2); other storage errors as they come.
 */
export async function judgeNewest(storage: Storage, entries: BackupEntry[], clock: ClockCheck): Promise<void> {
  const groups = new Map<string, BackupEntry[]>();
  for (const e of entries) {
    const k = JSON.stringify([e.service, e.environment, e.database]);
    groups.set(k, [...(groups.get(k) ?? []), e]);
  }
  await mapLimit([...groups.values()], 8, async (group) => {
    for (const e of group) {
      if (e.time === 'ok') return;
      if (e.time) continue;
      if (isFuture(clock, e.startedAt)) {
        e.time = judgeTimes(clock, { kind: 'backup', keyStamp: e.startedAt })!;
        continue;
      }
      let resolved: ResolvedBackup;
      try {
        resolved = await readManifest(storage, e.manifestKey);
      } catch (err) {
        if (err instanceof CheckFailedError || err instanceof NotFoundError) return;
        throw err;
      }
      e.resolved = resolved;
      e.time = judgeTimes(clock, { kind: 'backup', keyStamp: e.startedAt, at: resolved.manifest.startedAt, finishedAt: resolved.manifest.finishedAt }) ?? 'ok';
      if (e.time === 'ok') return;
    }
  });
}

/** The key prefix under which a filter's backups live (`<service>/<environment>/<database>/`, as far as given). */
export function filterPrefix(filter: BackupFilter): string {
  let prefix = '';
  if (filter.service) {
    prefix = `${encodeSegment(filter.service)}/`;
    if (filter.environment) {
      prefix += `${encodeSegment(filter.environment)}/`;
      if (filter.database) prefix += `${encodeSegment(filter.database)}/`;
    }
  }
  return prefix;
}

/**
 * Lists complete backups — those whose manifest exists — newest first, reading the bucket
 * page by page (1 000 keys a request). Objects without a manifest (a dump that failed or is
 * still uploading) are skipped. Needs List permission only; manifests are not read (see
 * {@link checkBackups} for that). Safety dumps of `restore --clean` (safety.ts) are left out, or,
 * with `options.safetyDumps`, are the only ones listed.
 */
export async function listBackups(storage: Storage, filter: BackupFilter = {}, options: { safetyDumps?: boolean } = {}): Promise<BackupEntry[]> {
  const manifests: ParsedManifestKey[] = [];
  const objects = new Map<string, { key: string; sizeBytes: number }>();
  const byStem = new Map<string, Map<string, number>>();
  const wanted = (m: ParsedManifestKey) => Boolean(m.safetyDump) === Boolean(options.safetyDumps);
  for await (const obj of listPrefixes(storage, filter, options.safetyDumps)) {
    const stem = parseBackupObjectKey(obj.key)?.stem;
    if (stem) {
      const all = byStem.get(stem) ?? new Map<string, number>();
      all.set(obj.key, obj.sizeBytes);
      byStem.set(stem, all);
    }
    const parsed = parseManifestKey(obj.key);
    if (parsed) {
      if (
        wanted(parsed) &&
        (!filter.service || parsed.service === filter.service) &&
        (!filter.environment || parsed.environment === filter.environment) &&
        (!filter.database || parsed.database === filter.database)
      ) {
        manifests.push(parsed);
      }
      continue;
    }
    const dump = /^(.*)\.(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?$/.exec(obj.key);
    if (dump) objects.set(dump[1]!, { key: obj.key, sizeBytes: obj.sizeBytes });
    const dirFile = /^(.*)\.dir\/[^/]+$/.exec(obj.key);
    if (dirFile) {
      const prev = objects.get(dirFile[1]!);
      objects.set(dirFile[1]!, { key: `${dirFile[1]}.dir`, sizeBytes: (prev?.sizeBytes ?? 0) + obj.sizeBytes });
    }
  }
  return manifests
    .map((m) => {
      const object = objects.get(m.stem);
      const all = byStem.get(m.stem) ?? new Map<string, number>();
      const record = verifyRecordKey(m.manifestKey);
      return { ...m, objectKey: object?.key, sizeBytes: object?.sizeBytes, objects: all, verifyRecordKey: all.has(record) ? record : undefined };
    })
    .sort((a, b) => b.startedAt.getTime() - a.startedAt.getTime() || (a.manifestKey < b.manifestKey ? 1 : -1));
}

/**
 * The objects a listing reads: under the filter's prefix, and for safety dumps under
 * `safety-dumps/` + that prefix as well (those of the older `<service>/pre-restore/` layout lie
 * under the filter's prefix). See safety.ts.
 */
async function* listPrefixes(storage: Storage, filter: BackupFilter, safetyDumps: boolean | undefined) {
  if (safetyDumps) yield* storage.list(`${SAFETY_PREFIX}${filterPrefix(filter)}`);
  for await (const obj of storage.list(filterPrefix(filter))) if (!safetyDumps || !obj.key.startsWith(SAFETY_PREFIX)) yield obj;
}

/**
 * The database backups of a listing: a run's globals (`@globals`, keys.ts) left out, unless the
 * filter asks for them by name (`--database @globals`). What `latest` and freshness look at: the
 * globals are never a database's newest backup.
 */
export function databaseEntries<T extends { database: string; manifestKey: string }>(entries: T[], filter: BackupFilter = {}): T[] {
  return filter.database === GLOBALS_DATABASE ? entries : entries.filter((e) => !isGlobalsEntry(e));
}

/** A backup chosen for verify, drill or restore, with its manifest read and validated. */
export interface ResolvedBackup {
  manifestKey: string;
  objectKey: string;
  manifest: Manifest;
}

/** Options of {@link resolveBackup}. */
export interface ResolveOptions {
  /** Now and the tolerance records are judged against (`--max-clock-skew`). Default: this machine's clock, 10 min. */
  clock?: ClockCheck;
  /**
   * Told one line per backup whose time is not believed: each newer one `latest` passed over,
   * or the backup named by key (which is taken as asked).
   */
  warn?: (line: string) => void;
}

/** `latest` named more than one service/environment/database: a {@link UsageError} (exit 2). */
export class AmbiguousLatestError extends UsageError {}

/**
 * Finds a backup by reference: `latest` (the newest complete backup matching the filter whose
 * times are believed, see {@link judgeNewest}), a backup id (the manifest's `id`, see
 * backup-id.ts: looked up in the filter's listing), a manifest key, a dump object key, or the
 * full URI of either under this storage location. A backup stamped in the future or misdated is
 * never `latest` (each one passed over is told to `options.warn`); one named by key or id is
 * taken as asked (with a warning). `latest` must mean one database: when the believed backups in
 * scope belong to more than one service/environment/database, it is refused. `listing` (the
 * result of {@link listBackups} with the same filter) saves a second listing.
 * @throws UsageError when the location does not exist, no backup matches the reference, or
 * `latest` could mean several databases ({@link AmbiguousLatestError}, naming the candidates).
 * @throws CheckFailedError when the manifest is missing, unreadable or invalid, or when every
 * backup in scope is stamped in the future or misdated.
 */
export async function resolveBackup(storage: Storage, ref: string | undefined, filter: BackupFilter = {}, listing?: BackupEntry[], options: ResolveOptions = {}): Promise<ResolvedBackup> {
  await checkLocation(storage);
  const clock = options.clock ?? clockCheck();
  const wanted = (ref ?? 'latest').trim() || 'latest';
  let manifestKey: string;
  if (wanted === 'latest') {
    // A run's globals are never a database's "latest" (unless asked for by --database @globals).
    const entries = databaseEntries(listing ?? (await listBackups(storage, filter)), filter);
    if (!entries[0]) {
      const scope = [filter.service, filter.environment, filter.database].filter(Boolean).join('/');
      throw new UsageError(`no complete backup found under ${storage.url}${scope ? ` for ${scope}` : ''}: run a dump first or check --from`);
    }
    await judgeNewest(storage, entries, clock);
    const believed = entries.filter(isBelieved);
    const newest = believed[0];
    if (!newest) {
      const first = entries[0].time as TimeProblem;
      throw new CheckFailedError(`no backup under ${storage.url} can be "latest": all ${entries.length} are stamped in the future or misdated (the newest, ${storage.uri(entries[0].manifestKey)}, is ${first.problem}); check the clock of the runner that dumps, or give --backup KEY`);
    }
    assertOneDatabase(storage, believed);
    for (const e of entries) {
      if (e === newest) break;
      if (!isBelieved(e)) options.warn?.(`"latest" passes over ${storage.uri(e.manifestKey)}: ${(e.time as TimeProblem).problem}`);
    }
    if (newest.resolved) return newest.resolved;
    manifestKey = newest.manifestKey;
  } else {
    let key = isBackupIdRef(wanted) ? manifestKeyOfId(storage.url, wanted, listing ?? (await listBackups(storage, filter)), filter) : wanted;
    if (/^[a-z0-9]+:\/\//.test(key)) key = storage.keyOf(key) ?? key;
    if (/^[a-z0-9]+:\/\//.test(key)) throw new UsageError(`backup ${wanted} is not under ${storage.url}: give a key relative to --from, or "latest"`);
    manifestKey = key.endsWith('.manifest.json') ? key : key.replace(/\.(?:(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?|dir\/?)$/, '') + '.manifest.json';
    const parsed = parseManifestKey(manifestKey);
    if (!parsed) throw new UsageError(`${JSON.stringify(wanted)} is not a backup key: use a key printed by "pg-backup list", or "latest"`);
    const backup = await readManifest(storage, manifestKey);
    const untrusted = judgeTimes(clock, { kind: 'backup', keyStamp: parsed.startedAt, at: backup.manifest.startedAt, finishedAt: backup.manifest.finishedAt });
    if (untrusted) options.warn?.(`${storage.uri(manifestKey)} is ${untrusted.problem}; taken as asked`);
    return backup;
  }
  return readManifest(storage, manifestKey);
}

/**
 * Refuses a listing whose backups belong to more than one service/environment/database: `latest`
 * would silently pick whichever database dumped last.
 * @throws AmbiguousLatestError naming up to 5 candidates and the flags that tell them apart.
 */
export function assertOneDatabase(storage: Storage, entries: BackupEntry[]): void {
  const groups = [...new Set(entries.map((e) => `${e.service}/${e.environment}/${e.database}`))];
  if (groups.length <= 1) return;
  const flags = (['service', 'environment', 'database'] as const).filter((f) => new Set(entries.map((e) => e[f])).size > 1).map((f) => `--${f}`);
  const shown = groups.slice(0, 5).join(', ') + (groups.length > 5 ? ` and ${groups.length - 5} more` : '');
  throw new AmbiguousLatestError(`"latest" is ambiguous: ${storage.url} holds backups of ${groups.length} databases (${shown}); choose one with ${flags.join(' and ')}, or give --backup KEY from "pg-backup list"`);
}

/**
 * Reads and validates the manifest at `manifestKey` and checks it belongs there.
 * @throws CheckFailedError when it is missing, not JSON, invalid, or another backup's.
 */
async function readManifest(storage: Storage, manifestKey: string): Promise<ResolvedBackup> {
  let text: string;
  try {
    text = await storage.getText(manifestKey);
  } catch (err) {
    if (err instanceof NotFoundError) throw new CheckFailedError(`manifest ${storage.uri(manifestKey)} is missing: the backup is incomplete (its dump failed or is still running)`);
    throw err;
  }
  const manifest = parseManifest(text, manifestKey);
  const dir = manifestKey.slice(0, manifestKey.lastIndexOf('/') + 1);
  const expectedId = manifestKey.slice(dir.length, -'.manifest.json'.length);
  if (manifest.id !== expectedId || !manifest.object.name.startsWith(`${expectedId}.`)) {
    throw new CheckFailedError(`manifest ${manifestKey} belongs to another backup (${manifest.id}): it was copied or overwritten`);
  }
  return { manifestKey, objectKey: dir + manifest.object.name, manifest };
}

export type { BackupStatus };

/** The health of one backup ({@link checkBackup}). */
export interface BackupHealth {
  status: BackupStatus;
  /** Why it is not ok, one line. */
  problem?: string;
  /** The manifest, when it could be read and is valid. */
  manifest?: Manifest;
}

/**
 * Compares the stored objects of `backup` (the dump object, or each file of a directory
 * archive) with `sizes` (key → stored size in bytes, from a listing).
 * @returns undefined when all are there with the manifest's sizes, else the status and why.
 */
export function storedObjectProblem(storage: Storage, backup: ResolvedBackup, sizes: Map<string, number>): { status: 'missing' | 'damaged'; problem: string } | undefined {
  const m = backup.manifest;
  const where = storage.uri(backup.objectKey);
  if (m.format === 'directory' && !m.files?.length) {
    const prefix = `${backup.objectKey}/`;
    const found = [...sizes].filter(([k]) => k.startsWith(prefix));
    if (found.length === 0) return { status: 'missing', problem: `the archive directory ${where} is missing` };
    const total = found.reduce((n, [, s]) => n + s, 0);
    return total === m.object.sizeBytes ? undefined : { status: 'damaged', problem: `the archive directory ${where} holds ${total} bytes, the manifest says ${m.object.sizeBytes} (truncated or replaced)` };
  }
  const parts = storedParts(backup);
  const absent = parts.filter((p) => !sizes.has(p.key));
  if (m.format !== 'directory') {
    if (absent.length) return { status: 'missing', problem: `the dump object ${where} is missing` };
  } else if (absent.length === parts.length) {
    return { status: 'missing', problem: `the archive directory ${where} is missing (0 of its ${parts.length} files)` };
  } else if (absent.length) {
    return { status: 'damaged', problem: `${absent.length} of the ${parts.length} files of ${where} are missing (${absent[0]!.label ?? absent[0]!.key}${absent.length > 1 ? ', …' : ''})` };
  }
  for (const p of parts) {
    const size = sizes.get(p.key)!;
    if (size !== p.sizeBytes) return { status: 'damaged', problem: `${storage.uri(p.key)} is ${size} bytes, the manifest says ${p.sizeBytes} (truncated or replaced)` };
  }
  return undefined;
}

/**
 * Checks one listed backup: reads and validates its manifest, judges its times against `clock`
 * (`future`, `misdated`: see clock.ts; they come first, since no other verdict matters for a
 * backup whose time is not believed), compares the stored sizes in the listing with it, and
 * reads its verify record when there is one. Needs Get on the manifest and verify record (List
 * was done). A verify record that cannot be parsed is ignored (it proves nothing either way).
 * @param clock now and the tolerance (`--max-clock-skew`); default this machine's clock, 10 min.
 * @throws UsageError when the credentials may not read (exit 2); other storage errors as they come.
 */
export async function checkBackup(storage: Storage, entry: Pick<BackupEntry, 'manifestKey' | 'objects'>, clock: ClockCheck = clockCheck()): Promise<BackupHealth> {
  const keyStamp = parseManifestKey(entry.manifestKey)?.startedAt;
  let backup: ResolvedBackup;
  try {
    backup = await readManifest(storage, entry.manifestKey);
  } catch (err) {
    if (!(err instanceof CheckFailedError)) throw err;
    const ahead = keyStamp && judgeTimes(clock, { kind: 'backup', keyStamp });
    return ahead ? { status: ahead.time, problem: `${ahead.problem} (and ${err.message})` } : { status: 'damaged', problem: err.message };
  }
  const m = backup.manifest;
  const untrusted = judgeTimes(clock, { kind: 'backup', keyStamp, at: m.startedAt, finishedAt: m.finishedAt });
  if (untrusted) return { status: untrusted.time, problem: untrusted.problem, manifest: m };
  const problem = storedObjectProblem(storage, backup, entry.objects);
  if (problem) return { ...problem, manifest: backup.manifest };
  const recordKey = verifyRecordKey(entry.manifestKey);
  if (entry.objects.has(recordKey)) {
    let record;
    try {
      record = VerifyRecordSchema.parse(JSON.parse(await storage.getText(recordKey)));
    } catch (err) {
      if (err instanceof UsageError) throw err;
      record = undefined;
    }
    if (record && record.backupId === backup.manifest.id && !record.ok) {
      return { status: 'verify-failed', problem: `verify (${record.level}) FAILED at ${record.verifiedAt}${record.reason ? `: ${record.reason}` : ''}`, manifest: backup.manifest };
    }
  }
  return { status: 'ok', manifest: backup.manifest };
}

/** {@link checkBackup} for each entry, 8 at a time; results in the entries' order. */
export function checkBackups(storage: Storage, entries: BackupEntry[], clock: ClockCheck = clockCheck()): Promise<BackupHealth[]> {
  return mapLimit(entries, 8, (e) => checkBackup(storage, e, clock));
}

/**
 * Confirms a resolved backup's stored objects exist with the manifest's sizes, with one listing
 * of `<dir>/<id>.` (List permission; the S3 equivalent of a HEAD per object, in one request for
 * a directory archive's files). The cheapest check that the backup is still there: `verify
 * --level none` runs it.
 * @returns problems, one line each (empty when all is there).
 */
export async function confirmStored(storage: Storage, backup: ResolvedBackup): Promise<string[]> {
  const dir = backup.manifestKey.slice(0, backup.manifestKey.lastIndexOf('/') + 1);
  const sizes = new Map<string, number>();
  for await (const obj of storage.list(`${dir}${backup.manifest.id}.`)) sizes.set(obj.key, obj.sizeBytes);
  const problem = storedObjectProblem(storage, backup, sizes);
  return problem ? [problem.problem] : [];
}
