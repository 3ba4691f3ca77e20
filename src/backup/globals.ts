import path from 'node:path';
import { Writable } from 'node:stream';
import type pg from 'pg';
import { UsageError, messageOf } from '../errors.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';
import { findAll, findPgBinary, type PgBinary } from '../postgres/binaries.ts';
import { installPgClient } from '../postgres/install-client.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { connect, serverFacts } from '../postgres/server.ts';
import type { ArchiveSink } from './readback.ts';
import { TOOL } from '../version.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import type { S3Settings, Storage } from '../storage/index.ts';
import { retainUntil } from '../storage/s3/config.ts';
import type { CompressionSpec } from './compression.ts';
import { GLOBALS_DATABASE, backupKeys } from './keys.ts';
import { ManifestSchema, type Manifest } from './manifest.ts';
import { uploadStream, type MirrorTarget, type StreamCounters } from './upload-stream.ts';
import { startProgress } from './progress.ts';

/**
 * A dump run's globals: `pg_dumpall --globals-only` — roles, role memberships, role settings
 * (`ALTER ROLE … SET`), role passwords (SCRAM verifiers) and tablespaces, the objects of a
 * PostgreSQL cluster that no database's `pg_dump` archive holds (PostgreSQL docs, pg_dumpall:
 * "--globals-only: Dump only global objects (roles and tablespaces), no databases"). Stored as
 * plain SQL under the reserved key segment `@globals` (keys.ts, {@link GLOBALS_DATABASE}),
 * compressed and encrypted like the run's dumps (same plan: compression, age recipients, SSE,
 * Object Lock), with its own manifest (`kind: 'globals'`), written last: all or nothing.
 *
 * The object holds role password hashes when the dumping role can read `pg_authid` (a
 * superuser): secrets, hence the same encryption as the dumps. A role that cannot (a managed
 * server's admin, any non-superuser) gets `--no-role-passwords` (roles come back without
 * passwords), recorded as `globals.rolePasswords: false` and said in one warning line.
 */

/** The last comment line `pg_dumpall` writes to complete output (a truncated object lacks it). */
export const GLOBALS_TRAILER = '-- PostgreSQL database cluster dump complete';

/**
 * What a globals dump reads of the run's dump plan (`DumpPlan` in src/commands/dump-plan.ts has
 * all of it): where and how the run's dumps are stored, so the globals are stored the same way.
 */
export interface GlobalsPlan {
  service: string;
  environment: string;
  /** The run's first target: with `--all-databases`, the URL's (maintenance) database. */
  connection?: DatabaseConnection;
  compression: CompressionSpec;
  /** age recipients: encrypted after compression like the dumps. */
  encryptTo?: readonly string[];
  /** Compression and encryption suffix, e.g. `.zst.age` (the object is `<id>.sql<fileSuffix>`). */
  fileSuffix: string;
  /** The stall watchdog: fail after this long with no byte moving, in ms; 0 disables. */
  stallTimeoutMs: number;
  /** Progress report interval in ms (default: 500 on a terminal, 10 000 elsewhere). */
  progressIntervalMs?: number;
  mirrorStallMs: number;
  installClient: boolean;
  storage: Storage;
  mirror?: { storage: Storage };
  /** Object Lock retention and SSE as given for the run. */
  s3?: S3Settings;
  manifest: { serverSideEncryption?: Manifest['serverSideEncryption']; context?: Manifest['context'] };
}

/** What {@link dumpGlobals} stored. */
export interface GlobalsResult {
  manifest: Manifest;
  backupUri: string;
  manifestUri: string;
  /** The object's key relative to the storage location. */
  objectKey: string;
  manifestKey: string;
  /** Role password hashes are in the object (the role could read `pg_authid`). */
  rolePasswords: boolean;
}

/** The run a globals object belongs to (recorded in its manifest's `run`). */
export interface GlobalsRun {
  /** `run-<stamp>-<6 hex>` (keys.ts `newRunId`). */
  id: string;
  /** Every database the run set out to dump, in order. */
  databases: string[];
  /** The databases were discovered on the server (`--all-databases`), not listed. */
  allDatabases: boolean;
}

/** What the server says about its globals before they are dumped. */
export interface GlobalsFacts {
  /** The connected role may read `pg_catalog.pg_authid` (where the password hashes are). */
  canReadPasswords: boolean;
  /** Role names, `pg_*` (predefined roles) left out, sorted. */
  roles: string[];
  /** Tablespace names besides `pg_default` and `pg_global`, sorted. */
  tablespaces: string[];
  /** The connected role's name. */
  user: string;
}

/** Reads {@link GlobalsFacts} (catalogs every role may read: pg_roles, pg_tablespace). */
export async function readGlobalsFacts(client: pg.Client): Promise<GlobalsFacts> {
  const { rows } = await client.query<{ pw: boolean; roles: string[] | null; tablespaces: string[] | null; u: string }>(
    `SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS pw,
            (SELECT array_agg(rolname::text ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_') AS roles,
            (SELECT array_agg(spcname::text ORDER BY spcname) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')) AS tablespaces,
            current_user AS u`,
  );
  const row = rows[0]!;
  return { canReadPasswords: row.pw, roles: row.roles ?? [], tablespaces: row.tablespaces ?? [], user: row.u };
}

/**
 * The `pg_dumpall` beside `pgDump` (same directory: same version, as a client package installs
 * them). When that directory has none (a `PG_BIN_DIR` holding only a pg_dump), the closest
 * pg_dumpall of `pgDump`'s major or newer found in the usual places.
 * @throws UsageError naming what was found and what to install.
 */
export async function findPgDumpall(pgDump: PgBinary, serverMajor: number): Promise<PgBinary> {
  const dir = path.dirname(pgDump.path);
  const beside = (await findAll('pg_dumpall')).find((b) => path.dirname(b.path) === dir);
  if (beside) return beside;
  const elsewhere = (await findAll('pg_dumpall', { ...process.env, PG_BIN_DIR: undefined }))
    .filter((b) => b.major >= Math.max(serverMajor, pgDump.major))
    .sort((a, b) => a.major - b.major)[0];
  if (elsewhere) return elsewhere;
  return findPgBinary('pg_dumpall', Math.max(serverMajor, pgDump.major), `dumping the globals (roles, tablespaces) beside pg_dump ${pgDump.version} (${pgDump.path})`);
}

/**
 * Dumps the globals of the server `plan.connection` is on: `pg_dumpall --globals-only` (with
 * `--no-role-passwords` when the role cannot read `pg_authid`) → compression → (age) → SHA-256 →
 * upload, through the dump's own pipeline ({@link uploadStream}: aborted on any failure, nothing
 * half-written), then the manifest, last and never over an existing one. With a mirror, the
 * same bytes are teed to it and the manifest put after the primary's. The dump's stall watchdog
 * (`--stall-timeout`) and progress lines apply as to a database.
 * @param client an open connection to `plan.connection` to use (closed here) instead of a new one.
 * @throws UsageError when the server cannot be reached or no pg_dump/pg_dumpall of the server major is installed.
 * @throws Error when pg_dumpall or the upload fails.
 */
export async function dumpGlobals(plan: GlobalsPlan, rt: { logger: Logger; signal?: AbortSignal; now: () => Date }, run: GlobalsRun, client?: pg.Client): Promise<GlobalsResult> {
  const conn = plan.connection!;
  const c = client ?? (await connect(conn, 'pg-backup dump'));
  let facts: GlobalsFacts;
  let server: Awaited<ReturnType<typeof serverFacts>>;
  try {
    server = await serverFacts(c);
    facts = await readGlobalsFacts(c);
  } finally {
    await c.end().catch(() => undefined);
  }
  const why = `dumping the globals of PostgreSQL ${server.version} at ${conn.display}`;
  const pgDump = await findPgBinary('pg_dump', server.major, why).catch(async (err: unknown) => {
    if (!plan.installClient || !(err instanceof UsageError)) throw err;
    await installPgClient(server.major, rt.logger);
    return findPgBinary('pg_dump', server.major, why);
  });
  const pgDumpall = await findPgDumpall(pgDump, server.major);
  if (!facts.canReadPasswords) {
    rt.logger.warn(`${GLOBALS_DATABASE}: role passwords NOT included: role ${facts.user} cannot read pg_authid (not a superuser, e.g. on a managed server), so the globals are dumped with --no-role-passwords; roles come back without passwords, set them after a restore (ALTER ROLE … PASSWORD)`);
  }
  const startedAt = rt.now();
  const keys = backupKeys({ service: plan.service, environment: plan.environment, database: GLOBALS_DATABASE }, startedAt, `.sql${plan.fileSuffix}`);
  const args = ['--globals-only', ...(facts.canReadPasswords ? [] : ['--no-role-passwords']), '--no-password'];
  // The dump's stall watchdog (no byte moved for --stall-timeout) and progress lines, as for a database.
  const stall = new AbortController();
  const signal = rt.signal ? AbortSignal.any([rt.signal, stall.signal]) : stall.signal;
  const counters: StreamCounters[] = [];
  const sum = (pick: (c: StreamCounters) => number) => counters.reduce((n, c) => n + pick(c), 0);
  const stopProgress = startProgress(
    { rawBytes: () => sum((c) => c.raw.bytes), storedBytes: () => sum((c) => c.stored.bytes), sentBytes: () => sum((c) => c.sent.bytes) },
    { label: GLOBALS_DATABASE, logger: rt.logger, intervalMs: plan.progressIntervalMs, stallTimeoutMs: plan.stallTimeoutMs, onStall: (message) => stall.abort(new Error(message)) },
  );
  const mirrors: MirrorTarget[] = plan.mirror ? [{ storage: plan.mirror.storage }] : [];
  let stored;
  try {
    stored = await uploadStream(plan.storage, keys.objectKey, (sig) => {
      const p = runPgProgram(pgDumpall, args, { connection: conn, signal: sig });
      return { stream: p.stdout, done: p.done };
    }, { compression: plan.compression, hashes: ['sha256'], signal, onCounters: (c) => counters.push(c), encryptTo: plan.encryptTo && [...plan.encryptTo], noOverwrite: true, mirrors, mirrorStallMs: plan.mirrorStallMs });
  } catch (err) {
    throw stall.signal.aborted && !rt.signal?.aborted ? stall.signal.reason : err;
  } finally {
    stopProgress();
  }
  const finishedAt = rt.now();
  const manifest = ManifestSchema.parse({
    manifestVersion: 1,
    tool: TOOL,
    id: keys.id,
    kind: 'globals',
    service: plan.service,
    environment: plan.environment,
    database: GLOBALS_DATABASE,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationMs: finishedAt.getTime() - startedAt.getTime(),
    format: 'plain',
    compression: plan.compression,
    object: { name: keys.objectKey.slice(keys.objectKey.lastIndexOf('/') + 1), sizeBytes: stored.storedBytes, sha256: stored.digests.sha256! },
    roles: facts.roles,
    archiveSizeBytes: stored.rawBytes,
    pgDump: { path: pgDumpall.path, version: pgDumpall.version, major: pgDumpall.major },
    server: { version: server.version, versionNum: server.versionNum, major: server.major },
    databaseSizeBytes: 0,
    tables: [],
    encryption: plan.encryptTo ? { scheme: 'age', recipients: [...plan.encryptTo] } : undefined,
    serverSideEncryption: plan.manifest.serverSideEncryption,
    objectLock: plan.s3?.objectLock ? { mode: plan.s3.objectLock.mode, retainUntil: retainUntil(plan.s3.objectLock, startedAt.getTime()).toISOString() } : undefined,
    context: plan.manifest.context,
    run: { id: run.id, databases: [...run.databases], allDatabases: run.allDatabases },
    globals: { rolePasswords: facts.canReadPasswords, roles: facts.roles, tablespaces: facts.tablespaces },
  } satisfies Manifest);
  const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
  await plan.storage.put(keys.manifestKey, manifestText, { contentType: 'application/json', noOverwrite: true });
  if (plan.mirror) {
    const mirrorError = stored.mirrorErrors.find((e) => e !== undefined);
    const copied = mirrorError === undefined
      ? await plan.mirror.storage.put(keys.manifestKey, manifestText, { contentType: 'application/json', noOverwrite: true, signal: AbortSignal.timeout(plan.mirrorStallMs) }).then(() => undefined, (err: unknown) => err)
      : mirrorError;
    if (copied !== undefined) rt.logger.warn(`${GLOBALS_DATABASE}: mirror copy to ${plan.mirror.storage.uri(keys.objectKey)} FAILED: ${messageOf(copied)} (the globals themselves are complete)`);
  }
  rt.logger.info(`${GLOBALS_DATABASE}: OK in ${formatSeconds(manifest.durationMs)}, ${formatBytes(stored.storedBytes)}: ${facts.roles.length} role${facts.roles.length === 1 ? '' : 's'}, ${facts.tablespaces.length} tablespace${facts.tablespaces.length === 1 ? '' : 's'}, role passwords ${facts.canReadPasswords ? 'included' : 'NOT included'} (pg_dumpall ${pgDumpall.version}${plan.encryptTo ? ', encrypted with age' : ''})`);
  return { manifest, backupUri: plan.storage.uri(keys.objectKey), manifestUri: plan.storage.uri(keys.manifestKey), objectKey: keys.objectKey, manifestKey: keys.manifestKey, rolePasswords: facts.canReadPasswords };
}

/**
 * A sink that reads a globals object back without running it: it must be text (no NUL byte)
 * and end with pg_dumpall's completion trailer ({@link GLOBALS_TRAILER}); a truncated or
 * foreign object fails. For `verify` (a globals object is replayed by `restore --server` and
 * `drill --server`, not by a single-database verify).
 */
export function readGlobalsSink(): ArchiveSink {
  let settle: (err?: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  done.catch(() => undefined);
  let tail = '';
  let binary = false;
  const stream = new Writable({
    write(chunk: Buffer, _enc, callback) {
      if (chunk.includes(0)) binary = true;
      tail = (tail + chunk.toString('latin1')).slice(-4096);
      callback();
    },
    final(callback) {
      const err = binary
        ? new Error('the globals object is not plain SQL (it holds NUL bytes)')
        : tail.includes(GLOBALS_TRAILER) ? undefined : new Error(`the globals SQL does not end with "${GLOBALS_TRAILER}": it is truncated`);
      settle(err);
      callback(err);
    },
    destroy(err, callback) {
      settle(new Error('the globals read was stopped before the end'));
      callback(err);
    },
  });
  return { stream, done };
}

/** Whether a manifest is a run's globals (not a database's dump). */
export function isGlobalsManifest(m: Pick<Manifest, 'kind' | 'database'>): boolean {
  return m.kind === 'globals';
}

/**
 * Refuses a single-database command (drill, restore) given a run's globals.
 * @throws UsageError: one line naming the whole-server command to use instead.
 */
export function refuseGlobals(m: Pick<Manifest, 'kind' | 'database' | 'id'>, command: 'drill' | 'restore'): void {
  if (!isGlobalsManifest(m)) return;
  throw new UsageError(`${m.id} holds a run's globals (roles, tablespaces), not a database: ${command} a whole run with "pg-backup ${command} --server" (globals first, then its databases)`);
}
