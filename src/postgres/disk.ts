import { statfs } from 'node:fs/promises';
import type { Manifest } from '../backup/manifest.ts';
import { formatBytes } from '../format.ts';
import { CheckFailedError, UsageError } from '../errors.ts';
import { CLUSTER_BASE_BYTES } from './cluster.ts';

/**
 * The throwaway cluster's `max_wal_size` (src/postgres/cluster.ts): WAL a restore may keep on
 * disk before a checkpoint recycles it. With the bulk restore settings a parallel restore writes
 * almost none (wal_level=minimal: 0.1 MB for 1 GB), but a one-job restore of a custom archive
 * still logs its COPYs, so the estimate keeps this bound.
 */
const CLUSTER_MAX_WAL_BYTES = 1024 ** 3;

/**
 * Bytes free for this process in the file system holding `dir` (`statfs`: available blocks ×
 * block size, what an unprivileged writer may use; the root-reserved blocks do not count).
 * @throws UsageError when `dir` does not exist or is not a directory one can stat.
 */
export async function freeBytes(dir: string): Promise<number> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch (err) {
    throw new UsageError(`cannot check the free space of ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give an existing directory as --work-dir`);
  }
}

/**
 * Fails unless the file system of `dir` has at least `neededBytes` free for this process.
 * @param what what needs the room, for the message (e.g. "the drill (archive 150 MB + restored database 180 MB + WAL + empty cluster)").
 * @throws CheckFailedError naming the directory, the room needed and the room left, in one line.
 * @throws UsageError when `dir` cannot be checked (see {@link freeBytes}).
 */
export async function ensureFreeSpace(dir: string, neededBytes: number, what: string): Promise<void> {
  const free = await freeBytes(dir);
  if (free < neededBytes) {
    throw new CheckFailedError(`not enough free space in ${dir} for ${what}: needs about ${formatBytes(neededBytes)}, ${formatBytes(free)} left; free space or choose another --work-dir`);
  }
}

/** The room a drill needs in its work dir, in bytes, by the rule of {@link drillSpaceNeeded}. */
export interface DrillSpace {
  /** The downloaded, decompressed archive: the manifest's `archiveSizeBytes`. */
  archiveBytes: number;
  /** The restored database's estimate (0 when restoring into `--target-url`). */
  databaseBytes: number;
  /** WAL the throwaway cluster may hold while restoring (0 with `--target-url`). */
  walBytes: number;
  /** An empty cluster (0 with `--target-url`, or once the cluster is running). */
  clusterBytes: number;
  totalBytes: number;
  /** The parts as text, for messages: `archive 150 MB + restored database ~300 MB + WAL ~300 MB + empty cluster 50 MB`. */
  description: string;
}

/**
 * The room a drill needs in its work dir (README, "Drill: disk room"), in bytes:
 * - the archive: the manifest's `archiveSizeBytes` (the drill downloads and decompresses it first);
 * - with a throwaway cluster, the restored database: twice the archive (data plus indexes), but
 *   no more than the source's `databaseSizeBytes` when the dump covered the whole database
 *   (no table or schema filter, no excluded table data);
 * - WAL written while restoring: as much as the restored database, at most the cluster's
 *   `max_wal_size` (1 GiB);
 * - an empty cluster ({@link CLUSTER_BASE_BYTES}), unless `clusterRunning` (it already exists).
 * With `throwaway: false` (`--target-url`) only the archive counts.
 */
export function drillSpaceNeeded(manifest: Pick<Manifest, 'archiveSizeBytes' | 'databaseSizeBytes' | 'options'>, o: { throwaway: boolean; clusterRunning?: boolean }): DrillSpace {
  const archiveBytes = manifest.archiveSizeBytes;
  const opts = manifest.options;
  const whole = !opts?.tables?.length && !opts?.schemas?.length && !opts?.excludeTables?.length && !opts?.excludeSchemas?.length && !opts?.excludeTableData?.length;
  const databaseBytes = o.throwaway ? Math.min(2 * archiveBytes, whole && manifest.databaseSizeBytes > 0 ? manifest.databaseSizeBytes : Infinity) : 0;
  const walBytes = o.throwaway ? Math.min(databaseBytes, CLUSTER_MAX_WAL_BYTES) : 0;
  const clusterBytes = o.throwaway && !o.clusterRunning ? CLUSTER_BASE_BYTES : 0;
  const parts = [`archive ${formatBytes(archiveBytes)}`];
  if (databaseBytes) parts.push(`restored database ~${formatBytes(databaseBytes)}`);
  if (walBytes) parts.push(`WAL ~${formatBytes(walBytes)}`);
  if (clusterBytes) parts.push(`empty cluster ${formatBytes(clusterBytes)}`);
  return { archiveBytes, databaseBytes, walBytes, clusterBytes, totalBytes: archiveBytes + databaseBytes + walBytes + clusterBytes, description: parts.join(' + ') };
}

/**
 * The drill's free-space check: {@link ensureFreeSpace} of `dir` for {@link drillSpaceNeeded}.
 * A drill calls it once, before the download and initdb start (they run at the same time), with
 * everything counted; `clusterRunning` is for a caller whose cluster already exists.
 * @throws CheckFailedError in one line naming `dir`, the room needed (and its parts) and the room left.
 */
export async function ensureDrillSpace(dir: string, manifest: Pick<Manifest, 'archiveSizeBytes' | 'databaseSizeBytes' | 'options'>, o: { throwaway: boolean; clusterRunning?: boolean }): Promise<void> {
  const need = drillSpaceNeeded(manifest, o);
  await ensureFreeSpace(dir, need.totalBytes, `the drill (${need.description})`);
}
