import type { Command } from 'commander';
import { restore } from '../../commands/restore.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { filterOptions, identityOption, printJson, readerOptions, storageOptions, type CliContext, type CommonFlags, QUIET_HELP } from '../common.ts';

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
        .option('--no-owner', 'do not restore object ownership')
        .option('--no-acl', 'do not restore privileges')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--lock-wait-timeout <duration>', 'how long the restore waits for a lock on the target (an open transaction on a table it replaces) before it fails and rolls back; the blocking sessions are named after 5s', '60s')
        .option('--work-dir <dir>', 'directory format: where the archive is downloaded; plain SQL over 256 KiB: where it is spooled (private) until it matched its manifest (default: $PG_BACKUP_WORK_DIR or the temp dir)'),
    ).option('--json', 'print the result as JSON on stdout').option('--quiet', QUIET_HELP),
  )).action(async (flags: CommonFlags & { from: string; backup: string; targetUrl: string; clean?: boolean; safetyDump: boolean; owner: boolean; acl: boolean; lockWaitTimeout: string; workDir?: string; maxClockSkew: string }) => {
    const result = await restore({
      ...readerOptions(flags, signal),
      from: flags.from,
      backup: flags.backup,
      targetUrl: flags.targetUrl,
      clean: flags.clean,
      safetyDump: flags.safetyDump,
      noOwner: !flags.owner,
      noAcl: !flags.acl,
      maxClockSkew: flags.maxClockSkew,
      lockWaitTimeout: flags.lockWaitTimeout,
      workDir: flags.workDir,
    });
    if (flags.json) printJson(result);
  });
}
