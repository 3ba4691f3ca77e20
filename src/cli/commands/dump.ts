import type { Command } from 'commander';
import type { ChecksumSidecar } from '../../commands/dump.ts';
import type { DumpOutcome, DumpRun } from '../../commands/dump-many.ts';
import type { VerifyLevel } from '../../commands/verify.ts';
import { stderrLogger } from '../../log.ts';
import { UsageError } from '../../errors.ts';
import { reported } from '../../notify/index.ts';
import { reportingOptions } from '../../notify/cli-options.ts';
import type { DumpFormat } from '../../postgres/dump-options.ts';
import type { S3Settings } from '../../storage/index.ts';
import { mirrorSettings, parseObjectLock, parseSse, readerSettings, sseCustomerKey } from '../../storage/protection.ts';
import { printJson, storageOptions, type CliContext, type CommonFlags } from '../common.ts';
import { sshTunnelOf, sshTunnelOptions, type SshFlags } from '../ssh-options.ts';
import { MAX_PARALLEL_DATABASES } from '../../limits.ts';


interface DumpFlags {
  databaseUrl: string[];
  databases?: string[];
  allDatabases?: boolean;
  excludeDatabase: string[];
  globals: boolean;
  parallelDatabases?: string;
  to: string;
  format: string;
  jobs?: string;
  compression: string;
  clean?: boolean;
  owner: boolean;
  acl: boolean;
  schema: string[];
  excludeSchema: string[];
  table: string[];
  excludeTable: string[];
  excludeTableData: string[];
  lockWaitTimeout: string;
  pgDumpArg: string[];
  profile?: string;
  checksumSidecar: string[];
  schemaSidecar?: boolean;
  workDir?: string;
  stallTimeout: string;
  maxClockSkew?: string;
  verify: VerifyLevel;
  reason?: string;
  installPgClient?: boolean;
  allowSameOsUser?: boolean;
  sse?: string;
  sseKmsKeyId?: string;
  objectLock?: string;
  ageRecipient: string[];
  mirrorTo?: string;
  mirrorEndpoint?: string;
  mirrorRegion?: string;
  mirrorSseKmsKeyId?: string;
}

/** Commander collector for repeatable options. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A list from an environment variable: items separated by commas, spaces or newlines. */
function listFromEnv(value: string | undefined): string[] {
  return (value ?? '').split(/[\s,]+/).filter(Boolean);
}

/**
 * `--parallel-databases`: a whole number (the range is checked by dumpMany).
 * @throws UsageError for anything else.
 */
function parseParallel(value: string): number {
  if (!/^\d{1,3}$/.test(value.trim())) throw new UsageError(`--parallel-databases ${JSON.stringify(value)} is not a count: give how many databases to dump at once, e.g. 4`);
  return Number(value.trim());
}

/** Commander parser for comma-separated lists. */
function commaList(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter(Boolean);
}

/** One database's dump outcome as JSON: the manifest with its URIs and verification. */
function outcomeJson(o: DumpOutcome, runId?: string) {
  const r = o.result;
  return {
    database: o.database,
    ok: o.ok,
    error: o.error,
    run: runId,
    manifest: r && { ...r.manifest, backupUri: r.backupUri, manifestUri: r.manifestUri, restoreCommand: r.restoreCommand, verification: r.verification && { ...r.verification, manifest: undefined }, mirror: r.mirror },
  };
}

/** The globals' outcome as JSON (the `globals` field of `--json`). */
function globalsJson(run: DumpRun | undefined) {
  const g = run?.globals;
  if (!g) return undefined;
  const r = g.result;
  return { ok: g.ok, error: g.error, backupUri: r?.backupUri, manifestUri: r?.manifestUri, rolePasswords: r?.rolePasswords, roles: r?.manifest.globals?.roles.length, tablespaces: r?.manifest.globals?.tablespaces.length };
}

/**
 * `--json` for a run of several databases (a list, or all): an array, one element per database
 * (`run` set in each); for `--all-databases` an object: the run (id, databases, skipped), the
 * globals and that array as `backups`.
 */
function runJson(run: DumpRun | undefined, outcomes: DumpOutcome[], all: boolean) {
  const backups = outcomes.map((o) => outcomeJson(o, run?.runId));
  if (!all || !run) return backups;
  return { run: { id: run.runId, databases: run.databases, allDatabases: run.allDatabases, skipped: run.skipped }, globals: globalsJson(run), backups };
}

/**
 * `pg-backup dump`: one backup per database (`dumpMany`), then the run's globals (unless `--no-globals`; only once a database is stored); prints each database backup's URI, or with `--json` the manifest with `globalsBackup` (several databases: an array of results, each with `run`; `--all-databases`: `{ run, globals, backups }`; printed too when some failed).
 */
export function addDumpCommand(program: Command, { signal }: CliContext): Command {
  const command = storageOptions(
    program
      .command('dump')
      .description('stream pg_dump → compression → SHA-256 → multipart upload, then write the manifest; one backup per database')
      .option('--database-url <url>', 'postgresql://USER:PASSWORD@HOST:PORT/DB; repeat for several (default: $DATABASE_URL, then the PG* variables; prefer the env var: argv is visible to other users)', collect, [])
      .option('--databases <names>', 'comma-separated databases on the server of --database-url, each its own backup ("all": --all-databases)', commaList)
      .option('--all-databases', 'every database the role can connect to (datallowconn and CONNECT), found on the server at run time; template0 and template1 skipped; each its own backup')
      .option('--exclude-database <pattern>', 'with --all-databases: skip databases matching this pattern, as pg_dump reads it (* any characters, ? one; letters match lower case unless double-quoted) (repeatable)', collect, [])
      .option('--parallel-databases <n>', `dump this many databases at once, each its own pg_dump and upload (1-${MAX_PARALLEL_DATABASES})`, '1')
      .option('--no-globals', "do not store the server's globals (roles, memberships, role settings and passwords, tablespaces: pg_dumpall --globals-only), which every run stores under @globals once a database is stored, encrypted like the dumps")
      .requiredOption('--to <url>', 's3://BUCKET/PREFIX or file:///DIR')
      .option('--service <name>', 'service label in the key layout', 'default')
      .option('--environment <name>', 'environment label in the key layout', 'default')
      .option('--format <format>', 'custom, plain or directory', 'custom')
      .option('--jobs <n>', 'parallel dump jobs (directory format only)')
      .option('--compression <algo>', 'zstd[:1-19], gzip[:1-9] or none', 'zstd:3')
      .option('--clean', 'plain format: DROP … IF EXISTS before each CREATE, so a restore is idempotent')
      .option('--no-owner', 'do not dump object ownership')
      .option('--no-acl', 'do not dump privileges')
      .option('--schema <pattern>', 'only this schema (psql pattern; repeatable)', collect, [])
      .option('--exclude-schema <pattern>', 'skip this schema (repeatable)', collect, [])
      .option('--table <pattern>', 'only this table (repeatable)', collect, [])
      .option('--exclude-table <pattern>', 'skip this table (repeatable)', collect, [])
      .option('--exclude-table-data <pattern>', "dump this table's definition but not its rows (repeatable)", collect, [])
      .option('--lock-wait-timeout <time>', 'fail instead of waiting longer than this for table locks (0: wait forever)', '60s')
      .option('--profile <platform>', 'managed platform of the database: supabase, neon, rds, cloudsql or azure; leaves out its platform schemas (an explicit --schema wins), recorded in the manifest (docs/managed.md)')
      .option('--pg-dump-arg <arg>', 'an extra pg_dump argument (repeatable), e.g. --pg-dump-arg=--no-comments', collect, [])
      .option('--checksum-sidecar <kind>', 'also write <object>.md5 or .sha256 in md5sum/sha256sum format (repeatable)', collect, [])
      .option('--schema-sidecar', 'also write <id>.schema.sql: the schema alone, plain SQL, uncompressed')
      .option('--work-dir <dir>', 'directory format: where pg_dump spools the archive before upload (default: $PG_BACKUP_WORK_DIR or the temp dir)')
      .option('--stall-timeout <duration>', 'fail when no byte moved for this long (0: never)', '10m')
      .option('--max-clock-skew <duration>', 'refuse to dump (exit 2, nothing written) when this machine\'s clock is further than this from the store\'s (S3 Date header); not given: warn beyond 10m')
      .option('--verify <level>', 'verify right after the upload: none, checksum, archive or schema (needs read access: $PG_BACKUP_READER_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY if set, else the dump\'s credentials)', 'none')
      .option('--allow-same-os-user', 'with --verify schema, without root or passwordless sudo: run the verify\'s throwaway PostgreSQL as your own OS user anyway (environment scrubbed; code restored from the backup could read your files): otherwise refused before dumping')
      .option('--install-pg-client', 'when no pg_dump of the server major is installed, install postgresql-client-<major> from the PostgreSQL apt repository (root or sudo)')
      .option('--reason <text>', 'why this backup is taken (recorded in the manifest), e.g. "before migration 0042"')
      .option('--sse <type>', 'server-side encryption: AES256 (SSE-S3), aws:kms or sse-c (key in $PG_BACKUP_SSE_C_KEY)')
      .option('--sse-kms-key-id <id>', 'the KMS key for --sse aws:kms (default: the bucket\'s aws/s3 key)')
      .option('--object-lock <mode:days>', 'Object Lock retention on every object, e.g. compliance:30 or governance:7 (bucket with Object Lock)')
      .option('--age-recipient <age1…>', 'encrypt on this machine with age to this public key (repeatable; default: $PG_BACKUP_AGE_RECIPIENTS)', collect, [])
      .option('--mirror-to <url>', 'also copy the backup to this s3:// or file:// location (off-region copy), then re-check its sha256')
      .option('--mirror-endpoint <url>', 'S3 endpoint of --mirror-to (credentials: $PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY)')
      .option('--mirror-region <name>', 'S3 region of --mirror-to')
      .option('--mirror-sse-kms-key-id <id>', 'the KMS key of the mirror region for --sse aws:kms')
      .option('--json', 'print the manifest (several databases: an array of results) as JSON on stdout')
      .option('--quiet', 'no progress lines on stderr'),
  );
  sshTunnelOptions(command, 'the databases').action(async (flags: CommonFlags & DumpFlags & SshFlags) => {
    const [{ runContext }, { dumpMany }, { withSshTunnel }] = await Promise.all([import('../../commands/dump.ts'), import('../../commands/dump-many.ts'), import('../../postgres/ssh-tunnel.ts')]);
    const writeSettings: S3Settings = {
      endpoint: flags.endpoint,
      region: flags.region,
      sse: parseSse(flags.sse, flags.sseKmsKeyId, sseCustomerKey()),
      objectLock: parseObjectLock(flags.objectLock),
      signal,
    };
    const options = {
      databaseUrls: flags.databaseUrl,
      databases: flags.databases,
      allDatabases: flags.allDatabases,
      excludeDatabases: flags.excludeDatabase,
      noGlobals: !flags.globals,
      parallelDatabases: flags.parallelDatabases === undefined ? undefined : parseParallel(flags.parallelDatabases),
      to: flags.to,
      service: flags.service,
      environment: flags.environment,
      format: flags.format as DumpFormat,
      jobs: flags.jobs === undefined ? undefined : Number(flags.jobs),
      compression: flags.compression,
      clean: flags.clean,
      noOwner: !flags.owner,
      noAcl: !flags.acl,
      schemas: flags.schema,
      excludeSchemas: flags.excludeSchema,
      tables: flags.table,
      excludeTables: flags.excludeTable,
      excludeTableData: flags.excludeTableData,
      lockWaitTimeout: flags.lockWaitTimeout,
      extraArgs: flags.pgDumpArg,
      profile: flags.profile,
      checksumSidecars: flags.checksumSidecar as ChecksumSidecar[],
      schemaSidecar: flags.schemaSidecar,
      workDir: flags.workDir,
      stallTimeout: flags.stallTimeout,
      maxClockSkew: flags.maxClockSkew,
      verify: flags.verify,
      context: runContext(flags.reason),
      installClient: flags.installPgClient,
      allowSameOsUser: flags.allowSameOsUser,
      s3: writeSettings,
      ageRecipients: flags.ageRecipient.length ? flags.ageRecipient : listFromEnv(process.env.PG_BACKUP_AGE_RECIPIENTS),
      mirrorTo: flags.mirrorTo,
      verifyS3: readerSettings(writeSettings),
      mirrorS3: flags.mirrorTo ? mirrorSettings(writeSettings, { endpoint: flags.mirrorEndpoint, region: flags.mirrorRegion, kmsKeyId: flags.mirrorSseKmsKeyId }) : undefined,
      logger: stderrLogger(flags.quiet),
      signal,
    };
    const all = Boolean(flags.allDatabases) || (flags.databases?.length === 1 && flags.databases[0] === 'all');
    const several = all || (flags.databases?.length ?? 0) > 1 || flags.databaseUrl.length > 1;
    let run: DumpRun;
    try {
      run = await reported({ ...flags, logger: options.logger }, 'dump', () =>
        withSshTunnel(sshTunnelOf(flags), flags.databaseUrl, (databaseUrls) => dumpMany({ ...options, databaseUrls }), { signal, logger: options.logger }));
    } catch (err) {
      const partial = err as { outcomes?: DumpOutcome[]; run?: DumpRun };
      if (flags.json && partial.outcomes) printJson(runJson(partial.run, partial.outcomes, all));
      throw err;
    }
    const { outcomes } = run;
    if (flags.json) printJson(several ? runJson(run, outcomes, all) : { ...outcomeJson(outcomes[0]!, run.runId).manifest, globalsBackup: globalsJson(run) });
    else for (const o of outcomes) process.stdout.write(`${o.result!.backupUri}\n`);
  });
  return reportingOptions(command);
}
