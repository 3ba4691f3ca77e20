// A dump run with globals for the whole-server tests: `pg-backup dump --databases …`, as a user runs it.
import { GLOBALS_DATABASE, encodeSegment } from '../../src/backup/keys.ts';
import { parseManifest } from '../../src/backup/manifest.ts';
import { openStorage } from '../../src/storage/index.ts';
import { cli } from '../helpers.ts';
import { queryEach, type TcpCluster } from './tcp-cluster.ts';

/**
 * Creates role `app_owner` (password `owner-pw`) on `cluster` and, for each entry of `rows`, a
 * database it owns holding one table `items (id int PRIMARY KEY, name text)` of that many rows
 * (`name` = md5 of the id, so archives compress like real text).
 */
export async function ownedItemDatabases(cluster: TcpCluster, rows: Record<string, number>): Promise<void> {
  await queryEach(cluster.adminUrl, [`CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw'`, ...Object.keys(rows).map((db) => `CREATE DATABASE ${db} OWNER app_owner`)].join(';\n'));
  for (const [db, n] of Object.entries(rows)) {
    await queryEach(cluster.urlOf(db), `SET ROLE app_owner;
      CREATE TABLE items (id int PRIMARY KEY, name text);
      INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, ${n}) g`);
  }
}

/** What {@link dumpRun} wrote. */
export interface FixtureRun {
  runId: string;
  /** The globals' manifest key, when written. */
  globalsManifestKey?: string;
  databases: { database: string; manifestKey: string; objectKey: string }[];
}

/**
 * Dumps a run of `databases` of one server into `to` under `service`/`environment` with the real
 * `pg-backup dump --databases …` (one run: its globals first — unless `globals` is false, then
 * `--no-globals` — and each database, every manifest carrying the run's id), from
 * `urlOf(databases[0])`. `adminUrl` is kept for callers: the globals are read through that same
 * server. Returns the keys.
 */
export async function dumpRun(o: { adminUrl: string; urlOf: (database: string) => string; databases: string[]; to: string; service: string; environment: string; globals?: boolean; extra?: string[] }): Promise<FixtureRun> {
  const storage = openStorage(o.to);
  const r = await cli(['dump', '--to', o.to, '--service', o.service, '--environment', o.environment, '--databases', o.databases.join(','), '--json', ...(o.globals === false ? ['--no-globals'] : []), ...(o.extra ?? [])], { DATABASE_URL: o.urlOf(o.databases[0]!) });
  if (r.code !== 0) throw new Error(`dump of ${o.databases.join(', ')} failed: ${r.stderr}`);
  type Result = { manifestUri: string; backupUri: string; database: string; run?: { id: string }; globalsBackup?: { manifestUri?: string } };
  const json = JSON.parse(r.stdout) as Result | { database: string; run: string; manifest: Result }[];
  const results: Result[] = Array.isArray(json) ? json.map((e) => e.manifest) : [json];
  const runId = results[0]!.run!.id;
  const out: FixtureRun = { runId, databases: [] };
  for (const result of results) {
    const manifestKey = storage.keyOf(result.manifestUri)!;
    out.databases.push({ database: result.database, manifestKey, objectKey: storage.keyOf(result.backupUri)! });
  }
  if (o.globals !== false) {
    for await (const { key } of storage.list(`${encodeSegment(o.service)}/${encodeSegment(o.environment)}/${GLOBALS_DATABASE}/`)) {
      if (!key.endsWith('.manifest.json')) continue;
      const m = parseManifest(await storage.getText(key), key);
      if (m.run?.id === runId) out.globalsManifestKey = key;
    }
    if (!out.globalsManifestKey) throw new Error(`the run ${runId} wrote no globals: ${r.stderr}`);
  }
  return out;
}
