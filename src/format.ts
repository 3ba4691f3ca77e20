/** Human-readable sizes and durations for log lines and summaries. */

/**
 * Bytes as `18.4 MB`: decimal (SI) units — kB, MB, GB, TB, PB, powers of 1000 — one decimal
 * below 100 of a unit, none above. The one size format of every output (list, prune, status,
 * dump, verify, drill, summaries, webhooks; the status page's client script copies it), so a
 * backup shows the same figure everywhere. Binary units (MiB) are kept for settings that are
 * powers of two (part and range sizes). A backup's size is its archive's stored size (the dump
 * object, or the files of a directory archive: the manifest's `object.sizeBytes`), see
 * `archiveBytes` in src/backup/parts.ts.
 */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1000;
    unit++;
  } while (value >= 1000 && unit < units.length - 1);
  return `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** Milliseconds as `1.2 s`, `3 min 4 s`, `35 h 2 min` or `3 d 4 h`. */
export function formatSeconds(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.floor((ms % 60_000) / 1000)} s`;
  if (ms < 86_400_000 * 3) return `${Math.floor(ms / 3_600_000)} h ${Math.floor((ms % 3_600_000) / 60_000)} min`;
  return `${Math.floor(ms / 86_400_000)} d ${Math.floor((ms % 86_400_000) / 3_600_000)} h`;
}
