// A dump run with globals, written exactly as the contract of whole-server runs lays it out
// (src/backup/keys.ts GLOBALS_DATABASE, src/backup/manifest.ts kind/run/globals): the stand-in
// for `pg-backup dump --all-databases` until that writer is merged. One function: switch its body
// to the real command then.
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { GLOBALS_DATABASE, backupKeys, newRunId } from '../../src/backup/keys.ts';
import { ManifestSchema, parseManifest } from '../../src/backup/manifest.ts';
import { openStorage } from '../../src/storage/index.ts';
import { TOOL } from '../../src/version.ts';
import { cli } from '../helpers.ts';

/** What {@link dumpRun} wrote. */
export interface FixtureRun {
  runId: string;
  /** The globals' manifest key, when written. */
  globalsManifestKey?: string;
  databases: { database: string; manifestKey: string; objectKey: string }[];
}

/**
 * Dumps a run of `databases` of one server into `to` under `service`/`environment`: first, unless
 * `globals` is false, `pg_dumpall --globals-only` (of `adminUrl`) → zstd → the `@globals` object
 * and its manifest (`kind: 'globals'`, `run: {id, databases}`); then each database with
 * `pg-backup dump` (a real dump, from `urlOf(database)`), whose manifest then gets the run's id
 * (rewritten in place: the test-only path). Returns the keys.
 */
export async function dumpRun(o: { adminUrl: string; urlOf: (database: string) => string; databases: string[]; to: string; service: string; environment: string; globals?: boolean; extra?: string[] }): Promise<FixtureRun> {
  const storage = openStorage(o.to);
  const startedAt = new Date();
  const runId = newRunId(startedAt);
  const out: FixtureRun = { runId, databases: [] };
  if (o.globals !== false) {
    const bin = '/usr/lib/postgresql/15/bin/pg_dumpall';
    const version = (await execa(bin, ['--version'])).stdout.replace(/^pg_dumpall \(PostgreSQL\) (\S+).*$/, '$1');
    const sql = (await execa(bin, ['--globals-only', `--dbname=${o.adminUrl}`], { encoding: 'buffer' })).stdout as unknown as Uint8Array;
    const stored = (await execa('zstd', ['-q', '-c', '-3'], { input: sql, encoding: 'buffer' })).stdout as unknown as Uint8Array;
    const keys = backupKeys({ service: o.service, environment: o.environment, database: GLOBALS_DATABASE }, startedAt, '.sql.zst');
    await storage.put(keys.objectKey, stored, { noOverwrite: true });
    const text = Buffer.from(sql).toString('utf8');
    const roles = [...text.matchAll(/^CREATE ROLE ("(?:[^"]|"")+"|[^;\s]+);$/gm)].map((m) => m[1]!.replace(/^"(.*)"$/, '$1'));
    const tablespaces = [...text.matchAll(/^CREATE TABLESPACE ("(?:[^"]|"")+"|\S+) /gm)].map((m) => m[1]!.replace(/^"(.*)"$/, '$1'));
    const finishedAt = new Date();
    const manifest = ManifestSchema.parse({
      manifestVersion: 1,
      tool: TOOL,
      id: keys.id,
      service: o.service,
      environment: o.environment,
      database: GLOBALS_DATABASE,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      format: 'plain',
      compression: { algorithm: 'zstd', level: 3 },
      object: { name: keys.objectKey.slice(keys.objectKey.lastIndexOf('/') + 1), sizeBytes: stored.length, sha256: createHash('sha256').update(stored).digest('hex') },
      archiveSizeBytes: sql.length,
      pgDump: { path: bin, version, major: Number(version.split('.')[0]) },
      server: { version, versionNum: Number(version.split('.')[0]) * 10000 + Number(version.split('.')[1] ?? 0), major: Number(version.split('.')[0]) },
      databaseSizeBytes: 0,
      tables: [],
      kind: 'globals',
      run: { id: runId, databases: o.databases },
      globals: { rolePasswords: true, roles, tablespaces },
    });
    await storage.put(keys.manifestKey, `${JSON.stringify(manifest, null, 2)}\n`, { contentType: 'application/json', noOverwrite: true });
    out.globalsManifestKey = keys.manifestKey;
  }
  for (const database of o.databases) {
    const r = await cli(['dump', '--to', o.to, '--service', o.service, '--environment', o.environment, '--json', ...(o.extra ?? [])], { DATABASE_URL: o.urlOf(database) });
    if (r.code !== 0) throw new Error(`dump of ${database} failed: ${r.stderr}`);
    const result = JSON.parse(r.stdout) as { manifestUri: string; backupUri: string };
    const manifestKey = storage.keyOf(result.manifestUri)!;
    const manifest = parseManifest(await storage.getText(manifestKey), manifestKey);
    await storage.put(manifestKey, `${JSON.stringify({ ...manifest, run: { id: runId } }, null, 2)}\n`, { contentType: 'application/json' });
    out.databases.push({ database, manifestKey, objectKey: storage.keyOf(result.backupUri)! });
  }
  return out;
}
