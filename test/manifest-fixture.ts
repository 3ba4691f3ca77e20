// A schema-valid manifest for tests that build backups by hand (retention, listing, damage):
// the key layout's id and object name, sizes as given, placeholder checksums.
import type { Manifest } from '../src/backup/manifest.ts';

const HASH = '0'.repeat(64);

/**
 * A valid manifest for the backup whose key stem is `stem` (`<svc>/<env>/<db>/YYYY/MM/DD/<id>`).
 * custom (default): the object `<id>.dump.zst` of `sizeBytes`; directory: `<id>.dir` with
 * `files` (name → stored size, stored as `<name>.zst`).
 */
export function manifestFor(stem: string, options: { sizeBytes?: number; files?: Record<string, number>; overrides?: Partial<Manifest> } = {}): string {
  const [service, environment, database] = stem.split('/').map((s) => decodeURIComponent(s));
  const id = stem.slice(stem.lastIndexOf('/') + 1);
  const stamp = /-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-/.exec(id)!;
  const at = `${stamp[1]}-${stamp[2]}-${stamp[3]}T${stamp[4]}:${stamp[5]}:${stamp[6]}Z`;
  const files = options.files && Object.entries(options.files).map(([name, sizeBytes]) => ({ name, sizeBytes, sha256: HASH, archiveSizeBytes: sizeBytes }));
  const manifest: Manifest = {
    manifestVersion: 1,
    tool: { name: 'pg-backup', version: 'test' },
    id,
    service: service!,
    environment: environment!,
    database: database!,
    startedAt: at,
    finishedAt: at,
    durationMs: 1000,
    format: files ? 'directory' : 'custom',
    compression: { algorithm: 'zstd', level: 3 },
    object: { name: files ? `${id}.dir` : `${id}.dump.zst`, sizeBytes: files ? files.reduce((n, f) => n + f.sizeBytes, 0) : (options.sizeBytes ?? 0), sha256: HASH },
    ...(files ? { files } : {}),
    archiveSizeBytes: 0,
    pgDump: { path: '/usr/bin/pg_dump', version: '15.0', major: 15 },
    server: { version: '15.0', versionNum: 150000, major: 15 },
    databaseSizeBytes: 0,
    tables: [],
    ...options.overrides,
  };
  return JSON.stringify(manifest);
}
