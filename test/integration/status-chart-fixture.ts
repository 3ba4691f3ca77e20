// Small buckets for the status page's chart tests: backups (and drill reports) of chosen
// databases at chosen instants, written straight through the storage layer as
// status-fixture.ts does, so a test controls the time span and the set of databases shown.
import { backupKeys, drillFolder, utcStamp } from '../../src/backup/keys.ts';
import { mapLimit } from '../../src/map-limit.ts';
import type { Storage } from '../../src/storage/index.ts';
import { manifestFor } from './status-fixture.ts';

/** One database's backups (and the drills of some of them) at the given instants (ms since the epoch, UTC). */
export interface Series {
  /** `service/environment/database`. */
  name: string;
  backups: number[];
  /** Instants, among `backups`, whose backup was drilled one hour later (RTO 30 s, OK). */
  drilled?: number[];
}

/** Writes `series` into `storage`: a dump object and manifest per backup, a drill report per drilled one. */
export async function writeSeries(storage: Storage, series: Series[]): Promise<void> {
  const puts: [string, string | Uint8Array][] = [];
  for (const s of series) {
    const [service, environment, database] = s.name.split('/') as [string, string, string];
    const labels = { service, environment, database };
    s.backups.forEach((t, i) => {
      const at = new Date(t);
      const keys = backupKeys(labels, at, '.dump.zst', (t / 1000).toString(16).slice(-6).padStart(6, '0'));
      const bytes = 10_000 + i * 100;
      puts.push([keys.objectKey, new Uint8Array(bytes)]);
      puts.push([keys.manifestKey, JSON.stringify(manifestFor(labels, keys.id, keys.objectKey.split('/').pop()!, at, bytes))]);
      if (s.drilled?.includes(t)) {
        const drillAt = new Date(t + 3_600_000);
        const report = { tool: { name: 'pg-backup-actions', version: '0.1.0' }, ok: true, problems: [], target: 'throwaway', startedAt: drillAt.toISOString(), rtoMs: 30_000, phases: { downloadMs: 1000, restoreMs: 28_000, checksMs: 1000 }, history: [], backupId: keys.id };
        puts.push([`${drillFolder(labels, drillAt)}${keys.id}-drill-${utcStamp(drillAt)}.json`, JSON.stringify(report)]);
      }
    });
  }
  await mapLimit(puts, 16, ([key, body]) => storage.put(key, body));
}
