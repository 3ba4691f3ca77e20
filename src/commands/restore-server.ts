import { mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { ResolvedBackup } from '../backup/catalog.ts';
import { identitiesFor } from '../backup/encryption.ts';
import { storedParts } from '../backup/parts.ts';
import { downloadArchive, downloadObject, type LocalArchive } from '../backup/readback.ts';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';
import { mapLimit } from '../map-limit.ts';
import { restoreBinaries, restoreLocalArchive, type RestoreBinaries } from '../postgres/archive.ts';
import { prefetchPrograms, type PgBinary } from '../postgres/binaries.ts';
import { workDirOf } from '../postgres/cluster.ts';
import { resolveConnection, withDatabase, type DatabaseConnection } from '../postgres/connection.ts';
import { requireRestrictedPsql } from '../postgres/plain-sql.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { connect, serverFacts } from '../postgres/server.ts';
import { targetContents } from '../postgres/target.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { runChecks, withClient } from './drill-checks.ts';
import type { DrillResult } from './drill-report.ts';
import { BUILT_IN_DATABASES, checkPrivileges, lackingRoles, missingRoleInFailure, missingRolesProblem, reasonOf, restoreRunGlobals, rolesOf, type GlobalsReport } from './server-restore-steps.ts';
import { findRun, type ServerRun } from './server-run.ts';

/** Options of {@link restoreServer}. */
export interface ServerRestoreOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`. */
  from: string;
  service: string;
  environment: string;
  /** `latest` (default: the newest run that stored globals or databases) or a run id (`run-…`). */
  backup?: string;
  /** A connection to the target server's maintenance database (`postgresql://…/postgres`), as a role that may create roles and databases. */
  targetUrl: string;
  /** Databases restored at once, 1 to 16 (default 2); a run of one database gives its pg_restore this many jobs instead. */
  jobs?: number;
  /** Restore without owners / grants (`pg_restore --no-owner`, `--no-acl`): the privileges check is then skipped. */
  noOwner?: boolean;
  noAcl?: boolean;
  /**
   * Where each backup is downloaded before its restore, as its archive (`archiveSizeBytes`; a
   * custom archive of at most 8 MiB restored with one job: as its stored object); up to
   * `2 × jobs` at once (each lane's next one ahead, if at most 256 MiB). Default
   * `PG_BACKUP_WORK_DIR` or the temp dir.
   */
  workDir?: string;
  s3?: S3Settings;
  ageIdentities?: string[];
  logger: Logger;
  signal?: AbortSignal;
}

/** One database of a {@link ServerRestoreResult}. */
export interface ServerDatabaseResult {
  database: string;
  backupUri: string;
  ok: boolean;
  /** The database exists on the target after this run (restored, or partly: then `ok` is false and it is for the person to drop). */
  created: boolean;
  durationMs: number;
  problems: string[];
}

/** What {@link restoreServer} did. */
export interface ServerRestoreResult {
  ok: boolean;
  /** The first problem, when not ok. */
  reason?: string;
  runId: string;
  target: string;
  globals?: GlobalsReport;
  databases: ServerDatabaseResult[];
  /** Databases the run set out to dump that have no complete backup in it (not restored). */
  missing: string[];
  /** Databases left on the target by a failed restore, to drop by hand (`DROP DATABASE`). */
  partial: string[];
  durationMs: number;
}

/**
 * Restores a whole dump run into a server whose databases are gone (`restore --server`):
 *
 * 1. **Checks before changing anything**: the run (`latest` or a run id, {@link findRun}); the
 *    target server's major (at least every backup's source major); none of the run's databases
 *    exists there (`postgres`/`template1`, which every server has, must be empty), else a
 *    {@link UsageError} (exit 2) naming them; the restore programs (psql with restricted mode
 *    for plain SQL and the globals).
 * 2. **Globals first** (roles, memberships, passwords, role settings, tablespaces): roles and
 *    tablespaces that exist on the target are kept as they are and listed; a statement the target
 *    refuses (a managed server, a non-superuser) is reported naming the role, and stops the
 *    restore before any database (exit 1).
 * 3. **Each database**, `jobs` at once, largest first: downloaded and checked against its
 *    manifest, then `pg_restore --create --exit-on-error` from the maintenance database (the
 *    database's encoding, locale, owner, ACL, `ALTER DATABASE … SET` and `ALTER ROLE … IN
 *    DATABASE … SET` come back with it); `postgres`/`template1` and plain SQL are restored into
 *    the existing or a new database, as pg_dumpall does. A role the database needs that the
 *    target lacks fails that database before its restore, naming the role. The downloads run
 *    ahead of the restores ({@link ArchiveFetcher}): the first `jobs` while the globals are
 *    restored, then each lane's next one while its current database restores; nothing reaches
 *    pg_restore or psql before its object matched the manifest. A small custom archive restored
 *    with one job is kept as its stored object and decompressed here into pg_restore's stdin
 *    ({@link restoreStoredObject}), without a zstd process.
 * 4. **Checks per database**, on one connection to it, while the lane restores its next database
 *    (at most `jobs` databases checked at once): row counts against the manifest (no parallel
 *    workers, no JIT: the other restores need the cores), sequences, and the privileges record
 *    (owners, grants, default privileges, RLS policies, settings).
 *
 * A database that fails is named; the others go on. Databases left behind by a failed restore
 * are listed in `partial` for the person to drop. Every failure is in the result (`ok: false`).
 * @throws UsageError for bad options, a run that cannot be found, a target that holds any of the run's databases.
 * @throws CheckFailedError when the globals cannot be restored (nothing else was).
 */
export async function restoreServer(options: ServerRestoreOptions): Promise<ServerRestoreResult> {
  const started = Date.now();
  const log = options.logger;
  if (!options.service || !options.environment) throw new UsageError('restore --server needs --service and --environment: the run is looked up under them');
  const jobs = options.jobs ?? 2;
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 16) throw new UsageError(`--jobs must be a whole number from 1 to 16 (got ${options.jobs})`);
  const admin = resolveConnection(options.targetUrl);
  // The programs' --version checks run while the run is looked up (restoreBinaries finds them cached).
  prefetchPrograms('pg_restore', 'psql');
  const storage = openStorage(options.from, options.s3);
  const run = await findRun(storage, options.service, options.environment, options.backup?.trim() || 'latest');
  if (!run.databases.length && !run.globals) throw new UsageError(`run ${run.id} holds no database and no globals: nothing to restore`);
  log.info(`restore --server of run ${run.id} (${options.service}/${options.environment}) into ${admin.display}: ${run.globals ? 'globals, then ' : 'no globals, '}${run.databases.length} database${run.databases.length === 1 ? '' : 's'} (${run.databases.map((d) => d.manifest.database).join(', ') || 'none'})`);
  for (const m of run.missing) log.warn(`database ${m} was part of run ${run.id} but has no complete backup in it (its dump failed or is still running): it is not restored`);

  // 1. Checks before changing anything.
  const bins = new Map<ResolvedBackup, RestoreBinaries>();
  for (const b of run.databases) {
    const found = await restoreBinaries(b.manifest);
    if (b.manifest.format === 'plain' && found.psql) requireRestrictedPsql(found.psql, 'restore a plain SQL backup');
    identitiesFor(b.manifest.encryption, options.ageIdentities, storage.uri(b.objectKey));
    bins.set(b, found);
  }
  const globalsIdentities = run.globals ? identitiesFor(run.globals.manifest.encryption, options.ageIdentities, storage.uri(run.globals.objectKey)) : undefined;
  await refuseExisting(admin, run);

  const result: ServerRestoreResult = { ok: false, runId: run.id, target: admin.display, databases: [], missing: run.missing, partial: [], durationMs: 0 };
  const workDir = workDirOf(options.workDir);
  // The databases, largest first. Their downloads start now, beside the globals: nothing on the
  // target changes by them, and a failure of the globals stops and removes them.
  const order = [...run.databases].sort((a, b) => b.manifest.archiveSizeBytes - a.manifest.archiveSizeBytes);
  const perRestoreJobs = order.length === 1 ? jobs : 1;
  const fetcher = new ArchiveFetcher(storage, workDir, jobs, log, options.signal, (b) => identitiesFor(b.manifest.encryption, options.ageIdentities, storage.uri(b.objectKey)), (b) => perRestoreJobs === 1 && restorableFromObject(b));
  try {
    for (const b of order.slice(0, jobs)) fetcher.start(b);

    // 2. Globals.
    if (run.globals) {
      result.globals = await restoreRunGlobals(storage, run.globals, admin, { workDir, identities: globalsIdentities, signal: options.signal, log });
      if (result.globals.problems.length) {
        for (const p of result.globals.problems.slice(1)) log.warn(p);
        throw new CheckFailedError(`the target refused part of the run's globals, so no database was restored (roles created: ${result.globals.created.join(', ') || 'none'}): ${result.globals.problems[0]}`);
      }
    } else {
      log.warn(`run ${run.id} stored no globals: the roles its databases name must exist on ${admin.display} already`);
    }
    // The roles every database's record is checked against, read once (nothing else creates roles from here on).
    const roles = options.noOwner && options.noAcl ? new Set<string>() : await withClient(admin, options.signal, (c) => rolesOf(c));

    // 3 and 4. `jobs` restores at once; each database's checks run while its lane restores the next.
    const o = { ...options, workDir, jobs: perRestoreJobs, haveGlobals: Boolean(run.globals), roles, log };
    const failedOf = (b: ResolvedBackup, err: unknown): ServerDatabaseResult => {
      if (options.signal?.aborted) throw err;
      return { database: b.manifest.database, backupUri: storage.uri(b.objectKey), ok: false, created: false, durationMs: 0, problems: [reasonOf(err)] };
    };
    const checkSlot = limiter(jobs);
    const checking: Promise<ServerDatabaseResult>[] = [];
    const restored = await mapLimit(
      order.map((b, i) => [b, i] as const),
      jobs,
      async ([b, i]) => {
        // This lane's next database (the one `jobs` places on) downloads while this one restores.
        if (order[i + jobs]) fetcher.start(order[i + jobs]!);
        const step = await restoreDatabase(storage, b, bins.get(b)!, admin, fetcher, o).catch((err: unknown) => ({ out: failedOf(b, err) }));
        if (!('check' in step)) return step.out;
        const checked = checkSlot(() => checkDatabase(step, o));
        checked.catch(() => undefined); // awaited below; it rejects only when cancelled
        checking.push(checked);
        return undefined;
      },
    ).finally(() => Promise.allSettled(checking));
    const outcomes = [...restored.filter((r): r is ServerDatabaseResult => r !== undefined), ...(await Promise.all(checking))];
    result.databases = outcomes.sort((a, b) => (a.database < b.database ? -1 : 1));
  } finally {
    await fetcher.close();
  }
  result.partial = result.databases.filter((d) => !d.ok && d.created).map((d) => d.database);
  const failed = result.databases.filter((d) => !d.ok);
  const problems = [...run.missing.map((m) => `database ${m} of the run has no complete backup: not restored`), ...failed.map((d) => `database ${d.database}: ${d.problems[0]}`)];
  result.ok = problems.length === 0;
  result.durationMs = Date.now() - started;
  if (result.partial.length) log.warn(`left on ${admin.display} by a failed restore, to drop by hand once looked at: ${result.partial.map((d) => `DROP DATABASE ${quoteIdent(d)};`).join(' ')}`);
  if (!result.ok) result.reason = `${failed.length} of ${result.databases.length} database${result.databases.length === 1 ? '' : 's'} failed${run.missing.length ? `, ${run.missing.length} missing from the run` : ''}: ${problems[0]}`;
  log.info(`restore --server of run ${run.id}: ${result.databases.length - failed.length}/${result.databases.length} databases restored and checked in ${formatSeconds(result.durationMs)}${result.ok ? '' : ' — FAILED'}`);
  return result;
}

/**
 * Refuses (exit 2) when the target holds any database of the run: each must not exist, except
 * `postgres` and `template1`, which every server has and which must then be empty.
 */
async function refuseExisting(admin: DatabaseConnection, run: ServerRun): Promise<void> {
  const client = await connect(admin, 'pg-backup restore --server');
  const clashes: string[] = [];
  try {
    const facts = await serverFacts(client);
    const newest = Math.max(0, ...run.databases.map((d) => d.manifest.server.major), run.globals?.manifest.server.major ?? 0);
    if (facts.major < newest) throw new UsageError(`target ${admin.display} runs PostgreSQL ${facts.version}, older than the run's source (${newest}): restore into major ${newest} or newer`);
    const { rows } = await client.query<{ datname: string }>('SELECT datname FROM pg_catalog.pg_database');
    const existing = new Set(rows.map((r) => r.datname));
    for (const b of run.databases) {
      const name = b.manifest.database;
      if (!existing.has(name)) continue;
      if (!BUILT_IN_DATABASES.has(name)) {
        clashes.push(name);
        continue;
      }
      const contents = await withClient(withDatabase(admin, name), undefined, (c) => targetContents(c));
      if (contents) clashes.push(`${name} (not empty: ${contents.description})`);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  if (clashes.length) {
    throw new UsageError(`restore --server refused, nothing was changed on ${admin.display}: the run's database${clashes.length > 1 ? 's' : ''} ${clashes.join(', ')} already exist${clashes.length > 1 ? '' : 's'} there; drop ${clashes.length > 1 ? 'them' : 'it'} (DROP DATABASE …) or restore into another server`);
  }
}

/** What {@link restoreDatabase} and {@link checkDatabase} are given besides the backup. */
type DatabaseOptions = ServerRestoreOptions & { workDir: string; jobs: number; haveGlobals: boolean; roles: Set<string>; log: Logger };

/** A database {@link restoreDatabase} restored, for {@link checkDatabase}. */
interface Restored {
  check: true;
  out: ServerDatabaseResult;
  manifest: ResolvedBackup['manifest'];
  target: DatabaseConnection;
  useCreate: boolean;
  started: number;
}

/** Logs and completes a database's result. */
function finish(out: ServerDatabaseResult, started: number, log: Logger): ServerDatabaseResult {
  out.ok = out.problems.length === 0;
  out.durationMs = Date.now() - started;
  log.info(`${out.database}: ${out.ok ? 'restored and checked' : `FAILED: ${out.problems[0]}`} (${formatSeconds(out.durationMs)})`);
  return out;
}

/**
 * Restores one database of the run ({@link restoreServer} step 3): the roles its record names
 * must exist, its archive (downloaded by `fetcher`, checked against the manifest) goes to
 * pg_restore or psql. Returns what {@link checkDatabase} needs, or the database's failed result.
 */
async function restoreDatabase(storage: Storage, backup: ResolvedBackup, bins: RestoreBinaries, admin: DatabaseConnection, fetcher: ArchiveFetcher, o: DatabaseOptions): Promise<Restored | { out: ServerDatabaseResult }> {
  const { manifest } = backup;
  const name = manifest.database;
  const started = Date.now();
  const out: ServerDatabaseResult = { database: name, backupUri: storage.uri(backup.objectKey), ok: false, created: false, durationMs: 0, problems: [] };
  const builtIn = BUILT_IN_DATABASES.has(name);
  const noOwner = o.noOwner === true;
  const noAcl = o.noAcl === true;
  // --create brings the database's properties, which name roles (owner, ALTER ROLE … IN DATABASE): not with --no-owner/--no-acl.
  const useCreate = manifest.format !== 'plain' && !builtIn && !noOwner && !noAcl;
  const target = withDatabase(admin, name);
  const lacking = noOwner && noAcl ? [] : lackingRoles(manifest.privileges, o.roles);
  if (lacking.length) {
    fetcher.discard(backup);
    out.problems.push(missingRolesProblem(name, lacking, o.haveGlobals));
    return { out: finish(out, started, o.log) };
  }
  const local = await fetcher.take(backup);
  try {
    if (local.problems.length) {
      out.problems.push(`the backup cannot be used: ${local.problems.join('; ')}`);
      return { out: finish(out, started, o.log) };
    }
    if (!useCreate && !builtIn) {
      await withClient(admin, o.signal, (c) => c.query(`CREATE DATABASE ${quoteIdent(name)}`));
      o.log.warn(`${name}: ${manifest.format === 'plain' ? 'plain SQL holds no database properties' : 'restored with --no-owner/--no-acl'}: created with the target's defaults (owner, encoding, settings not restored)`);
    }
    out.created = !builtIn;
    const args = [...(noOwner ? ['--no-owner'] : []), ...(noAcl ? ['--no-acl'] : []), ...(useCreate ? ['--create'] : [])];
    o.log.info(`${name}: restoring with ${bins.psql ? `psql ${bins.psql.version}` : `pg_restore ${bins.pgRestore.version}${useCreate ? ' --create' : ''}`}, ${o.jobs} job${o.jobs > 1 ? 's' : ''}`);
    const restoring = local.stored
      ? restoreStoredObject(bins.pgRestore, local.path, useCreate ? admin : target, args, o.signal)
      : restoreLocalArchive(manifest.format, bins, local.path, useCreate ? admin : target, { jobs: o.jobs, args, signal: o.signal });
    const failure = await restoring.then(
      () => undefined,
      (err: unknown) => messageOf(err),
    );
    if (failure) {
      out.problems.push(missingRoleInFailure(failure, o.haveGlobals) ?? `restore failed: ${reasonOf(failure)}`);
      if (useCreate) out.created = await withClient(admin, o.signal, async (c) => (await c.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [name])).rowCount! > 0);
      return { out: finish(out, started, o.log) };
    }
  } finally {
    await fetcher.release(backup);
  }
  return { check: true, out, manifest, target, useCreate, started };
}

/**
 * Checks a restored database ({@link restoreServer} step 4) on one connection to it: row counts,
 * sequences, migration head (drill-checks.ts, the counts without parallel workers or JIT), then
 * the privileges. A check that cannot run is the database's problem; only a cancellation throws.
 */
async function checkDatabase(r: Restored, o: DatabaseOptions): Promise<ServerDatabaseResult> {
  const { out, manifest, target } = r;
  const name = out.database;
  const checks = { problems: [], tables: [], sequencesBehind: [], smoke: [] } as unknown as DrillResult;
  const quiet: Logger = { ...o.log, info: (line: string) => o.log.info(`${name}: ${line}`) };
  const withPrivileges = Boolean(manifest.privileges) && o.noOwner !== true && o.noAcl !== true;
  try {
    await withClient(target, o.signal, async (client) => {
      // The other databases restore beside these counts: a parallel scan or a JIT compile only takes their cores.
      await client.query('SET max_parallel_workers_per_gather = 0; SET jit = off');
      await runChecks(target, manifest, [], checks, quiet, 2, o.signal, client);
      out.problems.push(...checks.problems);
      if (withPrivileges) {
        for (const d of await checkPrivileges(target, manifest.privileges!, { withDatabase: r.useCreate, log: o.log, label: name, signal: o.signal, client })) out.problems.push(`privileges: ${d}`);
      }
    });
  } catch (err) {
    if (o.signal?.aborted) throw err;
    out.problems.push(`the checks could not run: ${reasonOf(err)}`);
  }
  if (!withPrivileges) o.log.info(`${name}: privileges not checked: ${manifest.privileges ? 'restored with --no-owner/--no-acl' : 'the dump recorded none'}`);
  return finish(out, r.started, o.log);
}

/** A custom archive up to this size (the manifest's `archiveSizeBytes`) is decompressed in this process, all at once: 8 MiB. */
const IN_MEMORY_MAX_BYTES = 8 * 1024 * 1024;

/**
 * Whether a backup is restored from its stored object ({@link restoreStoredObject}): a custom
 * archive of at most {@link IN_MEMORY_MAX_BYTES} in one zstd object without client-side
 * encryption, when this Node has zstd in zlib (22.15+, 23.8+). Any other is downloaded as its
 * archive (zstd writing the file), ahead of its restore when small enough ({@link ArchiveFetcher}).
 * Measured on the bench's 101 MB pgbench archive (whole runs, medians): `zstd -d` piped into
 * pg_restore was no faster than the file, downloaded ahead of the restore (pipe 3.03 s, file
 * 2.76 s, 5 runs each) or not (pipe 2.54 s, file 2.42 s, 4 runs each), for more CPU in pg_restore
 * reading a pipe.
 */
function restorableFromObject(backup: ResolvedBackup): boolean {
  const m = backup.manifest;
  return m.format === 'custom' && m.compression.algorithm === 'zstd' && !m.encryption && storedParts(backup).length === 1 && m.archiveSizeBytes <= IN_MEMORY_MAX_BYTES && typeof zlib.zstdDecompress === 'function';
}

/**
 * Restores a small custom archive from its stored zstd object `file` (already checked against
 * the manifest): decompressed here with Node's zlib (no zstd process to start, about 7 ms of this
 * process's CPU each, measured) into the stdin of `pg_restore --exit-on-error ARGS`; the archive
 * is never written to disk.
 * @throws Error with pg_restore's one-line reason, or the decompression's.
 */
async function restoreStoredObject(pgRestore: PgBinary, file: string, conn: DatabaseConnection, args: string[], signal?: AbortSignal): Promise<void> {
  const archive = await promisify(zlib.zstdDecompress)(await readFile(file), { maxOutputLength: IN_MEMORY_MAX_BYTES }).catch((err: unknown) => {
    throw new Error(`zstd decompression failed: ${messageOf(err)}`);
  });
  signal?.throwIfAborted();
  const p = runPgProgram(pgRestore, ['--exit-on-error', ...args], { connection: conn, signal, stdin: 'pipe', stdout: 'ignore' });
  p.stdin.on('error', () => undefined); // a pg_restore that stops reading (EPIPE) says why by its exit
  p.stdin.end(archive);
  await p.done;
}

/** At most `n` calls of the returned function's `fn` run at once; the others wait their turn, in order. */
function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let free = n;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}

/** A download of {@link ArchiveFetcher}: the archive (`stored: false`) or the stored object (`stored: true`), and its problems. */
type Fetched = Pick<LocalArchive, 'path' | 'problems'> & { stored: boolean };

/** Downloads up to this size (the object's, or the archive's when it is decompressed on download) run ahead of their restore; a larger one when its turn comes. */
const AHEAD_MAX_BYTES = 256 * 1024 * 1024;

/**
 * The downloads of a server restore's archives, run ahead of their restores, `jobs` at once:
 * each into its own scratch directory under `workDir`, checked against its manifest
 * (readback.ts `downloadArchive`). {@link take} gives a database's archive (downloading it now
 * if it was not started); {@link release} removes it after its restore; {@link close} stops
 * what still runs and removes every scratch directory. The work dir holds at most `2 × jobs`
 * downloads at once, of which `jobs` of at most {@link AHEAD_MAX_BYTES} each are the ones ahead;
 * a backup restored from its stored object ({@link restoreStoredObject}) takes the object's size
 * there, not its archive's.
 */
class ArchiveFetcher {
  private readonly fetches = new Map<ResolvedBackup, Promise<Fetched>>();
  private readonly dirs = new Map<ResolvedBackup, Promise<string>>();
  private readonly slot: <T>(fn: () => Promise<T>) => Promise<T>;
  private readonly stop = new AbortController();
  private readonly unlink: () => void;
  private readonly removing = new Set<Promise<void>>();

  private readonly storage: Storage;
  private readonly workDir: string;
  private readonly log: Logger;
  private readonly identities: (b: ResolvedBackup) => string[] | undefined;
  private readonly asObject: (b: ResolvedBackup) => boolean;

  /** `asObject`: the backups kept as their stored object ({@link restoreStoredObject}), not as their archive. */
  constructor(storage: Storage, workDir: string, jobs: number, log: Logger, signal: AbortSignal | undefined, identities: (b: ResolvedBackup) => string[] | undefined, asObject: (b: ResolvedBackup) => boolean) {
    this.storage = storage;
    this.workDir = workDir;
    this.log = log;
    this.identities = identities;
    this.asObject = asObject;
    this.slot = limiter(jobs);
    const onAbort = () => this.stop.abort(signal!.reason);
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.unlink = () => signal?.removeEventListener('abort', onAbort);
  }

  /** Starts `backup`'s download ahead of its restore, unless it is larger than {@link AHEAD_MAX_BYTES} (then {@link take} downloads it). */
  start(backup: ResolvedBackup): void {
    const m = backup.manifest;
    if ((this.asObject(backup) ? m.object.sizeBytes : m.archiveSizeBytes) <= AHEAD_MAX_BYTES) this.fetch(backup);
  }

  /** `backup`'s downloaded archive or object, once its download ended (its `problems` say whether it matched the manifest). */
  take(backup: ResolvedBackup): Promise<Fetched> {
    return this.fetch(backup);
  }

  /** Removes `backup`'s archive (after its restore, or when it is not needed), once its download ended. */
  release(backup: ResolvedBackup): Promise<void> {
    const dir = this.dirs.get(backup);
    if (!dir) return Promise.resolve();
    this.dirs.delete(backup);
    const removed = (async () => {
      await this.fetches.get(backup)?.catch(() => undefined);
      const made = await dir.catch(() => undefined);
      if (made) await rm(made, { recursive: true, force: true }).catch(() => undefined);
    })();
    this.removing.add(removed);
    return removed.finally(() => this.removing.delete(removed));
  }

  /** Removes `backup`'s archive in the background (a database that fails before its restore); {@link close} waits for it. */
  discard(backup: ResolvedBackup): void {
    void this.release(backup);
  }

  /** Stops every download still running and removes every scratch directory. */
  async close(): Promise<void> {
    this.stop.abort(new Error('stopped: the server restore ended'));
    this.unlink();
    for (const b of [...this.dirs.keys()]) void this.release(b);
    await Promise.allSettled([...this.removing]);
  }

  private fetch(backup: ResolvedBackup): Promise<Fetched> {
    let f = this.fetches.get(backup);
    if (f) return f;
    let madeDir!: (dir: string) => void;
    let noDir!: (err: unknown) => void;
    const dir = new Promise<string>((resolve, reject) => ((madeDir = resolve), (noDir = reject)));
    dir.catch(() => undefined); // read by release()
    this.dirs.set(backup, dir);
    f = this.slot(async () => {
      let dir: string;
      try {
        this.stop.signal.throwIfAborted();
        dir = await mkdtemp(path.join(this.workDir, 'pg-backup-restore-'));
        madeDir(dir);
      } catch (err) {
        noDir(err);
        throw err;
      }
      const { manifest } = backup;
      const stored = this.asObject(backup);
      this.log.info(`${manifest.database}: downloading ${this.storage.uri(backup.objectKey)} (${formatBytes(manifest.object.sizeBytes)}; needs ${formatBytes(stored ? manifest.object.sizeBytes : manifest.archiveSizeBytes)} free in ${this.workDir})`);
      if (!stored) return { ...(await downloadArchive(this.storage, backup, dir, this.stop.signal, this.identities(backup))), stored };
      const part = storedParts(backup)[0]!;
      const file = path.join(dir, path.basename(part.key));
      return { path: file, problems: await downloadObject(this.storage, part, file, this.stop.signal), stored };
    });
    f.catch(() => undefined);
    this.fetches.set(backup, f);
    return f;
  }
}

/** A name as an SQL identifier. */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
