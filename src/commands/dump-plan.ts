import { z } from 'zod';
import { compressionSuffix, parseCompression, requireZstd } from '../backup/compression.ts';
import { parseDuration } from '../duration.ts';
import { AGE_SUFFIX, parseRecipients } from '../backup/encryption.ts';
import { validateLabel } from '../backup/keys.ts';
import { parseMaxClockSkew } from '../backup/clock.ts';
import { ManifestSchema, type Manifest } from '../backup/manifest.ts';
import type { MeterHash } from '../backup/meter.ts';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { FORMATS, pgDumpArgs, validateSelection, type DumpSelection } from '../postgres/dump-options.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { retainUntil } from '../storage/s3/config.ts';
import { VERIFY_LEVELS, type VerifyLevel } from './verify.ts';
import { clusterIsolation } from '../postgres/cluster-user.ts';
import { findProfile, resolveDumpProfile, PROFILE_NAMES } from '../postgres/profiles.ts';

/** Checksum files a team's tooling may expect beside each dump (seed 000 uploads an `.md5`). */
export type ChecksumSidecar = 'md5' | 'sha256';

/** Object-name suffix per format, before the compression and encryption suffixes. */
const FORMAT_SUFFIX = { custom: '.dump', plain: '.sql', directory: '.dir' } as const;

/** A storage handle in the plan: opened once, shared by every stage (and every database of a run). */
const StorageSchema = z.custom<Storage>((s) => typeof s === 'object' && s !== null && typeof (s as Storage).upload === 'function', 'an opened Storage');

/** A connection as `resolveConnection` returns it (the password apart from the URL). */
const ConnectionShape = z.object({ url: z.string().min(1), password: z.string().optional(), database: z.string().min(1), display: z.string().min(1) });
const ConnectionSchema = z.custom<DatabaseConnection>((c) => ConnectionShape.safeParse(c).success, 'a resolved database connection');

/**
 * One dump, decided once: what to dump (database, selection), how (format, pg_dump arguments,
 * compression, encryption, hashes, sidecars, time limits) and where (storage, object suffix,
 * mirror, verify). Built by {@link planDump} from `DumpOptions` and the environment, checked by
 * this schema and deeply frozen; every stage of a dump reads it and none re-derives an option.
 */
export const DumpPlanSchema = z.object({
  /** Key labels (validated: `[A-Za-z0-9._-]`). */
  service: z.string().min(1),
  environment: z.string().min(1),
  /** The database and how to reach it; `undefined` only in a run's shared plan (see {@link forDatabase}). */
  connection: ConnectionSchema.optional(),
  format: z.enum(FORMATS),
  /** The selection as given (validated), for the table filter; `pgDumpArgs` is what pg_dump gets. */
  selection: z.custom<DumpSelection & { format: (typeof FORMATS)[number] }>((s) => typeof s === 'object' && s !== null),
  /** pg_dump's selection arguments (no format, output, snapshot or connection). */
  pgDumpArgs: z.array(z.string()).readonly(),
  /** Parallel pg_dump jobs (directory format); 1 otherwise. */
  jobs: z.number().int().min(1).max(64),
  compression: ManifestSchema.shape.compression,
  /** age recipients (`age1…`): encrypt after compression; absent: no encryption. */
  encryptTo: z.array(z.string().min(1)).min(1).readonly().optional(),
  /** The object key's suffix after the id, e.g. `.dump.zst`, `.sql.gz.age`, `.dir`. */
  objectSuffix: z.string().min(1),
  /** Suffix of each file in a directory backup (compression + encryption), e.g. `.zst`. */
  fileSuffix: z.string(),
  /** `.age` when encrypting, else empty: the suffix of the schema sidecar. */
  encryptionSuffix: z.string(),
  /** Hashes of the stored bytes: always SHA-256 (the manifest's), MD5 too for an `.md5` sidecar. */
  hashes: z.array(z.enum(['sha256', 'md5'])).min(1).readonly(),
  checksumSidecars: z.array(z.enum(['md5', 'sha256'])).readonly(),
  schemaSidecar: z.boolean(),
  /** The watchdog: fail after this long with no byte moving, in ms; 0 disables. */
  stallTimeoutMs: z.number().int().nonnegative(),
  /** A mirror that takes no data for this long is abandoned, in ms (below the primary's watchdog). */
  mirrorStallMs: z.number().int().positive(),
  /** Progress report interval in ms; absent: 500 on a terminal, 10 000 elsewhere. */
  progressIntervalMs: z.number().int().positive().optional(),
  /** How far this machine's clock may be from the store's before the dump warns (or refuses), in ms. */
  maxClockSkewMs: z.number().positive(),
  /** Refuse (exit 2, nothing written) rather than warn when the clocks are further apart: `--max-clock-skew` was given. */
  enforceClockSkew: z.boolean(),
  /** Where the directory format spools; absent: `PG_BACKUP_WORK_DIR` or the temp dir. */
  workDir: z.string().optional(),
  installClient: z.boolean(),
  allowSameOsUser: z.boolean(),
  /** The verify right after the dump; `none` skips it. */
  verify: z.enum(['none', ...VERIFY_LEVELS]),
  /** Where the backup goes: the location as given, and its storage. */
  to: z.string().min(1),
  storage: StorageSchema,
  /** The off-region copy, when asked for. */
  mirror: z.object({ to: z.string().min(1), storage: StorageSchema }).optional(),
  /** S3 settings as given (Object Lock, SSE; credentials for the verify), read-only. */
  s3: z.custom<S3Settings>().optional(),
  mirrorS3: z.custom<S3Settings>().optional(),
  verifyS3: z.custom<S3Settings>().optional(),
  /**
   * The managed platform's profile (`--profile`): its name and the `--exclude-schema` patterns it
   * added to the selection (already in `selection` and `pgDumpArgs`); absent without a profile.
   */
  profile: z.object({ name: z.enum(PROFILE_NAMES), excludeSchemas: z.array(z.string()).readonly() }).optional(),
  /** Recorded in the manifest as they are. */
  manifest: z.object({
    options: ManifestSchema.shape.options,
    context: ManifestSchema.shape.context,
    serverSideEncryption: ManifestSchema.shape.serverSideEncryption,
    objectLockMode: z.enum(['GOVERNANCE', 'COMPLIANCE']).optional(),
  }),
});

/** See {@link DumpPlanSchema}. Deeply read-only. */
export type DumpPlan = Readonly<z.infer<typeof DumpPlanSchema>>;

/**
 * What {@link planDump} reads: the options of `dump` that need no database connection, no
 * signal and no clock (`DumpOptions` adds those).
 */
export interface DumpPlanInput extends DumpSelection {
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
  /**
   * Before stamping a backup, this machine's clock is compared with the store's (S3: the `Date`
   * header of an answer; a file:// store shares this clock). Further apart than this: given,
   * the dump refuses (exit 2, nothing written); not given, it warns beyond 10 min. A backup
   * stamped ahead would be FUTURE for every reader (src/backup/clock.ts).
   */
  maxClockSkew?: string;
  s3?: S3Settings;
  logger: Logger;
  /**
   * When no pg_dump of the server's major (or newer) is installed, install
   * `postgresql-client-<major>` from the PostgreSQL apt repository first (needs root or
   * passwordless sudo, as on GitHub-hosted runners). Default false.
   */
  installClient?: boolean;
  /**
   * `verify: schema`: run the throwaway PostgreSQL of the verify as this process's own OS user
   * when neither root nor passwordless sudo can run it as another (`--allow-same-os-user`; see
   * src/postgres/cluster-user.ts). Without it such a dump is refused before anything is written.
   */
  allowSameOsUser?: boolean;
  /**
   * A managed platform's profile (`supabase`, `neon`, `rds`, `cloudsql`, `azure`;
   * src/postgres/profiles.ts): its platform schemas are excluded unless named by `schemas`;
   * recorded in the manifest's `options.profile`.
   */
  profile?: string;
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

/**
 * Builds the plan of a dump from its options, validating every one that needs no database (so a
 * mistake fails before any connection or write), opening the storage (and the mirror's) once,
 * and checking that zstd is installed when it is used. The result is frozen.
 * @param connection the database; omit it for a run's shared plan, then {@link forDatabase}.
 * @throws UsageError naming the first bad option.
 */
export async function planDump(options: DumpPlanInput, connection?: DatabaseConnection): Promise<DumpPlan> {
  const service = validateLabel('service', options.service?.trim() || 'default');
  const environment = validateLabel('environment', options.environment?.trim() || 'default');
  const compression = parseCompression(options.compression);
  const profile = findProfile(options.profile);
  const resolved = resolveDumpProfile(profile, options);
  const selection = selectionOf(validateSelection({ ...options, excludeSchemas: resolved.excludeSchemas }));
  const storage = openStorage(options.to, options.s3);
  const zstd = compression.algorithm === 'zstd' ? requireZstd() : undefined;
  zstd?.catch(() => undefined);
  const verifyLevel = options.verify ?? 'none';
  if (!(['none', ...VERIFY_LEVELS] as string[]).includes(verifyLevel)) throw new UsageError(`unknown verify level ${JSON.stringify(options.verify)}: use ${VERIFY_LEVELS.join(', ')}`);
  // A schema verify starts a throwaway cluster: who runs it is settled before anything is written.
  if (verifyLevel === 'schema') await clusterIsolation({ allowSameOsUser: options.allowSameOsUser });
  const stallTimeoutMs = parseDuration(options.stallTimeout ?? '10m', '--stall-timeout');
  const maxClockSkewMs = parseMaxClockSkew(options.maxClockSkew);
  for (const sidecar of options.checksumSidecars ?? []) {
    if (sidecar !== 'md5' && sidecar !== 'sha256') throw new UsageError(`unknown checksum sidecar ${JSON.stringify(sidecar)}: use md5 or sha256`);
  }
  const recipients = parseRecipients(options.ageRecipients ?? []);
  const mirror = options.mirrorTo ? openStorage(options.mirrorTo, options.mirrorS3) : undefined;
  if (mirror && mirror.url === storage.url) throw new UsageError(`--mirror-to ${options.mirrorTo} is the backup location itself: give another bucket (another region or provider)`);
  for (const s of [storage, mirror]) {
    if (s && 'onWarning' in s) (s as { onWarning?: (m: string) => void }).onWarning = (m) => options.logger.warn(m);
  }
  await zstd;
  const encSuffix = recipients.length ? AGE_SUFFIX : '';
  const fileSuffix = `${compressionSuffix(compression)}${encSuffix}`;
  const sse = options.s3?.sse;
  const plan = DumpPlanSchema.parse({
    service,
    environment,
    connection: connection && { ...connection },
    format: selection.format,
    selection,
    pgDumpArgs: pgDumpArgs(selection),
    jobs: selection.jobs ?? 1,
    compression,
    encryptTo: recipients.length ? recipients : undefined,
    objectSuffix: selection.format === 'directory' ? FORMAT_SUFFIX.directory : `${FORMAT_SUFFIX[selection.format]}${fileSuffix}`,
    fileSuffix,
    encryptionSuffix: encSuffix,
    hashes: (options.checksumSidecars?.includes('md5') ? ['sha256', 'md5'] : ['sha256']) satisfies MeterHash[],
    checksumSidecars: options.checksumSidecars ?? [],
    schemaSidecar: options.schemaSidecar ?? false,
    stallTimeoutMs,
    // Below the primary's stall watchdog, so a hung mirror is dropped before the primary is failed.
    mirrorStallMs: stallTimeoutMs > 0 ? Math.round(Math.min(60_000, Math.max(1_000, stallTimeoutMs / 2))) : 60_000,
    progressIntervalMs: options.progressIntervalMs,
    maxClockSkewMs,
    enforceClockSkew: Boolean(options.maxClockSkew?.trim()),
    workDir: options.workDir,
    installClient: options.installClient ?? false,
    allowSameOsUser: options.allowSameOsUser ?? false,
    verify: verifyLevel,
    to: options.to,
    storage,
    mirror: mirror ? { to: options.mirrorTo!, storage: mirror } : undefined,
    // Copies, frozen one level deep: the caller's objects (and their credentials) stay its own.
    s3: options.s3 && Object.freeze({ ...options.s3 }),
    mirrorS3: options.mirrorS3 && Object.freeze({ ...options.mirrorS3 }),
    verifyS3: options.verifyS3 && Object.freeze({ ...options.verifyS3 }),
    profile: profile && { name: profile.name, excludeSchemas: resolved.fromProfile },
    manifest: {
      options: recordedOptions(selection, profile?.name),
      context: options.context && Object.values(options.context).some((v) => v) ? options.context : undefined,
      serverSideEncryption: !sse ? undefined : sse.type === 'sse-c' ? { type: 'SSE-C' } : sse.type === 'aws:kms' ? { type: 'aws:kms', kmsKeyId: sse.kmsKeyId } : { type: 'AES256' },
      objectLockMode: options.s3?.objectLock?.mode,
    },
  });
  return deepFreeze(plan);
}

/** The plan of a run's shared options for one database of it (same storage, same settings). Frozen. */
export function forDatabase(plan: DumpPlan, connection: DatabaseConnection): DumpPlan {
  return deepFreeze({ ...plan, connection: ConnectionSchema.parse({ ...connection }) });
}

/** The Object Lock retention date for a backup started at `startedAt` (UTC), when the plan asks for one. */
export function objectLockOf(plan: DumpPlan, startedAt: Date): Manifest['objectLock'] {
  const lock = plan.s3?.objectLock;
  return lock ? { mode: lock.mode, retainUntil: retainUntil(lock, startedAt.getTime()).toISOString() } : undefined;
}

/** The selection fields alone (options carry more: the logger, the settings), arrays copied. */
function selectionOf(s: DumpSelection & { format: DumpPlan['format'] }): DumpPlan['selection'] {
  const copy = (a: string[] | undefined) => (a ? [...a] : undefined);
  return {
    format: s.format,
    jobs: s.jobs,
    clean: s.clean,
    noOwner: s.noOwner,
    noAcl: s.noAcl,
    schemas: copy(s.schemas),
    excludeSchemas: copy(s.excludeSchemas),
    tables: copy(s.tables),
    excludeTables: copy(s.excludeTables),
    excludeTableData: copy(s.excludeTableData),
    lockWaitTimeout: s.lockWaitTimeout,
    extraArgs: copy(s.extraArgs),
  };
}

/** The selection as recorded in the manifest (only what was set). */
function recordedOptions(s: DumpSelection, profile?: string): Manifest['options'] {
  const out: NonNullable<Manifest['options']> = {};
  if (profile) out.profile = profile;
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
 * Freezes plain objects and arrays all the way down; class instances (a Storage) and objects
 * already frozen (the S3 settings' copies) are left as they are: handles, not plan data.
 */
function deepFreeze<T>(value: T): T {
  if (Object.isFrozen(value)) return value;
  if (Array.isArray(value) || (typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype)) {
    for (const v of Object.values(value as object)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
