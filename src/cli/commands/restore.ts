import type { Command } from 'commander';
import { restore } from '../../commands/restore.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { filterOptions, identityOption, printJson, readerOptions, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/**
 * `pg-backup restore`: restores a backup into an existing database in one transaction (all or nothing); `--json` prints the result.
 */
export function addRestoreCommand(program: Command, { signal }: CliContext): Command {
  return storageOptions(identityOption(
    filterOptions(
      program
        .command('restore')
        .description('restore a backup into an existing database, in one transaction: all or nothing (custom streams, no local disk; plain SQL runs only once it matched its manifest, in psql\'s restricted mode)')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .requiredOption('--backup <key>', 'a key or id from "pg-backup list", or latest (with --service/--environment/--database)')
        .requiredOption('--target-url <url>', 'postgresql://… of the database to restore into (it must exist, and be empty unless --clean)')
        .option('--clean', 'allow a target that is not empty: drop the backup\'s objects there and re-create them (pg_restore --clean --if-exists), in the same transaction')
        .option('--no-safety-dump', 'with --clean: do not dump the target into --from (environment "pre-restore") before replacing its objects')
        .option('--owner', 'restore object ownership (the default without --profile; wins over the profile\'s default)')
        .option('--no-owner', 'do not restore object ownership')
        .option('--acl', 'restore privileges (the default without --profile; wins over the profile\'s default)')
        .option('--no-acl', 'do not restore privileges')
        .option('--profile <platform>', 'the target\'s managed platform: supabase, neon, rds, cloudsql or azure; sets the --no-owner / --no-acl defaults for it and names its roles in the checks (docs/managed.md)')
        .option('--skip-refused', 'leave out the backup\'s entries the target refuses (event triggers, extensions it cannot create, comments on extensions it does not own), named before the restore, and restore the rest in one transaction')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--lock-wait-timeout <duration>', 'how long the restore waits for a lock on the target (an open transaction on a table it replaces) before it fails and rolls back; the blocking sessions are named after 5s', '60s')
        .option('--work-dir <dir>', 'directory format: where the archive is downloaded; plain SQL over 256 KiB: where it is spooled (private) until it matched its manifest (default: $PG_BACKUP_WORK_DIR or the temp dir)'),
    ).option('--json', 'print the result as JSON on stdout'),
  )).action(async (flags: CommonFlags & { from: string; backup: string; targetUrl: string; clean?: boolean; safetyDump: boolean; owner?: boolean; acl?: boolean; profile?: string; skipRefused?: boolean; lockWaitTimeout: string; workDir?: string; maxClockSkew: string }) => {
    const result = await restore({
      ...readerOptions(flags, signal),
      from: flags.from,
      backup: flags.backup,
      targetUrl: flags.targetUrl,
      clean: flags.clean,
      safetyDump: flags.safetyDump,
      noOwner: flags.owner === undefined ? undefined : !flags.owner,
      noAcl: flags.acl === undefined ? undefined : !flags.acl,
      profile: flags.profile,
      skipRefused: flags.skipRefused,
      maxClockSkew: flags.maxClockSkew,
      lockWaitTimeout: flags.lockWaitTimeout,
      workDir: flags.workDir,
    });
    if (flags.json) printJson(result);
  });
}
