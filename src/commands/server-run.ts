import { listBackups, type BackupEntry, type ResolvedBackup } from '../backup/catalog.ts';
import { GLOBALS_DATABASE, encodeSegment, isGlobalsEntry, parseManifestKey, type ParsedManifestKey } from '../backup/keys.ts';
import { parseManifest, type Manifest } from '../backup/manifest.ts';
import { CheckFailedError, UsageError } from '../errors.ts';
import { mapLimit } from '../map-limit.ts';
import type { Storage } from '../storage/index.ts';

// Finding a dump run's backups in the bucket: its globals and its databases share the manifest's
// `run.id` (src/backup/keys.ts newRunId). The run id is not in the keys, so manifests are read:
// only those of backups stamped at or after the run's start (its id's stamp).

/** The run id pattern: `run-<YYYYMMDDTHHMMSSZ>-<6 hex>`. */
export const RUN_ID = /^run-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-[0-9a-f]{6}$/;

/** A run's start, from its id's stamp; undefined when `id` is not a run id. */
export function runStartOf(id: string): Date | undefined {
  const m = RUN_ID.exec(id);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  return new Date(Date.UTC(y!, mo! - 1, d!, h!, mi!, s!));
}

/** One dump run, as the bucket holds it. */
export interface ServerRun {
  id: string;
  /** The run's globals, when it stored them. */
  globals?: ResolvedBackup;
  /** The newest backup of each database the run dumped, by database name. */
  databases: ResolvedBackup[];
  /**
   * Databases the run set out to dump (the globals' `run.databases`) that have no complete
   * backup with this run id: their dump failed or is still running.
   */
  missing: string[];
}

/** Reads and checks one manifest (as catalog.ts does for a resolved backup). */
export async function readBackup(storage: Storage, entry: Pick<BackupEntry, 'manifestKey'>): Promise<ResolvedBackup> {
  const manifest: Manifest = parseManifest(await storage.getText(entry.manifestKey), entry.manifestKey);
  const dir = entry.manifestKey.slice(0, entry.manifestKey.lastIndexOf('/') + 1);
  const id = entry.manifestKey.slice(dir.length, -'.manifest.json'.length);
  if (manifest.id !== id || !manifest.object.name.startsWith(`${id}.`)) throw new CheckFailedError(`manifest ${entry.manifestKey} belongs to another backup (${manifest.id}): it was copied or overwritten`);
  return { manifestKey: entry.manifestKey, objectKey: dir + manifest.object.name, manifest };
}

/** Margin for a backup's key stamp before its run's start (the two come from the same clock; one second of rounding). */
const RUN_START_MARGIN_MS = 60_000;

/**
 * Finds a run of `service`/`environment`: `latest` (the newest backup — globals or database —
 * that carries a run id names the run), or a run id. Manifests are read 8 at a time, only of
 * backups stamped from the run's start on; of each database the newest backup of the run is
 * taken.
 * @throws UsageError for a reference that is neither `latest` nor a run id, or when no such run exists.
 */
export async function findRun(storage: Storage, service: string, environment: string, ref = 'latest', listing?: BackupEntry[]): Promise<ServerRun> {
  const entries = listing ?? (await listBackups(storage, { service, environment }));
  let id: string;
  if (ref === 'latest') {
    let found: string | undefined;
    for (const e of entries) {
      const b = await readBackup(storage, e).catch(() => undefined);
      if (b?.manifest.run) {
        found = b.manifest.run.id;
        break;
      }
    }
    if (!found) throw new UsageError(`no dump run found under ${storage.url} for ${service}/${environment}: no backup there carries a run id (dumps of this version record one); give --backup RUN_ID or dump first`);
    id = found;
  } else {
    if (!RUN_ID.test(ref)) throw new UsageError(`--backup ${JSON.stringify(ref)} is not a run: give latest or a run id (run-YYYYMMDDTHHMMSSZ-xxxxxx, shown by "pg-backup list")`);
    id = ref;
  }
  return collectRun(storage, entries, id, `${service}/${environment}`);
}

/**
 * The backups of run `id` among `entries` (one service/environment, newest first).
 * @throws UsageError when none carries that run id.
 */
export async function collectRun(storage: Storage, entries: BackupEntry[], id: string, scope: string): Promise<ServerRun> {
  const since = runStartOf(id)!.getTime() - RUN_START_MARGIN_MS;
  const candidates = entries.filter((e) => e.startedAt.getTime() >= since);
  const read = await mapLimit(candidates, 8, (e) => readBackup(storage, e).catch(() => undefined));
  const mine = read.filter((b): b is ResolvedBackup => b?.manifest.run?.id === id);
  if (!mine.length) throw new UsageError(`run ${id} not found under ${storage.url} for ${scope}: "pg-backup list" shows the runs`);
  const globals = mine.find((b) => isGlobalsEntry({ database: b.manifest.database, manifestKey: b.manifestKey }));
  const byName = new Map<string, ResolvedBackup>();
  for (const b of mine) {
    if (b === globals || b.manifest.kind === 'globals') continue;
    const prev = byName.get(b.manifest.database);
    if (!prev || Date.parse(b.manifest.startedAt) > Date.parse(prev.manifest.startedAt)) byName.set(b.manifest.database, b);
  }
  const databases = [...byName.values()].sort((a, b) => (a.manifest.database < b.manifest.database ? -1 : 1));
  const missing = (globals?.manifest.run?.databases ?? []).filter((d) => !byName.has(d));
  return { id, globals, databases, missing };
}

/**
 * The globals of the run a database backup belongs to: undefined when the backup has no run id,
 * or its run stored no globals. Lists only `<service>/<environment>/@globals/` and reads the
 * manifests of the globals stamped from the run's start.
 */
export async function globalsOfRun(storage: Storage, manifest: Manifest): Promise<ResolvedBackup | undefined> {
  const id = manifest.run?.id;
  if (!id) return undefined;
  const since = runStartOf(id)!.getTime() - RUN_START_MARGIN_MS;
  // Only the globals' folder is listed (its reserved segment is kept as is, never encoded as a database name is).
  const prefix = `${encodeSegment(manifest.service)}/${encodeSegment(manifest.environment)}/${GLOBALS_DATABASE}/`;
  const entries: ParsedManifestKey[] = [];
  for await (const obj of storage.list(prefix)) {
    const parsed = parseManifestKey(obj.key);
    if (parsed && isGlobalsEntry(parsed) && parsed.startedAt.getTime() >= since) entries.push(parsed);
  }
  // Oldest first: a run's globals are written at its start.
  entries.sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime());
  for (const e of entries) {
    const b = await readBackup(storage, e).catch(() => undefined);
    if (b?.manifest.run?.id === id) return b;
  }
  return undefined;
}
