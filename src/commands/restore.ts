import { resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { identitiesFor } from '../backup/encryption.ts';
import { downloadArchive, readbackProblems, storedParts, streamBackup } from '../backup/readback.ts';
import { restoreBinaries, restoreLocalArchive, restoreSink } from '../postgres/archive.ts';
import { workDirOf } from '../postgres/cluster.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { resolveConnection } from '../postgres/connection.ts';
import { connect, serverFacts } from '../postgres/server.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';
import { formatBytes, formatSeconds } from './format.ts';

/** Options of {@link restore}. */
export interface RestoreOptions {
  from: string;
  /** `latest`, a manifest or dump key, or its full URI. Required: a restore names what it restores. */
  backup: string;
  filter?: BackupFilter;
  /** The database to restore into; it must exist. */
  targetUrl: string;
  /** Drop objects before recreating them (`pg_restore --clean --if-exists`). */
  clean?: boolean;
  /** Do not restore ownership / privileges (`--no-owner`, `--no-acl`): for a server without the source's roles. */
  noOwner?: boolean;
  noAcl?: boolean;
  /** Directory format only: parallel restore jobs. Default 2. */
  jobs?: number;
  /** Directory format only: where the archive is downloaded first (it needs `archiveSizeBytes`). Default `PG_BACKUP_WORK_DIR` or the temp dir. */
  workDir?: string;
  s3?: S3Settings;
  /** age identities for a client-side encrypted backup; default `PG_BACKUP_AGE_IDENTITY(_FILE)`. */
  ageIdentities?: string[];
  logger: Logger;
  signal?: AbortSignal;
}

/** What {@link restore} did. */
export interface RestoreResult {
  backupUri: string;
  target: string;
  durationMs: number;
  sizeBytes: number;
}

/**
 * Restores a backup into an existing database. custom: streams download → decompress →
 * `pg_restore --exit-on-error` (no local disk); plain: → `psql -v ON_ERROR_STOP=1
 * --single-transaction`; directory: downloads to the work dir, then `pg_restore --jobs`.
 * Checks size and SHA-256 against the manifest as it goes and fails if they differ.
 * @throws UsageError for bad options or an older target server.
 * @throws CheckFailedError when the backup is incomplete or corrupt, or pg_restore fails.
 */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const { logger } = options;
  if (!options.backup?.trim()) throw new UsageError('restore needs --backup KEY (from "pg-backup list") or --backup latest');
  const storage = openStorage(options.from, options.s3);
  const target = resolveConnection(options.targetUrl);
  const backup = await resolveBackup(storage, options.backup, options.filter);
  const { manifest } = backup;
  const client = await connect(target, 'pg-backup restore');
  try {
    const facts = await serverFacts(client);
    if (facts.major < manifest.server.major) {
      throw new UsageError(`target ${target.display} runs PostgreSQL ${facts.version}, older than the backup's source (${manifest.server.version}): restore into major ${manifest.server.major} or newer`);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  const identities = identitiesFor(manifest.encryption, options.ageIdentities, storage.uri(backup.objectKey));
  const bins = await restoreBinaries(manifest);
  const args: string[] = [];
  if (options.clean) args.push('--clean', '--if-exists');
  if (options.noOwner) args.push('--no-owner');
  if (options.noAcl) args.push('--no-acl');
  if (manifest.format === 'plain' && (options.clean || options.noOwner || options.noAcl)) {
    logger.warn('--clean, --no-owner and --no-acl are chosen at dump time for plain SQL dumps; they are ignored here');
  }
  const backupUri = storage.uri(backup.objectKey);
  logger.info(`restoring ${backupUri} (${formatBytes(manifest.object.sizeBytes)}, taken ${manifest.startedAt}) into ${target.display} with ${bins.psql ? `psql ${bins.psql.version}` : `pg_restore ${bins.pgRestore.version}`}`);
  const started = Date.now();
  let sizeBytes: number;
  if (manifest.format === 'directory') {
    const scratch = await mkdtemp(path.join(workDirOf(options.workDir), 'pg-backup-restore-'));
    try {
      const local = await downloadArchive(storage, backup, scratch, options.signal, identities);
      if (local.problems.length) throw new CheckFailedError(`restore failed: ${local.problems.join('; ')}`);
      await restoreLocalArchive('directory', bins, local.path, target, { jobs: options.jobs ?? 2, args, signal: options.signal }).catch((err: unknown) => {
        throw new CheckFailedError(`restore failed: ${messageOf(err)}`);
      });
      sizeBytes = local.sizeBytes;
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  } else {
    const [part] = storedParts(backup);
    const outcome = await streamBackup(storage, part!, () => restoreSink(manifest.format, bins, target, args, options.signal), options.signal, identities);
    const problems = readbackProblems(outcome, part!);
    if (problems.length) throw new CheckFailedError(`restore failed: ${problems.join('; ')}`);
    sizeBytes = outcome.sizeBytes;
  }
  const durationMs = Date.now() - started;
  logger.info(`restored ${manifest.database} into ${target.display} in ${formatSeconds(durationMs)}`);
  return { backupUri, target: target.display, durationMs, sizeBytes };
}
