import type { Command } from 'commander';
import { restore } from '../../commands/restore.ts';
import { restoreServer } from '../../commands/restore-server.ts';
import { UsageError } from '../../errors.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { exitOnFailedCheck, filterOptions, identityOption, printJson, readerOptions, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/**
 * `pg-backup restore`: restores a backup into an existing database in one transaction (all or nothing); `--json` prints the result.
 */
export function addRestoreCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  return storageOptions(identityOption(
    filterOptions(
      program
        .command('restore')
        .description('restore a backup into an existing database, in one transaction: all or nothing (custom streams, no local disk; plain SQL runs only once it matched its manifest, in psql\'s restricted mode)')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .option('--backup <key>', 'a key or id from "pg-backup list", or latest (with --service/--environment/--database); with --server: latest (default) or a run id')
        .requiredOption('--target-url <url>', 'postgresql://… of the database to restore into (it must exist, and be empty unless --clean); with --server: the target server\'s postgres database')
        .option('--server', 'restore a whole dump run (needs --service and --environment): its globals (roles, memberships, passwords, tablespaces; existing roles kept as they are), then every database with pg_restore --create (properties, owners, grants), then row counts and privileges checked; refused when any of its databases exists on the target')
        .option('--jobs <n>', 'with --server: databases restored at once (default 2)')
        .option('--clean', 'allow a target that is not empty: drop the backup\'s objects there and re-create them (pg_restore --clean --if-exists), in the same transaction')
        .option('--no-safety-dump', 'with --clean: do not dump the target into --from (environment "pre-restore") before replacing its objects')
        .option('--no-owner', 'do not restore object ownership')
        .option('--no-acl', 'do not restore privileges')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--lock-wait-timeout <duration>', 'how long the restore waits for a lock on the target (an open transaction on a table it replaces) before it fails and rolls back; the blocking sessions are named after 5s', '60s')
        .option('--work-dir <dir>', 'directory format: where the archive is downloaded; plain SQL over 256 KiB: where it is spooled (private) until it matched its manifest (default: $PG_BACKUP_WORK_DIR or the temp dir)'),
    ).option('--json', 'print the result as JSON on stdout'),
  )).action(async (flags: CommonFlags & { from: string; backup?: string; targetUrl: string; clean?: boolean; safetyDump: boolean; owner: boolean; acl: boolean; lockWaitTimeout: string; workDir?: string; maxClockSkew: string; server?: boolean; jobs?: string }) => {
    if (flags.server) {
      if (flags.clean || flags.database) throw new UsageError('--server restores every database of a run into a server without them: it takes neither --clean nor --database');
      const server = await restoreServer({
        ...readerOptions(flags, signal),
        from: flags.from,
        service: flags.service ?? '',
        environment: flags.environment ?? '',
        backup: flags.backup,
        targetUrl: flags.targetUrl,
        jobs: flags.jobs === undefined ? undefined : Number(flags.jobs),
        noOwner: !flags.owner,
        noAcl: !flags.acl,
        workDir: flags.workDir,
      });
      if (flags.json) printJson(server);
      exitOnFailedCheck(server, 'restore --server', flags.json, setExitCode);
      return;
    }
    if (flags.jobs !== undefined) throw new UsageError('--jobs is for restore --server (a single restore runs in one transaction, one job)');
    const result = await restore({
      ...readerOptions(flags, signal),
      from: flags.from,
      backup: flags.backup ?? '',
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
