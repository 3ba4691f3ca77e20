import { createHash } from 'node:crypto';
import type pg from 'pg';
import { backupKeys, newRunId, type BackupKeys } from '../backup/keys.ts';
import { checkWritable } from './dump-preflight.ts';
import { checkReadable } from '../postgres/readable.ts';
import { ManifestSchema, type Manifest } from '../backup/manifest.ts';
import { loadIdentities } from '../backup/encryption.ts';
import { startProgress } from '../backup/progress.ts';
import { uploadStream, type MirrorTarget, type StreamCounters } from '../backup/upload-stream.ts';
import { UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary, prefetchPrograms, type PgBinary } from '../postgres/binaries.ts';
import { resolveConnection, type DatabaseConnection } from '../postgres/connection.ts';
import { selectTables, type DumpSelection, type SelectedTable } from '../postgres/dump-options.ts';
import { pgDumpThroughZstd } from '../postgres/dump-pipe.ts';
import { installPgClient } from '../postgres/install-client.ts';
import { findMigrationHead, type MigrationHead } from '../postgres/migrations.ts';
import { capturePrivileges, type Privileges } from '../postgres/privileges.ts';
import { runPgProgram } from '../postgres/processes.ts';
import { COUNT_SETTINGS_SQL, connect, countRows, listUserTables, serverFacts, type ServerFacts, type TableRowCount } from '../postgres/server.ts';
import { Standby } from '../postgres/standby.ts';
import type { S3Settings, ServerTime, Storage } from '../storage/index.ts';
import { TOOL } from '../version.ts';
import { objectLockOf, planDump, type ChecksumSidecar, type DumpPlan, type DumpPlanInput } from './dump-plan.ts';
import { dumpDirectory, type StoredFile } from './dump-directory.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import type { VerifyLevel, VerifyResult } from './verify.ts';

export type { ChecksumSidecar } from './dump-plan.ts';
export { planDump, forDatabase, type DumpPlan } from './dump-plan.ts';

/** Options of {@link dump}: the plan's inputs ({@link DumpPlanInput}), the database, the signal and the clock. */
export interface DumpOptions extends DumpPlanInput {
  /** libpq URL; default `DATABASE_URL`, then the `PG*` variables. */
  databaseUrl?: string;
  /** Aborting cancels the dump: pg_dump is stopped and the multipart upload aborted. */
  signal?: AbortSignal;
  /** Clock, for tests. */
  now?: () => Date;
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


/** What a dump needs besides its plan: where to log, how to be cancelled, the clock. */
export interface DumpRuntime {
  logger: Logger;
  /** Aborting cancels the dump: pg_dump is stopped and the multipart upload aborted. */
  signal?: AbortSignal;
  now: () => Date;
  /** The dump run this backup belongs to (`run.id` from keys.ts `newRunId`), recorded in its manifest. */
  run?: { id: string };
}

/**
 * Takes one backup of one database. custom and plain: `pg_dump` → compression (its own process)
 * → SHA-256 → multipart upload, with no temporary file and memory bounded by part size ×
 * (queue size + 1). directory: `pg_dump --format=directory --jobs N` spools to the work dir,
 * then each file is compressed and uploaded under `<id>.dir/`. Row counts per table and the
 * migration head are read in the dump's own snapshot. The manifest is written last, only after
 * pg_dump and the compressor exited 0 and every upload completed; on any failure the multipart
 * upload is aborted and nothing is visible as a backup.
 *
 * The options are read once into a frozen {@link DumpPlan} ({@link planDump}); {@link runDump}
 * then runs the stages on it.
 *
 * Needs only write access to the bucket (PutObject, multipart upload): no List, Get or Head.
 * @throws UsageError for bad options, an unreachable database or bucket, a filter matching nothing, or a pg_dump older than the server.
 * @throws Error when pg_dump, the compressor or the upload fails or stalls.
 */
export async function dump(options: DumpOptions): Promise<DumpResult> {
  const plan = await planDump(options, resolveConnection(options.databaseUrl));
  await checkWritable(plan.storage, plan, options.signal); // bucket and credentials before "dumping …"
  const now = options.now ?? (() => new Date());
  return runDump(plan, { logger: options.logger, signal: options.signal, now, run: { id: newRunId(now()) } });
}

/**
 * Runs a planned dump, stage by stage: open the snapshot (connect, server facts, pg_dump for the
 * server major, export the snapshot) → read the selection in it → start pg_dump and, beside it,
 * the facts (migration head, roles, row counts) in the same snapshot → compress → (encrypt) →
 * hash → upload → sidecars → manifest (last) → mirror copy and verify, when asked for.
 * @param client an open connection to `plan.connection` to use (and close) instead of a new one.
 * @throws as {@link dump}.
 */
export async function runDump(plan: DumpPlan, rt: DumpRuntime, client?: pg.Client): Promise<DumpResult> {
  // The store's clock is asked for while the database is connected to; checked before the stamp.
  const storeTime = plan.storage.serverTime?.({ signal: rt.signal });
  storeTime?.catch(() => undefined);
  const session = await openSnapshot(plan, rt, client);
  try {
    const selected = await selectInSnapshot(plan, session, rt.logger);
    checkClock(plan.storage, await storeTime, rt.now(), plan, rt.logger);
    const startedAt = rt.now();
    const keys = backupKeys({ service: plan.service, environment: plan.environment, database: session.conn.database }, startedAt, plan.objectSuffix);
    // pg_dump starts first; the facts queue on our own connection, in the same snapshot, while it runs.
    // A failed fact ends the snapshot's transaction, so pg_dump then fails to import the snapshot (or
    // later, with a closed pipe): the fact's error is the first real cause, and it stops pg_dump.
    const factsFailed = new AbortController();
    const facts = readFacts(session, selected, recordsPrivileges(plan));
    facts.catch((err: unknown) => {
      session.standby?.note(err); // a recovery conflict here is the cause of pg_dump's lost snapshot
      // A server's refusal (SQLSTATE) is the cause: it stops pg_dump. A lost connection (the server
      // stopped, the backend terminated) is pg_dump's too, which then says it in its own words.
      if (err instanceof FactsError || err instanceof UsageError) factsFailed.abort(err);
    });
    const stream = streamArchive(plan, session, keys, { ...rt, signal: rt.signal ? AbortSignal.any([rt.signal, factsFailed.signal]) : factsFailed.signal });
    stream.catch(() => undefined);
    const archive = await stream.catch(async (err: unknown) => {
      if (!factsFailed.signal.aborted && !rt.signal?.aborted && isSnapshotLost(err)) await facts.catch(() => undefined);
      throw factsFailed.signal.aborted && !rt.signal?.aborted ? factsFailed.signal.reason : err;
    });
    const sidecars = await writeSidecars(plan, session, keys, archive, rt);
    const { tableRows, migrationHead, roles, privileges } = await facts;
    await session.client.query('COMMIT');
    await session.standby?.resume(session.client); // the snapshot is released: replay may go on
    const manifest = buildManifest(plan, session, { keys, startedAt, finishedAt: rt.now(), archive, sidecars: sidecars.written, selected, tableRows, migrationHead, roles, privileges, run: rt.run });
    // The manifest is the commit marker: written last (and never over an existing one).
    const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
    await plan.storage.put(keys.manifestKey, manifestText, { contentType: 'application/json', noOverwrite: true });
    sidecars.forMirror.push({ key: keys.manifestKey, body: manifestText, contentType: 'application/json' });
    rt.logger.info(`${session.conn.database}: OK in ${formatSeconds(manifest.durationMs)}, ${formatBytes(archive.storedBytes)} (${formatBytes(archive.rawBytes)} before ${plan.compression.algorithm}), sha256 ${manifest.object.sha256}`);
    const result: DumpResult = {
      manifest,
      restoreCommand: `npx pg-backup restore --from ${shellQuote(plan.to)} --backup ${shellQuote(keys.objectKey)} --target-url "$TARGET_DATABASE_URL"`,
      backupUri: plan.storage.uri(keys.objectKey),
      manifestUri: plan.storage.uri(keys.manifestKey),
      objectKey: keys.objectKey,
      manifestKey: keys.manifestKey,
    };
    if (plan.mirror) result.mirror = await finishMirror(plan, keys.objectKey, archive.mirrorError ?? sidecars.mirrorError, sidecars.forMirror, rt);
    if (plan.verify !== 'none') result.verification = await verifyAfterDump(plan, keys.objectKey, rt);
    return result;
  } catch (err) {
    throw session.standby?.explain(err) ?? err;
  } finally {
    await session.standby?.resume(); // every exit path: failure, signal, closed output
    await session.client.end().catch(() => undefined);
  }
}

/**
 * Stage 2b, before anything is stamped: this machine's clock (`now`) against the store's
 * (`serverTime`: its `Date` header advanced by the time since it arrived). A backup's key and
 * manifest carry this machine's time; stamped ahead, it would be FUTURE for every reader (never
 * latest, never fresh: src/backup/clock.ts); stamped behind, it looks older than it is. Further
 * apart than `plan.maxClockSkewMs`: a warning, or with `enforceClockSkew` a refusal. No store
 * clock (file://, or no answer: then a warning with `enforceClockSkew`): nothing to compare.
 * @throws UsageError with both times when the clocks are too far apart and `enforceClockSkew` is set.
 */
export function checkClock(storage: Pick<Storage, 'url' | 'serverTime'>, serverTime: ServerTime | undefined, now: Date, plan: Pick<DumpPlan, 'maxClockSkewMs' | 'enforceClockSkew'>, logger: Logger): void {
  if (!serverTime) {
    if (storage.serverTime && plan.enforceClockSkew) logger.warn(`the clock of ${storage.url} could not be read (no answer within 5 s): this machine's clock was not compared with it`);
    return;
  }
  const storeNow = new Date(serverTime.serverDate.getTime() + Math.max(0, performance.now() - serverTime.receivedAtMs));
  const skew = now.getTime() - storeNow.getTime();
  // The Date header has whole seconds: 1 s of slack on top of the tolerance.
  if (Math.abs(skew) <= plan.maxClockSkewMs + 1000) return;
  const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const line = `this machine's clock says ${iso(now)}, the store ${storage.url} says ${iso(storeNow)} (its Date header): ${formatSeconds(Math.abs(skew))} ${skew > 0 ? 'ahead' : 'behind'}, over ${formatSeconds(plan.maxClockSkewMs)} (--max-clock-skew)`;
  if (plan.enforceClockSkew) throw new UsageError(`${line}: refusing to stamp a backup with this time, nothing was written; set the clock right (NTP: timedatectl set-ntp true, chrony) or raise --max-clock-skew`);
  logger.warn(`${line}: the backup is stamped with this machine's time${skew > 0 ? ', so readers take it as FUTURE (never latest, never fresh)' : ', so it looks older than it is'}; set the clock right (NTP), or give --max-clock-skew to refuse such dumps`);
}

/** The dump's connection, in the transaction whose snapshot pg_dump imports. */
interface Session {
  conn: DatabaseConnection;
  client: pg.Client;
  server: ServerFacts;
  pgDump: PgBinary;
  /** `pg_export_snapshot()`'s id. */
  snapshot: string;
  /** Set when the server is a hot standby (src/postgres/standby.ts). */
  standby?: Standby;
}

/**
 * Stage 1: connects (or takes `given`), reads the server facts, finds pg_dump for the server
 * major (installing the client when the plan says so), then opens a REPEATABLE READ, READ ONLY
 * transaction and exports its snapshot. The snapshot stays exported while this transaction is
 * open: pg_dump imports it and the facts are read in it, so both see the same data (PostgreSQL
 * docs 9.27.5, "Snapshot Synchronization Functions"). The search for pg_dump binaries (a
 * `--version` per copy found) runs while the connection is made.
 */
async function openSnapshot(plan: DumpPlan, rt: DumpRuntime, given?: pg.Client): Promise<Session> {
  const conn = plan.connection!;
  prefetchPrograms('pg_dump');
  const client = given ?? (await connect(conn, 'pg-backup dump'));
  let standby: Standby | undefined;
  try {
    const server = await serverFacts(client);
    const why = `dumping PostgreSQL ${server.version} at ${conn.display}`;
    const pgDump = await findPgBinary('pg_dump', server.major, why).catch(async (err: unknown) => {
      if (!plan.installClient || !(err instanceof UsageError)) throw err;
      await installPgClient(server.major, rt.logger);
      return findPgBinary('pg_dump', server.major, why);
    });
    rt.logger.info(`${conn.database}: dumping ${conn.display} (PostgreSQL ${server.version}, ${formatBytes(server.databaseSizeBytes)}) with pg_dump ${pgDump.version}, ${plan.format} format → ${plan.storage.url}`);
    // A hot standby: replay paused before the snapshot is taken, when the role may (or a warning).
    standby = await Standby.open(client, conn, server.major, { logger: rt.logger, label: conn.database, signal: rt.signal });
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const snapshot = (await client.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
    await standby?.markSnapshot(client);
    return { conn, client, server, pgDump, snapshot, standby };
  } catch (err) {
    await standby?.resume();
    await client.end().catch(() => undefined);
    throw standby?.explain(err) ?? err;
  }
}

/**
 * Stage 2: the tables pg_dump will dump, read in the snapshot before anything is written, so an
 * include pattern that matches nothing fails as a UsageError with nothing uploaded.
 */
async function selectInSnapshot(plan: DumpPlan, session: Session, logger: Logger): Promise<SelectedTable[]> {
  // A profile's platform schema that this database lacks is no news: only the user's own patterns warn.
  const quiet = new Set((plan.profile?.excludeSchemas ?? []).map((p) => `--exclude-schema ${JSON.stringify(p)} `));
  if (plan.profile) logger.info(`${session.conn.database}: profile ${plan.profile.name}: ${plan.profile.excludeSchemas.length ? `--exclude-schema ${plan.profile.excludeSchemas.join(' --exclude-schema ')}` : 'no platform schemas to exclude'}`);
  const selected = await selectTables(session.client, await listUserTables(session.client), plan.selection, (m) => {
    if (![...quiet].some((q) => m.startsWith(q))) logger.warn(`${session.conn.database}: ${m}`);
  });
  // Everything the dump reads must be readable by the role: refused here, before pg_dump starts.
  await checkReadable(session.client, plan.selection, session.conn.database);
  logger.debug?.(`${session.conn.database}: snapshot ${session.snapshot} exported; ${selected.filter((t) => t.withData).length} tables to count in it`);
  return selected;
}

/** What the snapshot says beside the archive: exact row counts, the migration head, the roles. */
interface SnapshotFacts {
  tableRows: TableRowCount[];
  migrationHead: MigrationHead | undefined;
  roles: string[];
  /** Owners, grants, RLS and settings ({@link capturePrivileges}); undefined when not recorded ({@link recordsPrivileges}). */
  privileges?: Privileges;
}

/**
 * Whether the dump records its privileges: only when the archive holds every object with its
 * owner and grants (no `--no-owner`/`--no-acl`, no schema or table filter), so that a restore
 * can be held to all of them.
 */
function recordsPrivileges(plan: DumpPlan): boolean {
  const o = plan.manifest.options;
  return !o?.noOwner && !o?.noAcl && !o?.schemas?.length && !o?.excludeSchemas?.length && !o?.tables?.length && !o?.excludeTables?.length;
}

/**
 * Stage 3 (beside pg_dump): the migration head, the roles, the privileges and the exact row
 * count of every table whose data is dumped, all read in the dump's snapshot on the session's
 * connection (one query at a time, so they do not add connections or compete with pg_dump for
 * more than one backend).
 */
async function readFacts(session: Session, selected: SelectedTable[], withPrivileges: boolean): Promise<SnapshotFacts> {
  const { client } = session;
  try {
    const migrationHead = await findMigrationHead(client, true);
    const roles = (await client.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")).rows.map((r) => r.rolname);
    const privileges = withPrivileges ? await capturePrivileges(client) : undefined;
    await client.query(COUNT_SETTINGS_SQL);
    const tableRows = await countRows(client, selected.filter((t) => t.withData));
    return { tableRows, migrationHead, roles, privileges };
  } catch (err) {
    const e = err as { code?: string };
    // A server error (SQLSTATE): the real cause, said as such; the snapshot's transaction ended with it.
    if (e.code === '42501') throw new UsageError(`${session.conn.database}: reading the row counts in the dump's snapshot: ${messageOf(err)}; skip the object with --exclude-schema / --exclude-table, or GRANT pg_read_all_data to the role (PostgreSQL 14+); nothing was written`, { cause: err });
    // A connection ended by the server (class 08, or 57P: shutdown, terminated backend) is no
    // cause of its own: pg_dump meets the same end and says it in its own words.
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && !/^(08|57P)/.test(e.code)) {
      throw new FactsError(`${session.conn.database}: reading the row counts in the dump's snapshot failed: ${messageOf(err)} (SQLSTATE ${e.code}); nothing was written`, { cause: err });
    }
    throw err;
  }
}

/**
 * A fact read in the dump's snapshot failed on the server (permission denied, a cancelled
 * statement…): the first real cause of a failed dump, whatever pg_dump says after it.
 */
class FactsError extends Error {
  override readonly name = 'FactsError';
}

/**
 * pg_dump's error when the snapshot it was told to import is gone: a consequence of the end of
 * the exporting transaction (a failed fact on our connection, or that connection lost), never a
 * cause by itself; the caller then waits for the facts, which fail at once in both cases, and
 * reports their error. PostgreSQL's words: "could not import the requested snapshot", "invalid
 * snapshot identifier" (src/backend/utils/time/snapmgr.c). A closed pipe is not matched: it
 * follows a failed compressor or upload, whose error is the one reported, without waiting for
 * the row counts.
 */
export function isSnapshotLost(err: unknown): boolean {
  return /could not import the requested snapshot|invalid snapshot identifier/i.test(messageOf(err));
}


/** What the archive stage stored. */
interface StoredArchive {
  /** Bytes stored (compressed, encrypted). */
  storedBytes: number;
  /** Bytes pg_dump wrote (the archive before compression). */
  rawBytes: number;
  sha256: string;
  md5?: string;
  /** Directory format: each file. */
  files?: StoredFile[];
  /** Why the mirror's copy failed, if it did. */
  mirrorError?: unknown;
}

/**
 * Stage 4: pg_dump → compress → (encrypt) → hash → upload, with the progress reporter and the
 * stall watchdog around it. custom and plain stream into one object; directory spools, then
 * uploads each file ({@link dumpDirectory}).
 */
async function streamArchive(plan: DumpPlan, session: Session, keys: BackupKeys, rt: DumpRuntime): Promise<StoredArchive> {
  const stall = new AbortController();
  const signal = rt.signal ? AbortSignal.any([rt.signal, stall.signal]) : stall.signal;
  const args = [...plan.pgDumpArgs, `--snapshot=${session.snapshot}`, '--no-password'];
  const mirrors: MirrorTarget[] = plan.mirror ? [{ storage: plan.mirror.storage }] : [];
  let mirrorError: unknown;
  const noteMirror = (errors: unknown[]) => {
    mirrorError ??= errors.find((e) => e !== undefined);
  };
  // Every stream's counters (the directory format uploads several files at once): summed.
  const counters: StreamCounters[] = [];
  const sum = (pick: (c: StreamCounters) => number) => counters.reduce((n, c) => n + pick(c), 0);
  let spoolBytes: () => number = () => 0;
  const stopProgress = startProgress(
    { rawBytes: () => sum((c) => c.raw.bytes) + spoolBytes(), storedBytes: () => sum((c) => c.stored.bytes), sentBytes: () => sum((c) => c.sent.bytes) },
    { label: session.conn.database, logger: rt.logger, intervalMs: plan.progressIntervalMs, stallTimeoutMs: plan.stallTimeoutMs, onStall: (message) => stall.abort(new Error(message)) },
  );
  try {
    if (plan.format === 'directory') {
      const stored = await dumpDirectory(plan, session, { args, folder: keys.objectKey, signal, logger: rt.logger, mirrors, onSpool: (fn) => (spoolBytes = fn), onCounters: (c) => counters.push(c), onMirrorErrors: noteMirror });
      return { ...stored, mirrorError };
    }
    const dumpArgs = [`--format=${plan.format}`, ...(plan.format === 'custom' ? ['--compress=0'] : []), ...args];
    const s = await uploadStream(plan.storage, keys.objectKey, (sig) => {
      // zstd: an OS pipe from pg_dump into zstd, the uncompressed stream never enters this process.
      if (plan.compression.algorithm === 'zstd') return pgDumpThroughZstd(session.pgDump, dumpArgs, session.conn, plan.compression.level ?? 3, sig);
      const p = runPgProgram(session.pgDump, dumpArgs, { connection: session.conn, signal: sig });
      return { stream: p.stdout, done: p.done };
    }, { compression: plan.compression, hashes: [...plan.hashes], sizeHintBytes: session.server.databaseSizeBytes, signal, onCounters: (c) => counters.push(c), encryptTo: plan.encryptTo && [...plan.encryptTo], noOverwrite: true, mirrors, mirrorStallMs: plan.mirrorStallMs });
    noteMirror(s.mirrorErrors);
    return { storedBytes: s.storedBytes, rawBytes: s.rawBytes, sha256: s.digests.sha256!, md5: s.digests.md5, mirrorError };
  } catch (err) {
    throw stall.signal.aborted && !rt.signal?.aborted ? stall.signal.reason : err;
  } finally {
    stopProgress();
  }
}

/** A small object written to the primary at once and to the mirror after the primary's manifest. */
interface MirrorPut {
  key: string;
  body: string;
  contentType: string;
}

/**
 * Stage 5: the sidecars, after the archive: the schema-only SQL (`<id>.schema.sql`, same
 * snapshot) and the `md5sum` / `sha256sum` files, so `md5sum -c` works on a downloaded copy.
 */
async function writeSidecars(plan: DumpPlan, session: Session, keys: BackupKeys, archive: StoredArchive, rt: DumpRuntime): Promise<{ written: NonNullable<Manifest['sidecars']>; forMirror: MirrorPut[]; mirrorError?: unknown }> {
  const written: NonNullable<Manifest['sidecars']> = [];
  const forMirror: MirrorPut[] = [];
  let mirrorError: unknown;
  const stem = keys.manifestKey.slice(0, -'.manifest.json'.length);
  const objectName = keys.objectKey.slice(keys.objectKey.lastIndexOf('/') + 1);
  const encSuffix = plan.encryptionSuffix;
  if (plan.schemaSidecar) {
    const schema = await uploadStream(plan.storage, `${stem}.schema.sql${encSuffix}`, (sig) => {
      const p = runPgProgram(session.pgDump, ['--format=plain', '--schema-only', ...plan.pgDumpArgs, `--snapshot=${session.snapshot}`, '--no-password'], { connection: session.conn, signal: sig });
      return { stream: p.stdout, done: p.done };
    }, { compression: { algorithm: 'none' }, signal: rt.signal, encryptTo: plan.encryptTo && [...plan.encryptTo], noOverwrite: true, mirrors: plan.mirror && archive.mirrorError === undefined ? [{ storage: plan.mirror.storage }] : [], mirrorStallMs: plan.mirrorStallMs });
    mirrorError = schema.mirrorErrors.find((e) => e !== undefined);
    written.push({ name: `${stem.slice(stem.lastIndexOf('/') + 1)}.schema.sql${encSuffix}`, kind: 'schema', sizeBytes: schema.storedBytes, sha256: schema.digests.sha256! });
  }
  for (const kind of plan.checksumSidecars) {
    const lines = archive.files
      ? archive.files.map((f) => `${kind === 'md5' ? f.md5 : f.sha256}  ${objectName}/${f.name}${plan.fileSuffix}`)
      : [`${kind === 'md5' ? archive.md5 : archive.sha256}  ${objectName}`];
    const text = `${lines.join('\n')}\n`;
    await plan.storage.put(`${keys.objectKey}.${kind}`, text, { contentType: 'text/plain', noOverwrite: true });
    forMirror.push({ key: `${keys.objectKey}.${kind}`, body: text, contentType: 'text/plain' });
    written.push({ name: `${objectName}.${kind}`, kind, sizeBytes: Buffer.byteLength(text), sha256: createHash('sha256').update(text).digest('hex') });
  }
  return { written, forMirror, mirrorError };
}

/** Stage 6: the manifest, from the plan, the session and what the stages produced (checked by its schema). */
function buildManifest(
  plan: DumpPlan,
  session: Session,
  o: { keys: BackupKeys; startedAt: Date; finishedAt: Date; archive: StoredArchive; sidecars: NonNullable<Manifest['sidecars']>; selected: SelectedTable[]; run?: { id: string } } & SnapshotFacts,
): Manifest {
  const { server, pgDump, conn } = session;
  const withoutData = o.selected.filter((t) => !t.withData);
  return ManifestSchema.parse({
    manifestVersion: 1,
    tool: TOOL,
    id: o.keys.id,
    service: plan.service,
    environment: plan.environment,
    database: conn.database,
    startedAt: o.startedAt.toISOString(),
    finishedAt: o.finishedAt.toISOString(),
    durationMs: o.finishedAt.getTime() - o.startedAt.getTime(),
    format: plan.format,
    compression: plan.compression,
    object: { name: o.keys.objectKey.slice(o.keys.objectKey.lastIndexOf('/') + 1), sizeBytes: o.archive.storedBytes, sha256: o.archive.sha256 },
    files: o.archive.files?.map(({ name, sizeBytes, sha256, archiveSizeBytes }) => ({ name, sizeBytes, sha256, archiveSizeBytes })),
    sidecars: o.sidecars.length ? o.sidecars : undefined,
    options: plan.manifest.options,
    roles: o.roles,
    archiveSizeBytes: o.archive.rawBytes,
    pgDump: { path: pgDump.path, version: pgDump.version, major: pgDump.major },
    server: { version: server.version, versionNum: server.versionNum, major: server.major },
    databaseSizeBytes: server.databaseSizeBytes,
    tables: o.tableRows,
    tablesWithoutData: withoutData.length ? withoutData.map(({ schema, table }) => ({ schema, table })) : undefined,
    migrationHead: o.migrationHead,
    privileges: o.privileges,
    encryption: plan.encryptTo ? { scheme: 'age', recipients: [...plan.encryptTo] } : undefined,
    serverSideEncryption: plan.manifest.serverSideEncryption,
    objectLock: objectLockOf(plan, o.startedAt),
    context: plan.manifest.context,
    standby: session.standby?.record(),
    kind: 'database',
    run: o.run && { id: o.run.id },
  });
}

/**
 * Stage 7a, after the primary's manifest: the small objects (sidecars, then the manifest) go to
 * the mirror, each with a deadline, so a hung mirror can never hold back or cost the primary
 * backup; then the copy is checked ({@link checkMirror}).
 */
async function finishMirror(plan: DumpPlan, objectKey: string, failed: unknown, puts: MirrorPut[], rt: DumpRuntime): Promise<MirrorResult> {
  let mirrorError = failed;
  const mirror = plan.mirror!;
  for (const p of puts) {
    if (mirrorError !== undefined) break;
    await mirror.storage.put(p.key, p.body, { contentType: p.contentType, noOverwrite: true, signal: AbortSignal.timeout(plan.mirrorStallMs) }).catch((err: unknown) => {
      mirrorError ??= (err as Error).name === 'TimeoutError' ? new Error(`writing ${p.key} to the mirror took over ${Math.round(plan.mirrorStallMs / 1000)} s: copy abandoned`) : err;
    });
  }
  return checkMirror(plan, objectKey, mirrorError, rt);
}

/**
 * Stage 7b: the verify right after the dump. An encrypted backup reads back past its checksum
 * only with an identity, which the dump runner should not hold: without one, verify what can be
 * verified (checksum) and say so.
 */
async function verifyAfterDump(plan: DumpPlan, objectKey: string, rt: DumpRuntime): Promise<VerifyResult> {
  const identities = plan.encryptTo ? loadIdentities() : undefined;
  let level = plan.verify as VerifyLevel;
  if (plan.encryptTo && !identities && level !== 'checksum') {
    rt.logger.warn(`the backup is encrypted with age and no identity is set here: verifying at level checksum instead of ${level}; run verify --level ${level} (or a drill) where the identity is`);
    level = 'checksum';
  }
  const { verify } = await import('./verify.ts'); // loaded only by a dump that verifies
  return verify({ from: plan.to, backup: objectKey, level, ageIdentities: identities, s3: plan.verifyS3 ?? plan.s3, logger: rt.logger, signal: rt.signal, workDir: plan.workDir, allowSameOsUser: plan.allowSameOsUser });
}

/**
 * After a dump with a mirror: reports a failed copy, or re-reads the copy and checks its size and
 * SHA-256 against the manifest (a checksum-level verify of the mirror). Mirror credentials
 * without read access leave the copy unverified, with a warning.
 */
async function checkMirror(plan: DumpPlan, objectKey: string, mirrorError: unknown, rt: DumpRuntime): Promise<MirrorResult> {
  const { logger } = rt;
  const uri = plan.mirror!.storage.uri(objectKey);
  if (mirrorError !== undefined) {
    const error = messageOf(mirrorError);
    logger.warn(`mirror copy to ${uri} FAILED: ${error} (the backup itself is complete)`);
    return { uri, ok: false, verified: false, error };
  }
  try {
    const { verify } = await import('./verify.ts');
    const check = await verify({ from: plan.mirror!.to, backup: objectKey, level: 'checksum', s3: plan.mirrorS3, logger: quiet(logger), signal: rt.signal });
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
