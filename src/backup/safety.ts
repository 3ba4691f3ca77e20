/**
 * Safety dumps: the dump `restore --clean` takes of a non-empty target before replacing its
 * objects. They are kept apart from the backups, so they never count as a database's backups:
 *
 * ```
 * safety-dumps/<service>/<environment>/<target database>/YYYY/MM/DD/<id>.{dump.zst,manifest.json,…}
 * ```
 *
 * (relative to the location's prefix; service and environment of the backup that was restored,
 * the database the target's name). Below `safety-dumps/` the layout is a backup's, so a safety
 * dump is restored, verified and drilled like any backup, by its key or URI. Safety dumps taken
 * before this folder existed live under `<service>/pre-restore/<target database>/` (environment
 * `pre-restore`) and are recognised as safety dumps too.
 *
 * `status`, `verify --max-age`/`--expect-every`, `drill --backup latest`, `list` (without
 * `--safety-dumps`), `mirror` and the retention rules of `prune` never see them; `prune` applies
 * their own retention ({@link planSafetyDumps}): deleted once older than `--keep-safety-dumps`
 * (default 14 days).
 *
 * This module imports nothing of the key layout, so keys.ts and retention.ts may import it.
 */

/** The top-level folder of safety dumps; not a valid service name. */
export const SAFETY_FOLDER = 'safety-dumps';

/** `safety-dumps/`: the key prefix of every safety dump. */
export const SAFETY_PREFIX = `${SAFETY_FOLDER}/`;

/** The environment label under which safety dumps were stored before {@link SAFETY_FOLDER} (`<service>/pre-restore/<database>/`). */
export const LEGACY_SAFETY_ENVIRONMENT = 'pre-restore';

/** How long `prune` keeps a safety dump unless told otherwise (`--keep-safety-dumps`). */
export const DEFAULT_KEEP_SAFETY_DUMPS = '14d';

/**
 * Splits a key (relative to a location) into whether it lies in the safety folder and the rest:
 * `safety-dumps/api/prod/app/…` → `{ inFolder: true, rest: 'api/prod/app/…' }`.
 */
export function splitSafetyKey(key: string): { inFolder: boolean; rest: string } {
  return key.startsWith(SAFETY_PREFIX) ? { inFolder: true, rest: key.slice(SAFETY_PREFIX.length) } : { inFolder: false, rest: key };
}

/**
 * Whether a parsed backup key is a safety dump: in {@link SAFETY_FOLDER}, or (older layout) of
 * the environment {@link LEGACY_SAFETY_ENVIRONMENT}. `environment` is the decoded label.
 */
export function isSafetyDumpKey(inFolder: boolean, environment: string): boolean {
  return inFolder || environment === LEGACY_SAFETY_ENVIRONMENT;
}

/** The location URL safety dumps of `from` are written to: `<from>/safety-dumps`. */
export function safetyDumpLocation(from: string): string {
  return `${from.replace(/\/+$/, '')}/${SAFETY_FOLDER}`;
}

/** A safety dump as prune sees it: the fields of a stored backup that its retention reads. */
export interface SafetyDumpCandidate {
  startedAt: Date;
  /** Its manifest exists. */
  complete: boolean;
  /** Newest last-modified time of its objects. */
  lastModified: Date;
}

/**
 * Safety-dump retention, pure: a complete safety dump started more than `keepMs` before `now` is
 * deleted, a younger one kept; an incomplete one (no manifest: the dump failed or was cut) is
 * deleted once its newest object is older than `incompleteGraceMs`. No other rule applies: a
 * safety dump is never a keeper of its database's backups nor a reason to refuse a prune.
 * @returns each candidate with its action and the reason, in the input's order.
 */
export function planSafetyDumps<T extends SafetyDumpCandidate>(dumps: T[], keepMs: number, incompleteGraceMs: number, now: Date, limit: string): (T & { action: 'keep' | 'delete'; reasons: string[] })[] {
  return dumps.map((d) => {
    if (!d.complete) {
      const old = now.getTime() - d.lastModified.getTime() > incompleteGraceMs;
      return { ...d, action: old ? 'delete' : 'keep', reasons: [old ? 'incomplete safety dump past the grace period' : 'incomplete safety dump within the grace period (it may still be uploading)'] };
    }
    const old = now.getTime() - d.startedAt.getTime() > keepMs;
    return { ...d, action: old ? 'delete' : 'keep', reasons: [old ? `safety dump older than --keep-safety-dumps ${limit}` : `safety dump within --keep-safety-dumps ${limit}`] };
  });
}
