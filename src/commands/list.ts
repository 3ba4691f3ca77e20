import { checkBackups, listBackups, type BackupEntry, type BackupFilter, type BackupStatus } from '../backup/catalog.ts';
import { checkLocation, openStorage, type S3Settings } from '../storage/index.ts';
import { parseMaxClockSkew } from '../backup/clock.ts';
import { isGlobalsEntry } from '../backup/keys.ts';

/** Options of {@link list}. */
export interface ListOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  filter?: BackupFilter;
  s3?: S3Settings;
  /** A backup stamped later than now + this (`10m`, the default) is `future` (src/backup/clock.ts). */
  maxClockSkew?: string;
  /** The clock (tests). */
  now?: () => Date;
  /** List the safety dumps of `restore --clean` (src/backup/safety.ts) instead of the backups. */
  safetyDumps?: boolean;
}

/** One complete backup in a listing. */
export interface ListedBackup {
  service: string;
  environment: string;
  database: string;
  id: string;
  /** UTC, ISO 8601, to the second. */
  startedAt: string;
  /** The dump object's key relative to `from` (what `--backup` takes). */
  key: string;
  uri: string;
  manifestKey: string;
  /** Stored size in bytes, if the dump object is present. */
  sizeBytes: number | undefined;
  /**
   * `ok`, or why the backup is not restorable: `missing` (dump object gone), `damaged` (manifest
   * unreadable or invalid, or an object of another size than the manifest says), `verify-failed`
   * (its recorded verify FAILED), `future` (its key or manifest is stamped later than now +
   * `--max-clock-skew`), `misdated` (its key stamp and its manifest's `startedAt` disagree). See
   * `BackupStatus` in src/backup/retention.ts.
   */
  status: BackupStatus;
  /** Why the status is not ok, one line. */
  problem?: string;
  /** Set when this is a safety dump of `restore --clean` (listed only with `safetyDumps`). */
  safetyDump?: true;
  /** `globals`: a run's globals (`pg_dumpall --globals-only`, database `@globals`), not a database's dump. */
  kind: 'database' | 'globals';
  /** The dump run it belongs to (`run-<stamp>-<6 hex>`), when its manifest records one (read and valid). */
  run?: string;
  /** Globals only: whether they hold role password hashes (false: dumped with `--no-role-passwords`). */
  rolePasswords?: boolean;
}

/**
 * Lists complete backups (manifest present), newest first, paginating through the bucket, and
 * checks each: its manifest is read and validated, the stored sizes compared with it, and its
 * verify record read, and its times judged (src/backup/clock.ts), 8 backups at a time. Needs
 * List and Get. Safety dumps of `restore --clean` are listed only with `safetyDumps` (and then
 * only they). A run's globals are listed beside its databases, as `kind: 'globals'`; each entry
 * names its run (the manifest's `run.id`).
 * @throws UsageError for a bad `maxClockSkew`, or when the location does not exist or may not be read.
 */
export async function list(options: ListOptions): Promise<ListedBackup[]> {
  const clock = { now: (options.now ?? (() => new Date()))(), maxSkewMs: parseMaxClockSkew(options.maxClockSkew) };
  const storage = openStorage(options.from, options.s3);
  await checkLocation(storage);
  const entries: BackupEntry[] = await listBackups(storage, options.filter, { safetyDumps: options.safetyDumps });
  const health = await checkBackups(storage, entries, clock);
  return entries.map((e, i) => ({
    service: e.service,
    environment: e.environment,
    database: e.database,
    id: e.id,
    startedAt: e.startedAt.toISOString().replace('.000Z', 'Z'),
    key: e.objectKey ?? e.manifestKey,
    uri: storage.uri(e.objectKey ?? e.manifestKey),
    manifestKey: e.manifestKey,
    sizeBytes: e.sizeBytes,
    status: health[i]!.status,
    ...(health[i]!.problem ? { problem: health[i]!.problem } : {}),
    ...(e.safetyDump ? { safetyDump: true as const } : {}),
    kind: isGlobalsEntry(e) ? ('globals' as const) : ('database' as const),
    ...(health[i]!.manifest?.run ? { run: health[i]!.manifest!.run!.id } : {}),
    ...(isGlobalsEntry(e) && health[i]!.manifest?.globals ? { rolePasswords: health[i]!.manifest!.globals!.rolePasswords } : {}),
  }));
}
