// A fixture bucket for the status tests: one service over 3 environments and 30 days, written
// straight through the storage layer with controlled timestamps (manifests valid by the schema,
// dump objects of chosen sizes, verify records, drill reports), a database with a hostile name
// (optionally backed up by a real dump + recorded verify), and the drill reports of a physical stanza.
//
//   shop/production/app   daily dumps, fresh; weekly drills OK (RTO creeping up, budget 2 min
//                         recorded in the reports); the last 7 backups verified
//   shop/production/<img src=x onerror=alert(1)>…   one backup, verified (a real dump + verify --record, or written directly)
//   shop/production/main  physical: only pgBackRest drill reports (OK)
//   shop/staging/app      daily dumps that stopped 3 days ago: STALE
//   shop/dev/app          daily dumps, fresh; its last drill FAILED; an unreadable drill report
import { randomBytes } from 'node:crypto';
import { dump } from '../../src/commands/dump.ts';
import { verify } from '../../src/commands/verify.ts';
import { backupKeys, drillFolder, utcStamp } from '../../src/backup/keys.ts';
import { verifyRecordKey } from '../../src/backup/proof.ts';
import { mapLimit } from '../../src/map-limit.ts';
import type { Storage } from '../../src/storage/index.ts';
import { dbUrl, sql } from '../helpers.ts';

export const DAY = 86_400_000;
export const HOUR = 3_600_000;
/** A database name that is HTML (unique per process: test files run in parallel on one server). */
export const HOSTILE = `<img src=x onerror=alert(1)>${randomBytes(2).toString('hex')}`;
const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };

/** What the fixture holds, for the assertions. */
export interface Fixture {
  now: Date;
  rows: { name: string; state: 'ok' | 'stale' | 'failed' | 'warning'; complete: number | null; proven: number | null }[];
  objects: number;
}

type Labels = { service: string; environment: string; database: string };

export function manifestFor(labels: Labels, id: string, objectName: string, startedAt: Date, sizeBytes: number) {
  return {
    manifestVersion: 1,
    tool: { name: 'pg-backup-actions', version: '0.1.0' },
    id,
    ...labels,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date(startedAt.getTime() + 4_000).toISOString(),
    durationMs: 4_000,
    format: 'custom',
    compression: { algorithm: 'zstd', level: 3 },
    object: { name: objectName, sizeBytes, sha256: '0'.repeat(64) },
    archiveSizeBytes: sizeBytes * 4,
    pgDump: { path: '/usr/lib/postgresql/15/bin/pg_dump', version: '15.14', major: 15 },
    server: { version: '15.14', versionNum: 150014, major: 15 },
    databaseSizeBytes: sizeBytes * 10,
    tables: [{ schema: 'public', table: 'orders', rows: 12 }],
  };
}

/**
 * Writes the fixture into `storage` with `now` as the present. The hostile-named database's
 * backup and verify record are written directly, or with `realDump` taken by `dump` and `verify
 * --record` (into `location`, from a database of that name on the test PostgreSQL).
 */
export async function buildFixture(storage: Storage, location: string, now: Date, realDump: boolean): Promise<Fixture> {
  const puts: [string, string | Uint8Array][] = [];
  const day0 = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()); // today 00:00 UTC
  /** Dumps at 02:00 UTC of each of the last `days` days (skipping the newest `skip` days), today's only if it is past. */
  const backups = (labels: Labels, days: number, skip: number, size: (i: number) => number) => {
    const out: { id: string; at: Date; manifestKey: string }[] = [];
    for (let d = days - 1; d >= skip; d--) {
      const at = new Date(day0 - d * DAY + 2 * HOUR);
      if (at.getTime() > now.getTime() - HOUR) continue;
      const keys = backupKeys(labels, at, '.dump.zst', (at.getTime() / 1000).toString(16).slice(-6).padStart(6, '0'));
      const bytes = size(days - 1 - d);
      puts.push([keys.objectKey, new Uint8Array(bytes)]);
      puts.push([keys.manifestKey, JSON.stringify(manifestFor(labels, keys.id, keys.objectKey.split('/').pop()!, at, bytes))]);
      out.push({ id: keys.id, at, manifestKey: keys.manifestKey });
    }
    return out; // oldest first
  };
  const drillReport = (labels: Labels, backupId: string, at: Date, ok: boolean, rtoMs: number, extra: Record<string, unknown> = {}) => {
    const report = { tool: { name: 'pg-backup-actions', version: '0.1.0' }, ok, ...(ok ? {} : { reason: 'row count of public.orders is 10, the manifest says 12' }), problems: ok ? [] : ['row count of public.orders is 10, the manifest says 12'], target: 'throwaway', startedAt: at.toISOString(), rtoMs, phases: { downloadMs: 1000, restoreMs: rtoMs - 2000, checksMs: 1000 }, history: [], backupId, ...extra };
    puts.push([`${drillFolder(labels, at)}${backupId}-drill-${utcStamp(at)}.json`, JSON.stringify(report)]);
  };

  // production/app: fresh, growing from 20 kB to ~26 kB; drills every 7 days, RTO 40 s → 58 s, budget 2 min.
  const prod = { service: 'shop', environment: 'production', database: 'app' };
  const prodBackups = backups(prod, 30, 0, (i) => 20_000 + i * 200);
  for (const b of prodBackups.slice(-7)) {
    puts.push([verifyRecordKey(b.manifestKey), JSON.stringify({ recordVersion: 1, tool: { name: 'pg-backup-actions', version: '0.1.0' }, backupId: b.id, level: 'archive', ok: true, verifiedAt: new Date(b.at.getTime() + 10 * 60_000).toISOString(), durationMs: 900 })]);
  }
  const prodDrilled = prodBackups.filter((_, i) => i % 7 === 3);
  const prodProven = new Set([...prodBackups.slice(-7), ...prodDrilled].map((b) => b.id)).size;
  prodDrilled.forEach((b, n) => drillReport(prod, b.id, new Date(b.at.getTime() + HOUR), true, 40_000 + n * 6_000, { maxRtoMs: 120_000 }));

  // staging/app: stopped 3 days ago.
  const staging = { service: 'shop', environment: 'staging', database: 'app' };
  const stagingBackups = backups(staging, 30, 3, (i) => 8_000 + i * 50);
  const stagingDrilled = stagingBackups.filter((_, i) => i % 7 === 0);
  stagingDrilled.forEach((b, n) => drillReport(staging, b.id, new Date(b.at.getTime() + HOUR), true, 20_000 + n * 1_000));

  // dev/app: fresh, last drill failed, plus an unreadable report of an older drill.
  const dev = { service: 'shop', environment: 'dev', database: 'app' };
  const devBackups = backups(dev, 30, 0, (i) => 5_000 + (i % 5) * 100);
  const devDrilled = devBackups.filter((_, i) => i % 10 === 5);
  devDrilled.forEach((b, n, all) => drillReport(dev, b.id, new Date(b.at.getTime() + HOUR), n < all.length - 1, 15_000 + n * 500));
  const oldDev = devBackups[2]!;
  puts.push([`${drillFolder(dev, oldDev.at)}${oldDev.id}-drill-${utcStamp(new Date(oldDev.at.getTime() + HOUR))}.json`, '{"this is": not json']);

  // A physical stanza: pgBackRest drill reports only.
  const stanza = { service: 'shop', environment: 'production', database: 'main' };
  for (let w = 3; w >= 0; w--) {
    const at = new Date(day0 - w * 7 * DAY - DAY + 4 * HOUR);
    drillReport(stanza, `${utcStamp(at).slice(0, 8)}-040000F`, at, true, 90_000 + (3 - w) * 5_000, { kind: 'physical', tool: 'pgbackrest', scope: 'main', rpoMs: 240_000, maxRtoMs: 180_000 });
  }

  // The hostile-named database: one backup 2 h ago, verified (level checksum) 1 h ago.
  const hostile = { service: 'shop', environment: 'production', database: HOSTILE };
  if (!realDump) {
    const at = new Date(now.getTime() - 2 * HOUR);
    const keys = backupKeys(hostile, at, '.dump.zst', 'abc123');
    puts.push([keys.objectKey, new Uint8Array(878)], [keys.manifestKey, JSON.stringify(manifestFor(hostile, keys.id, keys.objectKey.split('/').pop()!, at, 878))]);
    puts.push([verifyRecordKey(keys.manifestKey), JSON.stringify({ recordVersion: 1, tool: { name: 'pg-backup-actions', version: '0.1.0' }, backupId: keys.id, level: 'checksum', ok: true, verifiedAt: new Date(now.getTime() - HOUR).toISOString(), durationMs: 40 })]);
  }
  await mapLimit(puts, 16, ([key, body]) => storage.put(key, body));

  const rows: Fixture['rows'] = [
    { name: 'shop/dev/app', state: 'failed', complete: devBackups.length, proven: devDrilled.length - 1 },
    { name: `shop/production/${HOSTILE}`, state: 'ok', complete: 1, proven: 1 },
    { name: 'shop/production/app', state: 'ok', complete: prodBackups.length, proven: prodProven },
    { name: 'shop/production/main', state: 'ok', complete: null, proven: null },
    { name: 'shop/staging/app', state: 'stale', complete: stagingBackups.length, proven: stagingDrilled.length },
  ];
  if (realDump) {
    await sql('postgres', `DROP DATABASE IF EXISTS "${HOSTILE}"`);
    await sql('postgres', `CREATE DATABASE "${HOSTILE}"`);
    try {
      await sql(HOSTILE, 'CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 100)');
      const real = await dump({ databaseUrl: dbUrl(HOSTILE), to: location, service: 'shop', environment: 'production', logger: quiet, now: () => new Date(now.getTime() - 2 * HOUR) });
      const checked = await verify({ from: location, backup: real.manifestKey, level: 'checksum', record: true, logger: quiet, now: () => new Date(now.getTime() - HOUR) });
      if (!checked.ok) throw new Error(`fixture verify failed: ${checked.reason}`);
    } finally {
      await sql('postgres', `DROP DATABASE IF EXISTS "${HOSTILE}"`);
    }
  }
  rows.sort((a, b) => (a.name < b.name ? -1 : 1));
  return { now, rows, objects: puts.length };
}
