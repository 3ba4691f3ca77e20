import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { compressionSuffix, parseCompression, requireZstd, type CompressionSpec } from '../backup/compression.ts';
import { parseDuration } from '../backup/duration.ts';
import { AGE_SUFFIX, loadIdentities, parseRecipients } from '../backup/encryption.ts';
import { backupKeys, validateLabel } from '../backup/keys.ts';
import { ManifestSchema, type Manifest } from '../backup/manifest.ts';
import type { MeterHash } from '../backup/meter.ts';
import { startProgress } from '../backup/progress.ts';
import { mapLimit } from '../backup/readback.ts';
import { uploadStream, type MirrorTarget, type StreamCounters } from '../backup/upload-stream.ts';
import { UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary, type PgBinary } from '../postgres/binaries.ts';
import { workDirOf } from '../postgres/cluster.ts';
import { resolveConnection, type DatabaseConnection } from '../postgres/connection.ts';
import { pgDumpArgs, selectTables, validateSelection, type DumpSelection } from '../postgres/dump-options.ts';
import { findMigrationHead } from '../postgres/migrations.ts';
import { pgDumpThroughZstd } from '../postgres/dump-pipe.ts';
import { installPgClient } from '../postgres/install-client.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { connect, countRows, listUserTables, serverFacts } from '../postgres/server.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { retainUntil } from '../storage/s3/s3.ts';
import { TOOL } from '../version.ts';
import { formatBytes, formatSeconds } from './format.ts';
import { VERIFY_LEVELS, verify, type VerifyLevel, type VerifyResult } from './verify.ts';

/** Checksum files a team's tooling may expect beside each dump (seed 000 uploads an `.md5`). */
export type ChecksumSidecar = 'md5' | 'sha256';

/** Options of {@link dump}. */
export interface DumpOptions extends DumpSelection {
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
  /** Write `<object>.md5` / `<object>.sha256` in `md5sum` / `sha256sum` format beside the dump. */
  checksumSidecars?: ChecksumSidecar[];
  /** Also write `<id>.schema.sql`: the schema alone, plain SQL, uncompressed, in the same snapshot (grep and diff it). */
  schemaSidecar?: boolean;
  /** Directory format: where pg_dump spools the archive before upload (needs about the database's size). Default `PG_BACKUP_WORK_DIR` or the temp dir. */
  workDir?: string;
  /** Fail when no byte moved for this long (`10m`, the default; `0` disables). */
  stallTimeout?: string;
  /** Progress report interval in ms. Default 500 on a terminal, 10 000 elsewhere. */
  progressIntervalMs?: number;
  s3?: S3Settings;
  logger: Logger;
  /** Aborting cancels the dump: pg_dump is stopped and the multipart upload aborted. */
  signal?: AbortSignal;
  /** Clock, for tests. */
  now?: () => Date;
  /**
   * When no pg_dump of the server's major (or newer) is installed, install
   * `postgresql-client-<major>` from the PostgreSQL apt repository first (needs root or
   * passwordless sudo, as on GitHub-hosted runners). Default false.
   */
  installClient?: boolean;
  /** Recorded in the manifest's `context`: why this backup was taken, and (in Actions) the commit, ref, actor and run. */
  context?: Manifest['context'];
  /**
   * Verify the backup right after writing it, at this level (`checksum`, `archive`, `schema`).
   * Needs read access (Get) besides write. Default `none`.
   */
  verify?: VerifyLevel;
  /**
   * Encrypt on the client with age to these public recipients (`age1…`), after compression.
   * Only holders of a matching identity can restore; the dump itself needs no secret.
   */
  ageRecipients?: string[];
  /**
   * An off-region copy: `s3://BUCKET/PREFIX` or `file:///DIR` that receives the same bytes as
   * they are uploaded (teed, no second read of the primary, so write-only credentials suffice),
   * then the sidecars and the manifest, after the primary's manifest. The copy is then re-read
   * and its SHA-256 checked when the mirror's credentials allow reading.
   */
  mirrorTo?: string;
  /** Settings (endpoint, region, credentials, SSE, Object Lock) for {@link mirrorTo}. */
  mirrorS3?: S3Settings;
  /**
   * Settings for the verify right after the dump, e.g. read-only credentials apart from the
   * write-only ones in `s3` (least privilege). Default: `s3`.
   */
  verifyS3?: S3Settings;
}

/** How the off-region copy went. */
export interface MirrorResult {
  /** The copy's object URI. */
  uri: string;
  ok: boolean;
  /** The copy was read back and its SHA-256 matched the manifest. */
  verified: boolean;
  /** Why it failed, or why it could not be re-read. */
  error?: string;
}

/** What {@link dump} produced. */
export interface DumpResult {
  manifest: Manifest;
  /** A ready-to-paste command that restores this backup (the target URL left as `$TARGET_DATABASE_URL`). */
  restoreCommand: string;
  backupUri: string;
  manifestUri: string;
  /** The dump object's key relative to the storage location (for the directory format, its folder). */
  objectKey: string;
  manifestKey: string;
  /** Present when `verify` was asked for. */
  verification?: VerifyResult;
  /** Present when `mirrorTo` was given. */
  mirror?: MirrorResult;
}

/** Object-name suffix per format, before the compression suffix. */
const FORMAT_SUFFIX = { custom: '.dump', plain: '.sql', directory: '.dir' } as const;

/**
 * Takes one backup of one database. custom and plain: `pg_dump` → compression (its own process)
 * → SHA-256 → multipart upload, with no temporary file and memory bounded by part size ×
 * (queue size + 1). directory: `pg_dump --format=directory --jobs N` spools to the work dir,
 * then each file is compressed and uploaded under `<id>.dir/`. Row counts per table and the
 * migration head are read in the dump's own snapshot. The manifest is written last, only after
 * pg_dump and the compressor exited 0 and every upload completed; on any failure the multipart
 * upload is aborted and nothing is visible as a backup.
 *
 * Needs only write access to the bucket (PutObject, multipart upload): no List, Get or Head.
 * @throws UsageError for bad options, an unreachable database or bucket, a filter matching nothing, or a pg_dump older than the server.
 * @throws Error when pg_dump, the compressor or the upload fails or stalls.
 */
export async function dump(options: DumpOptions): Promise<DumpResult> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  const { service, environment, compression, selection, storage, stallTimeoutMs, recipients, mirror } = await checkDumpOptions(options);
  const encryptTo = recipients.length ? recipients : undefined;
  const encSuffix = encryptTo ? AGE_SUFFIX : '';
  const conn = resolveConnection(options.databaseUrl);

  const client = await connect(conn, 'pg-backup dump');
  try {
    const server = await serverFacts(client);
    const why = `dumping PostgreSQL ${server.version} at ${conn.display}`;
    const pgDump = await findPgBinary('pg_dump', server.major, why).catch(async (err: unknown) => {
      if (!options.installClient || !(err instanceof UsageError)) throw err;
      await installPgClient(server.major, logger);
      return findPgBinary('pg_dump', server.major, why);
    });
    logger.info(`${conn.database}: dumping ${conn.display} (PostgreSQL ${server.version}, ${formatBytes(server.databaseSizeBytes)}) with pg_dump ${pgDump.version}, ${selection.format} format → ${storage.url}`);

    // The snapshot stays exported while this transaction is open: pg_dump imports it, and the
    // row counts below run in it, so both see the same data. PostgreSQL docs 9.27.5, "Snapshot
    // Synchronization Functions".
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const snapshot = (await client.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
    const selected = await selectTables(client, await listUserTables(client), selection, (m) => logger.warn(`${conn.database}: ${m}`));
    const migrationHead = await findMigrationHead(client, true);
    const roles = (await client.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")).rows.map((r) => r.rolname);
    const counted = selected.filter((t) => t.withData);
    logger.info(`${conn.database}: snapshot ${snapshot} exported; ${counted.length} tables to count in it`);

    const startedAt = now();
    const keys = backupKeys(
      { service, environment, database: conn.database },
      startedAt,
      selection.format === 'directory' ? FORMAT_SUFFIX.directory : `${FORMAT_SUFFIX[selection.format]}${compressionSuffix(compression)}${encSuffix}`,
    );
    const stem = keys.manifestKey.slice(0, -'.manifest.json'.length);
    const stall = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
    const hashes: MeterHash[] = options.checksumSidecars?.includes('md5') ? ['sha256', 'md5'] : ['sha256'];
    const common = [...pgDumpArgs(selection), `--snapshot=${snapshot}`, '--no-password'];

    const mirrors: MirrorTarget[] = mirror ? [{ storage: mirror }] : [];
    // Below the primary's stall watchdog, so a hung mirror is dropped before the primary is failed.
    const mirrorStallMs = stallTimeoutMs > 0 ? Math.min(60_000, Math.max(1_000, stallTimeoutMs / 2)) : 60_000;
    let mirrorError: unknown;
    const noteMirror = (errors: unknown[]) => {
      mirrorError ??= errors.find((e) => e !== undefined);
    };
    const counts = countRows(client, counted);
    counts.catch(() => undefined);
    // Every stream's counters (the directory format uploads several files at once): summed.
    const counters: StreamCounters[] = [];
    const sum = (pick: (c: StreamCounters) => number) => counters.reduce((n, c) => n + pick(c), 0);
    let spoolBytes: () => number = () => 0;
    const stopProgress = startProgress(
      { rawBytes: () => sum((c) => c.raw.bytes) + spoolBytes(), storedBytes: () => sum((c) => c.stored.bytes), sentBytes: () => sum((c) => c.sent.bytes) },
      {
        label: conn.database,
        logger,
        intervalMs: options.progressIntervalMs,
        stallTimeoutMs,
        onStall: (message) => stall.abort(new Error(message)),
      },
    );
    let stored: { storedBytes: number; rawBytes: number; sha256: string; md5?: string; files?: (NonNullable<Manifest['files']>[number] & { md5?: string })[] };
    try {
      if (selection.format === 'directory') {
        stored = await dumpDirectory({ pgDump, conn, args: common, jobs: selection.jobs ?? 1, storage, folder: keys.objectKey, compression, hashes, signal, workDir: options.workDir, logger, sizeHint: server.databaseSizeBytes, onSpool: (fn) => (spoolBytes = fn), onCounters: (c) => counters.push(c), encryptTo, mirrors, mirrorStallMs, onMirrorErrors: noteMirror });
      } else {
        const dumpArgs = [`--format=${selection.format}`, ...(selection.format === 'custom' ? ['--compress=0'] : []), ...common];
        const s = await uploadStream(storage, keys.objectKey, (sig) => {
          // zstd: an OS pipe from pg_dump into zstd, the uncompressed stream never enters this process.
          if (compression.algorithm === 'zstd') return pgDumpThroughZstd(pgDump, dumpArgs, conn, compression.level ?? 3, sig);
          const p = runPgProgram(pgDump, dumpArgs, { connection: conn, signal: sig });
          return { stream: p.stdout, done: p.done };
        }, { compression, hashes, sizeHintBytes: server.databaseSizeBytes, signal, onCounters: (c) => counters.push(c), encryptTo, noOverwrite: true, mirrors, mirrorStallMs });
        noteMirror(s.mirrorErrors);
        stored = { storedBytes: s.storedBytes, rawBytes: s.rawBytes, sha256: s.digests.sha256!, md5: s.digests.md5 };
      }
    } catch (err) {
      throw stall.signal.aborted && !options.signal?.aborted ? stall.signal.reason : err;
    } finally {
      stopProgress();
    }

    const sidecars: NonNullable<Manifest['sidecars']> = [];
    const objectName = keys.objectKey.slice(keys.objectKey.lastIndexOf('/') + 1);
    // Small objects go to the primary at once; the mirror gets them after the primary's manifest,
    // each with a deadline, so a hung mirror can never hold back or cost the primary backup.
    const mirrorPuts: { key: string; body: string; contentType: string }[] = [];
    const putEverywhere = async (key: string, body: string, contentType: string) => {
      await storage.put(key, body, { contentType, noOverwrite: true });
      mirrorPuts.push({ key, body, contentType });
    };
    if (options.schemaSidecar) {
      const schema = await uploadStream(storage, `${stem}.schema.sql${encSuffix}`, (sig) => {
        const p = runPgProgram(pgDump, ['--format=plain', '--schema-only', ...common], { connection: conn, signal: sig });
        return { stream: p.stdout, done: p.done };
      }, { compression: { algorithm: 'none' }, signal, encryptTo, noOverwrite: true, mirrors: mirrorError === undefined ? mirrors : [], mirrorStallMs });
      noteMirror(schema.mirrorErrors);
      sidecars.push({ name: `${stem.slice(stem.lastIndexOf('/') + 1)}.schema.sql${encSuffix}`, kind: 'schema', sizeBytes: schema.storedBytes, sha256: schema.digests.sha256! });
    }
    for (const kind of options.checksumSidecars ?? []) {
      // The formats of md5sum / sha256sum, so `md5sum -c` works on a downloaded copy.
      const lines = stored.files
        ? stored.files.map((f) => `${kind === 'md5' ? f.md5 : f.sha256}  ${objectName}/${f.name}${compressionSuffix(compression)}${encSuffix}`)
        : [`${kind === 'md5' ? stored.md5 : stored.sha256}  ${objectName}`];
      const text = `${lines.join('\n')}\n`;
      await putEverywhere(`${keys.objectKey}.${kind}`, text, 'text/plain');
      sidecars.push({ name: `${objectName}.${kind}`, kind, sizeBytes: Buffer.byteLength(text), sha256: createHash('sha256').update(text).digest('hex') });
    }

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
      format: selection.format,
      compression,
      object: { name: objectName, sizeBytes: stored.storedBytes, sha256: stored.sha256 },
      files: stored.files?.map(({ name, sizeBytes, sha256, archiveSizeBytes }) => ({ name, sizeBytes, sha256, archiveSizeBytes })),
      sidecars: sidecars.length ? sidecars : undefined,
      options: recordedOptions(selection),
      roles,
      archiveSizeBytes: stored.rawBytes,
      pgDump: { path: pgDump.path, version: pgDump.version, major: pgDump.major },
      server: { version: server.version, versionNum: server.versionNum, major: server.major },
      databaseSizeBytes: server.databaseSizeBytes,
      tables: tableRows,
      tablesWithoutData: selected.some((t) => !t.withData) ? selected.filter((t) => !t.withData).map(({ schema, table }) => ({ schema, table })) : undefined,
      migrationHead,
      encryption: encryptTo ? { scheme: 'age', recipients: encryptTo } : undefined,
      serverSideEncryption: serverSideEncryptionOf(options.s3),
      objectLock: options.s3?.objectLock ? { mode: options.s3.objectLock.mode, retainUntil: retainUntil(options.s3.objectLock, startedAt.getTime()).toISOString() } : undefined,
      context: options.context && Object.values(options.context).some((v) => v) ? options.context : undefined,
    });
    // The manifest is the commit marker: written last (and never over an existing one).
    await putEverywhere(keys.manifestKey, `${JSON.stringify(manifest, null, 2)}\n`, 'application/json');
    logger.info(`${conn.database}: OK in ${formatSeconds(manifest.durationMs)}, ${formatBytes(stored.storedBytes)} (${formatBytes(stored.rawBytes)} before ${compression.algorithm}), sha256 ${manifest.object.sha256}`);
    const result: DumpResult = {
      manifest,
      restoreCommand: `npx pg-backup restore --from ${shellQuote(options.to)} --backup ${shellQuote(keys.objectKey)} --target-url "$TARGET_DATABASE_URL"`,
      backupUri: storage.uri(keys.objectKey),
      manifestUri: storage.uri(keys.manifestKey),
      objectKey: keys.objectKey,
      manifestKey: keys.manifestKey,
    };
    if (mirror) {
      for (const p of mirrorPuts) {
        if (mirrorError !== undefined) break;
        await mirror.put(p.key, p.body, { contentType: p.contentType, noOverwrite: true, signal: AbortSignal.timeout(mirrorStallMs) }).catch((err: unknown) => {
          mirrorError ??= (err as Error).name === 'TimeoutError' ? new Error(`writing ${p.key} to the mirror took over ${Math.round(mirrorStallMs / 1000)} s: copy abandoned`) : err;
        });
      }
      result.mirror = await checkMirror(mirror, keys.objectKey, mirrorError, options, logger);
    }
    if (options.verify && options.verify !== 'none') {
      // An encrypted backup reads back past its checksum only with an identity, which the dump
      // runner should not hold: without one, verify what can be verified and say so.
      const identities = encryptTo ? loadIdentities() : undefined;
      let level = options.verify;
      if (encryptTo && !identities && level !== 'checksum') {
        logger.warn(`the backup is encrypted with age and no identity is set here: verifying at level checksum instead of ${level}; run verify --level ${level} (or a drill) where the identity is`);
        level = 'checksum';
      }
      result.verification = await verify({ from: options.to, backup: keys.objectKey, level, ageIdentities: identities, s3: options.verifyS3 ?? options.s3, logger, signal: options.signal, workDir: options.workDir });
    }
    return result;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Validates every option that needs no database, so a mistake fails before any connection or
 * write.
 * @throws UsageError naming the first bad option.
 */
export async function checkDumpOptions(options: Omit<DumpOptions, 'databaseUrl'>) {
  const service = validateLabel('service', options.service?.trim() || 'default');
  const environment = validateLabel('environment', options.environment?.trim() || 'default');
  const compression = parseCompression(options.compression);
  const selection = validateSelection(options);
  const storage = openStorage(options.to, options.s3);
  if (compression.algorithm === 'zstd') await requireZstd();
  if (options.verify && !VERIFY_LEVELS.includes(options.verify)) throw new UsageError(`unknown verify level ${JSON.stringify(options.verify)}: use ${VERIFY_LEVELS.join(', ')}`);
  const stallTimeoutMs = parseDuration(options.stallTimeout ?? '10m', '--stall-timeout');
  for (const sidecar of options.checksumSidecars ?? []) {
    if (sidecar !== 'md5' && sidecar !== 'sha256') throw new UsageError(`unknown checksum sidecar ${JSON.stringify(sidecar)}: use md5 or sha256`);
  }
  const recipients = parseRecipients(options.ageRecipients ?? []);
  const mirror = options.mirrorTo ? openStorage(options.mirrorTo, options.mirrorS3) : undefined;
  if (mirror && mirror.url === storage.url) throw new UsageError(`--mirror-to ${options.mirrorTo} is the backup location itself: give another bucket (another region or provider)`);
  for (const s of [storage, mirror]) {
    if (s && 'onWarning' in s) (s as { onWarning?: (m: string) => void }).onWarning = (m) => options.logger.warn(m);
  }
  return { service, environment, compression, selection, storage, stallTimeoutMs, recipients, mirror };
}

/** The manifest's record of the server-side encryption asked for (never the SSE-C key). */
function serverSideEncryptionOf(s3: S3Settings | undefined): Manifest['serverSideEncryption'] {
  const sse = s3?.sse;
  if (!sse) return undefined;
  if (sse.type === 'sse-c') return { type: 'SSE-C' };
  if (sse.type === 'aws:kms') return { type: 'aws:kms', kmsKeyId: sse.kmsKeyId };
  return { type: 'AES256' };
}

/**
 * After a dump with a mirror: reports a failed copy, or re-reads the copy and checks its size and
 * SHA-256 against the manifest (a checksum-level verify of the mirror). Mirror credentials
 * without read access leave the copy unverified, with a warning.
 */
async function checkMirror(mirror: Storage, objectKey: string, mirrorError: unknown, options: DumpOptions, logger: Logger): Promise<MirrorResult> {
  const uri = mirror.uri(objectKey);
  if (mirrorError !== undefined) {
    const error = messageOf(mirrorError);
    logger.warn(`mirror copy to ${uri} FAILED: ${error} (the backup itself is complete)`);
    return { uri, ok: false, verified: false, error };
  }
  try {
    const check = await verify({ from: options.mirrorTo!, backup: objectKey, level: 'checksum', s3: options.mirrorS3, logger: quiet(logger), signal: options.signal });
    if (!check.ok) {
      logger.warn(`mirror copy at ${uri} does not match the manifest: ${check.reason}`);
      return { uri, ok: false, verified: false, error: check.reason };
    }
    logger.info(`mirror copy at ${uri}: sha256 matches`);
    return { uri, ok: true, verified: true };
  } catch (err) {
    const error = messageOf(err);
    logger.warn(`mirror copy at ${uri} written but not re-read: ${error}`);
    return { uri, ok: true, verified: false, error };
  }
}

/** A logger that prints nothing (for a nested check whose verdict is reported by the caller). */
function quiet(logger: Logger): Logger {
  return { ...logger, info: () => undefined, warn: () => undefined };
}

/**
 * The manifest's `context` for a run: `reason`, plus, when running in GitHub Actions, the commit,
 * ref, actor, workflow and run URL from the runner's `GITHUB_*` variables.
 */
export function runContext(reason: string | undefined, env: NodeJS.ProcessEnv = process.env): Manifest['context'] {
  const inActions = env.GITHUB_ACTIONS === 'true';
  const runUrl = inActions && env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID ? `${env.GITHUB_SERVER_URL || 'https://github.com'}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}` : undefined;
  const context = {
    reason: reason?.trim() || undefined,
    gitSha: inActions ? env.GITHUB_SHA : undefined,
    gitRef: inActions ? env.GITHUB_REF : undefined,
    actor: inActions ? env.GITHUB_ACTOR : undefined,
    workflow: inActions ? env.GITHUB_WORKFLOW : undefined,
    runUrl,
  };
  return Object.values(context).some(Boolean) ? context : undefined;
}

/** Quotes a word for a POSIX shell when it needs it. */
function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The selection as recorded in the manifest (only what was set). */
function recordedOptions(s: DumpSelection): Manifest['options'] {
  const out: NonNullable<Manifest['options']> = {};
  if (s.clean) out.clean = true;
  if (s.noOwner) out.noOwner = true;
  if (s.noAcl) out.noAcl = true;
  if (s.schemas?.length) out.schemas = s.schemas;
  if (s.excludeSchemas?.length) out.excludeSchemas = s.excludeSchemas;
  if (s.tables?.length) out.tables = s.tables;
  if (s.excludeTables?.length) out.excludeTables = s.excludeTables;
  if (s.excludeTableData?.length) out.excludeTableData = s.excludeTableData;
  if (s.jobs) out.jobs = s.jobs;
  if (s.extraArgs?.length) out.extraArgs = s.extraArgs;
  return Object.keys(out).length ? out : undefined;
}

/**
 * The directory format: `pg_dump --format=directory --compress=0 --jobs N` into a spool
 * directory, then each file compressed and uploaded to `<folder>/<file><suffix>` (4 at a time).
 * On failure, the files already uploaded are deleted when the credentials allow it (without a
 * manifest they are never listed or restored either way), and the spool is always removed.
 */
async function dumpDirectory(o: {
  pgDump: PgBinary;
  conn: DatabaseConnection;
  args: string[];
  jobs: number;
  storage: Storage;
  folder: string;
  compression: CompressionSpec;
  hashes: MeterHash[];
  signal: AbortSignal;
  workDir?: string;
  logger: Logger;
  sizeHint: number;
  onSpool: (bytes: () => number) => void;
  onCounters: (c: StreamCounters) => void;
  encryptTo?: string[];
  mirrors: MirrorTarget[];
  mirrorStallMs: number;
  onMirrorErrors: (errors: unknown[]) => void;
}): Promise<{ storedBytes: number; rawBytes: number; sha256: string; files: (NonNullable<Manifest['files']>[number] & { md5?: string })[] }> {
  const parent = workDirOf(o.workDir);
  const spool = await mkdtemp(path.join(parent, 'pg-backup-dump-'));
  const dir = path.join(spool, 'archive');
  const uploaded: string[] = [];
  o.onSpool(() => {
    try {
      return readdirSync(dir).reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
    } catch {
      return 0;
    }
  });
  try {
    o.logger.info(`spooling the directory archive in ${spool} with ${o.jobs} job${o.jobs > 1 ? 's' : ''} (needs about ${formatBytes(o.sizeHint)} free)`);
    await runPgProgram(o.pgDump, ['--format=directory', '--compress=0', `--jobs=${o.jobs}`, `--file=${dir}`, ...o.args], { connection: o.conn, signal: o.signal, stdout: 'ignore' }).done.catch((err: unknown) => {
      const text = messageOf(err);
      throw new Error(/No space left on device/i.test(text) ? `${parent} ran out of space spooling the directory archive (about ${formatBytes(o.sizeHint)} needed): choose another --work-dir. ${text}` : text);
    });
    const names = (await readdir(dir)).sort();
    const suffix = `${compressionSuffix(o.compression)}${o.encryptTo ? AGE_SUFFIX : ''}`;
    // The first failed file stops its siblings; every upload has settled before we clean up.
    const siblings = new AbortController();
    const signal = AbortSignal.any([o.signal, siblings.signal]);
    const files = await mapLimit(names, 4, async (name) => {
      const key = `${o.folder}/${name}${suffix}`;
      try {
        const s = await uploadStream(o.storage, key, () => {
          const stream = createReadStream(path.join(dir, name));
          return { stream, done: finished(stream) };
        }, { compression: o.compression, hashes: o.hashes, signal, sizeHintBytes: statSync(path.join(dir, name)).size, onCounters: o.onCounters, encryptTo: o.encryptTo, noOverwrite: true, mirrors: o.mirrors, mirrorStallMs: o.mirrorStallMs });
        o.onMirrorErrors(s.mirrorErrors);
        uploaded.push(key);
        return { name, sizeBytes: s.storedBytes, sha256: s.digests.sha256!, md5: s.digests.md5, archiveSizeBytes: s.rawBytes };
      } catch (err) {
        siblings.abort(err);
        throw err;
      }
    });
    const listing = files.map((f) => `${f.sha256}  ${f.name}\n`).join('');
    return {
      storedBytes: files.reduce((n, f) => n + f.sizeBytes, 0),
      rawBytes: files.reduce((n, f) => n + f.archiveSizeBytes, 0),
      sha256: createHash('sha256').update(listing).digest('hex'),
      files,
    };
  } catch (err) {
    const left: string[] = [];
    for (const key of uploaded) await o.storage.delete(key).catch(() => left.push(key));
    if (left.length) o.logger.warn(`${left.length} file(s) of the failed directory backup remain under ${o.storage.uri(o.folder)}/ (no delete permission); without a manifest they are never listed or restored`);
    throw err;
  } finally {
    await rm(spool, { recursive: true, force: true });
  }
}
