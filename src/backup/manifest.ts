import { z } from 'zod';
import { CheckFailedError } from '../errors.ts';

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
  format: z.enum(['custom']),
  compression: z.object({ algorithm: z.enum(['zstd', 'gzip', 'none']), level: z.number().int().optional() }),
  /** The stored object, beside the manifest (same directory). */
  object: z.object({
    name: z.string().min(1),
    sizeBytes: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  /** Size of pg_dump's output before compression, in bytes. */
  archiveSizeBytes: z.number().int().nonnegative(),
  pgDump: z.object({ path: z.string(), version: z.string(), major: z.number().int() }),
  server: z.object({ version: z.string(), versionNum: z.number().int(), major: z.number().int() }),
  /** `pg_database_size()` at dump time, in bytes. */
  databaseSizeBytes: z.number().int().nonnegative(),
  /** Rows per table, counted in the dump's own snapshot (`pg_export_snapshot()` + `pg_dump --snapshot`). */
  tables: z.array(z.object({ schema: z.string(), table: z.string(), rows: z.number().int().nonnegative() })),
  /** The schema-migration head found in the dump's snapshot (alembic, Flyway, Prisma, Django, Knex, Rails), if any. */
  migrationHead: z.object({ table: z.string(), head: z.string() }).optional(),
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
