import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import { compressionSuffix, parseCompression, requireZstd, startCodec } from '../backup/compression.ts';
import { backupKeys, validateLabel } from '../backup/keys.ts';
import { ManifestSchema, type Manifest } from '../backup/manifest.ts';
import { Meter } from '../backup/meter.ts';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary } from '../postgres/binaries.ts';
import { resolveConnection } from '../postgres/connection.ts';
import { findMigrationHead } from '../postgres/migrations.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { connect, countRows, listUserTables, serverFacts } from '../postgres/server.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';
import { TOOL } from '../version.ts';
import { formatBytes, formatSeconds } from './format.ts';
import { VERIFY_LEVELS, verify, type VerifyLevel, type VerifyResult } from './verify.ts';

/** Options of {@link dump}. */
export interface DumpOptions {
  /** libpq URL; default `DATABASE_URL`, then the `PG*` variables. */
  databaseUrl?: string;
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  to: string;
  /** Default `default`. */
  service?: string;
  /** Default `default`. */
  environment?: string;
  /** `zstd[:level]` (default `zstd:3`), `gzip[:level]`, `none`. */
  compression?: string;
  s3?: S3Settings;
  logger: Logger;
  /** Aborting cancels the dump: pg_dump is stopped and the multipart upload aborted. */
  signal?: AbortSignal;
  /** Clock, for tests. */
  now?: () => Date;
  /**
   * Verify the backup right after writing it, at this level (`checksum`, `archive`, `schema`).
   * Needs read access (Get) besides write. Default `none`.
   */
  verify?: VerifyLevel;
}

/** What {@link dump} produced. */
export interface DumpResult {
  manifest: Manifest;
  backupUri: string;
  manifestUri: string;
  /** The dump object's key relative to the storage location. */
  objectKey: string;
  manifestKey: string;
  /** Present when `verify` was asked for. */
  verification?: VerifyResult;
}

/**
 * Takes one backup: `pg_dump --format=custom` → compression → SHA-256 → multipart upload, with
 * no temporary file and memory bounded by part size × (queue size + 1). Row counts per table
 * are taken in the dump's own snapshot. The manifest is written last, only after pg_dump and
 * the compressor exited 0 and the upload completed; on any failure the multipart upload is
 * aborted and nothing is visible as a backup.
 *
 * Needs only write access to the bucket (PutObject, multipart upload): no List, Get or Head.
 * @throws UsageError for bad options, an unreachable database or bucket, or a pg_dump older than the server.
 * @throws Error when pg_dump, the compressor or the upload fails.
 */
export async function dump(options: DumpOptions): Promise<DumpResult> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  const service = validateLabel('service', options.service?.trim() || 'default');
  const environment = validateLabel('environment', options.environment?.trim() || 'default');
  const compression = parseCompression(options.compression);
  const storage = openStorage(options.to, options.s3);
  const conn = resolveConnection(options.databaseUrl);
  if (compression.algorithm === 'zstd') await requireZstd();
  if (options.verify && !VERIFY_LEVELS.includes(options.verify)) throw new UsageError(`unknown verify level ${JSON.stringify(options.verify)}: use ${VERIFY_LEVELS.join(', ')}`);

  const client = await connect(conn, 'pg-backup dump');
  try {
    const server = await serverFacts(client);
    const pgDump = await findPgBinary('pg_dump', server.major, `dumping PostgreSQL ${server.version} at ${conn.display}`);
    logger.info(`${conn.database}: dumping ${conn.display} (PostgreSQL ${server.version}, ${formatBytes(server.databaseSizeBytes)}) with pg_dump ${pgDump.version} → ${storage.url}`);

    // The snapshot stays exported while this transaction is open: pg_dump imports it, and the
    // row counts below run in it, so both see the same data. PostgreSQL docs 9.27.5, "Snapshot
    // Synchronization Functions".
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const snapshot = (await client.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
    const tables = await listUserTables(client);
    const migrationHead = await findMigrationHead(client, true);
    logger.info(`${conn.database}: snapshot ${snapshot} exported; ${tables.length} tables to count in it`);

    const startedAt = now();
    const keys = backupKeys({ service, environment, database: conn.database }, startedAt, `.dump${compressionSuffix(compression)}`);
    const controller = new AbortController();
    const onOuterAbort = () => controller.abort(new UsageError('dump cancelled: the upload was aborted and no backup was written'));
    options.signal?.addEventListener('abort', onOuterAbort, { once: true });
    if (options.signal?.aborted) onOuterAbort();

    let firstError: unknown;
    const fail = (err: unknown) => {
      firstError ??= err;
      if (!controller.signal.aborted) controller.abort(err);
    };
    const pgDumpProc = runPgProgram(pgDump, ['--format=custom', '--compress=0', `--snapshot=${snapshot}`, '--no-password'], {
      connection: conn,
      signal: controller.signal,
    });
    const codec = await startCodec(compression, 'compress', controller.signal);
    const raw = new Meter();
    const stored = new Meter('sha256');
    const body = new PassThrough({ highWaterMark: 1024 * 1024 });

    pgDumpProc.stdout.on('error', fail);
    codec.stream.on('error', fail);
    stored.on('error', fail);
    pgDumpProc.stdout.pipe(raw).pipe(codec.stream).pipe(stored).pipe(body, { end: false });

    const upload = storage.upload(keys.objectKey, body, {
      signal: controller.signal,
      contentType: 'application/octet-stream',
      sizeHintBytes: server.databaseSizeBytes,
    });
    upload.catch(fail);
    try {
      const counts = countRows(client, tables);
      counts.catch(fail);
      // Complete the upload only after every producer exited cleanly: a pg_dump killed half-way
      // must never become a valid-looking object.
      await Promise.all([pgDumpProc.done, codec.done, finished(stored)]).catch((err) => {
        fail(err);
        throw err;
      });
      body.end();
      await upload;
      const tableRows = await counts;
      await client.query('COMMIT');
      const finishedAt = now();
      const manifest: Manifest = ManifestSchema.parse({
        manifestVersion: 1,
        tool: TOOL,
        id: keys.id,
        service,
        environment,
        database: conn.database,
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        durationMs: finishedAt.getTime() - startedAt.getTime(),
        format: 'custom',
        compression,
        object: { name: keys.objectKey.slice(keys.objectKey.lastIndexOf('/') + 1), sizeBytes: stored.bytes, sha256: stored.digest() },
        archiveSizeBytes: raw.bytes,
        pgDump: { path: pgDump.path, version: pgDump.version, major: pgDump.major },
        server: { version: server.version, versionNum: server.versionNum, major: server.major },
        databaseSizeBytes: server.databaseSizeBytes,
        tables: tableRows,
        migrationHead,
      });
      // The manifest is the commit marker: written last.
      await storage.put(keys.manifestKey, `${JSON.stringify(manifest, null, 2)}\n`, 'application/json');
      logger.info(`${conn.database}: OK in ${formatSeconds(manifest.durationMs)}, ${formatBytes(stored.bytes)} (${formatBytes(raw.bytes)} before ${compression.algorithm}), sha256 ${manifest.object.sha256}`);
      const result: DumpResult = {
        manifest,
        backupUri: storage.uri(keys.objectKey),
        manifestUri: storage.uri(keys.manifestKey),
        objectKey: keys.objectKey,
        manifestKey: keys.manifestKey,
      };
      if (options.verify && options.verify !== 'none') {
        result.verification = await verify({ from: options.to, backup: keys.objectKey, level: options.verify, s3: options.s3, logger, signal: options.signal });
      }
      return result;
    } catch (err) {
      fail(err);
      body.destroy();
      await upload.catch(() => undefined);
      await pgDumpProc.done.catch(() => undefined);
      await codec.done.catch(() => undefined);
      throw firstError;
    } finally {
      options.signal?.removeEventListener('abort', onOuterAbort);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

