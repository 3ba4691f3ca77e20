import { z } from 'zod';
import { CheckFailedError } from '../errors.ts';
import { PrivilegesSchema } from '../postgres/privileges.ts';

/**
 * The manifest: a JSON object written next to each dump, **after** the dump object is complete.
 * It is the commit marker: a dump without a manifest is an incomplete backup and is never
 * listed, verified or restored. Schema version 1.
 */
export const ManifestSchema = z.object({
  manifestVersion: z.literal(1),
  tool: z.object({ name: z.string(), version: z.string() }),
  /** `<database>-<YYYYMMDDTHHMMSSZ>-<6 hex>`: unique per backup, also the file name stem. */
  id: z.string().min(1),
  service: z.string().min(1),
  environment: z.string().min(1),
  database: z.string().min(1),
  /** UTC, ISO 8601. */
  startedAt: z.iso.datetime(),
  finishedAt: z.iso.datetime(),
  durationMs: z.number().int().nonnegative(),
  /** pg_dump archive format. */
  format: z.enum(['custom', 'plain', 'directory']),
  compression: z.object({ algorithm: z.enum(['zstd', 'gzip', 'none']), level: z.number().int().optional() }),
  /**
   * The stored object, beside the manifest (same directory). For the directory format, `name`
   * is the folder `<id>.dir`, `sizeBytes` the total, and `sha256` the SHA-256 of the lines
   * `<sha256>  <name>\n` of its `files`, sorted by name.
   */
  object: z.object({
    name: z.string().min(1),
    sizeBytes: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  /** Directory format only: each file of the archive as stored (compressed) under `object.name/`. */
  files: z
    .array(z.object({ name: z.string().min(1), sizeBytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/), archiveSizeBytes: z.number().int().nonnegative() }))
    .optional(),
  /** Extra objects beside the dump: checksum files (`.md5`, `.sha256`) and the schema-only SQL. */
  sidecars: z
    .array(z.object({ name: z.string().min(1), kind: z.enum(['md5', 'sha256', 'schema']), sizeBytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }))
    .optional(),
  /** The pg_dump options the backup was taken with (what a restore must know). */
  options: z
    .object({
      clean: z.boolean().optional(),
      noOwner: z.boolean().optional(),
      noAcl: z.boolean().optional(),
      schemas: z.array(z.string()).optional(),
      excludeSchemas: z.array(z.string()).optional(),
      tables: z.array(z.string()).optional(),
      excludeTables: z.array(z.string()).optional(),
      excludeTableData: z.array(z.string()).optional(),
      jobs: z.number().int().optional(),
      extraArgs: z.array(z.string()).optional(),
      /** The managed platform's profile the dump ran with (src/postgres/profiles.ts); its schemas are in `excludeSchemas`. */
      profile: z.string().optional(),
    })
    .optional(),
  /** Roles of the source cluster (not secrets): a restore elsewhere needs them to exist for ownership and grants. */
  roles: z.array(z.string()).optional(),
  /** Size of pg_dump's output before compression, in bytes. */
  archiveSizeBytes: z.number().int().nonnegative(),
  pgDump: z.object({ path: z.string(), version: z.string(), major: z.number().int() }),
  server: z.object({ version: z.string(), versionNum: z.number().int(), major: z.number().int() }),
  /** `pg_database_size()` at dump time, in bytes. */
  databaseSizeBytes: z.number().int().nonnegative(),
  /** Rows per table, counted in the dump's own snapshot (`pg_export_snapshot()` + `pg_dump --snapshot`). */
  tables: z.array(z.object({ schema: z.string(), table: z.string(), rows: z.number().int().nonnegative() })),
  /** Tables dumped without their rows (`--exclude-table-data`): not counted. */
  tablesWithoutData: z.array(z.object({ schema: z.string(), table: z.string() })).optional(),
  /**
   * Why and from where the backup was taken: a reason (e.g. "before migration 0042") and, in
   * GitHub Actions, the commit, ref, actor and run. Recorded for pre-migration snapshots.
   */
  context: z
    .object({
      reason: z.string().optional(),
      gitSha: z.string().optional(),
      gitRef: z.string().optional(),
      actor: z.string().optional(),
      workflow: z.string().optional(),
      runUrl: z.string().optional(),
    })
    .optional(),
  /**
   * Client-side encryption: the object (and directory-format files, and the schema sidecar)
   * were encrypted with age to these public recipients after compression; `object.sha256` is of
   * the encrypted bytes. Never a key.
   */
  encryption: z.object({ scheme: z.literal('age'), recipients: z.array(z.string().startsWith('age1')).min(1) }).optional(),
  /** Server-side encryption asked of the store (`SSE-C`: the customer key is never recorded). */
  serverSideEncryption: z.object({ type: z.enum(['AES256', 'aws:kms', 'SSE-C']), kmsKeyId: z.string().optional() }).optional(),
  /** Object Lock retention put on every object of this backup (UTC). */
  objectLock: z.object({ mode: z.enum(['GOVERNANCE', 'COMPLIANCE']), retainUntil: z.iso.datetime() }).optional(),
  /** The schema-migration head found in the dump's snapshot (alembic, Flyway, Prisma, Django, Knex, Rails), if any. */
  migrationHead: z.object({ table: z.string(), head: z.string() }).optional(),
  /**
   * What the object holds: a database's dump (absent or `database`), or a run's globals
   * (`globals`: `pg_dumpall --globals-only` as plain SQL; `database` is then `@globals`,
   * `tables` is empty, `pgDump` describes pg_dumpall).
   */
  kind: z.enum(['database', 'globals']).optional(),
  /**
   * The dump run this backup belongs to: one `dump` invocation (one database, a list, or
   * `--all-databases`) and its globals share `id` (`run-<YYYYMMDDTHHMMSSZ>-<6 hex>`). `databases`:
   * every database the run set out to dump (recorded in the globals' manifest; a database
   * missing from the bucket then shows as a failed dump of the run, not as absent).
   */
  run: z.object({ id: z.string().regex(/^run-\d{8}T\d{6}Z-[0-9a-f]{6}$/), databases: z.array(z.string()).optional(), allDatabases: z.boolean().optional() }).optional(),
  /** Globals only: what they hold. `rolePasswords: false` when the role could not read pg_authid (`--no-role-passwords`: roles come back without passwords). */
  globals: z.object({ rolePasswords: z.boolean(), roles: z.array(z.string()), tablespaces: z.array(z.string()) }).optional(),
  /**
   * Set when the dump was taken on a hot standby (a read replica: `pg_is_in_recovery()`).
   * `replayLsn`: `pg_last_wal_replay_lsn()` right after the dump's snapshot was taken, so the
   * backup holds the primary's data as of that WAL position; `lastReplayedAt`:
   * `pg_last_xact_replay_timestamp()` then (UTC), the primary's commit time of the last
   * transaction in it. `replayPaused`: WAL replay was paused while the snapshot was in use
   * (`pausedBy`: `pg-backup` paused it and resumed it after; `other`: it was found paused and
   * left so); false when the role could not pause it (the dump was then exposed to recovery
   * conflicts, and passed). Source: src/postgres/standby.ts.
   */
  standby: z
    .object({
      replayLsn: z.string().regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/).optional(),
      lastReplayedAt: z.iso.datetime().optional(),
      replayPaused: z.boolean(),
      pausedBy: z.enum(['pg-backup', 'other']).optional(),
    })
    .optional(),
  /**
   * Owners, grants (expanded ACLs), default privileges, row-level security and its policies, the
   * database's owner, ACL and settings, and the per-role settings in this database, read in the
   * dump's own snapshot (src/postgres/privileges.ts). A drill and `restore --server` compare the
   * restored database with it. Absent for dumps taken without owners or grants (`--no-owner`,
   * `--no-acl`), with a schema or table filter, and for dumps older than this field.
   */
  privileges: PrivilegesSchema.optional(),
});

/** A parsed manifest. */
export type Manifest = z.infer<typeof ManifestSchema>;

/**
 * Parses and validates a manifest's JSON text.
 * @throws CheckFailedError naming the key and the first problem.
 */
export function parseManifest(text: string, key: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CheckFailedError(`manifest ${key} is not valid JSON`);
  }
  const result = ManifestSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new CheckFailedError(`manifest ${key} is invalid: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return result.data;
}
