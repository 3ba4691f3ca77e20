import type { Command } from 'commander';
import type { RestoreResult } from '../../commands/restore.ts';
import type { SwapResult } from '../../commands/restore-swap.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { sshTunnelOf, sshTunnelOptions, type SshFlags } from '../ssh-options.ts';
import { stderrLogger } from '../../log.ts';
import { UsageError } from '../../errors.ts';
import { exitOnFailedCheck, filterOptions, identityOption, printJson, readerOptions, storageOptions, type CliContext, type CommonFlags, QUIET_HELP } from '../common.ts';

/** Commander collector for repeatable options. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * `pg-backup restore`: restores a backup into an existing database in one transaction (all or
 * nothing), or only some tables (`--table`/`--schema`), or beside the live database and then
 * switched to it (`--swap`); the row-count checks follow every restore (a mismatch exits 1).
 * `--json` prints the result (also when the checks failed).
 */
export function addRestoreCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  return sshTunnelOptions(storageOptions(identityOption(
    filterOptions(
      program
        .command('restore')
        .description('restore a backup into an existing database, in one transaction: all or nothing (custom streams, no local disk; plain SQL runs only once it matched its manifest, in psql\'s restricted mode); then row counts against the manifest')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .option('--backup <key>', 'a key or id from "pg-backup list", or latest (with --service/--environment/--database); with --server: latest (default) or a run id')
        .requiredOption('--target-url <url>', 'postgresql://… of the database to restore into (it must exist, and be empty unless --clean or --table/--schema); with --swap, the live database; with --server, the target server\'s postgres database')
        .option('--table <schema.table>', 'restore only this table, with its indexes, constraints, triggers, owned sequences, comments and grants (repeatable; custom or directory backups)', collect, [])
        .option('--schema <name>', 'restore only the tables of this schema, as --table does (repeatable)', collect, [])
        .option('--swap', 'restore into a new database <live>_restore_<stamp> on the same server, check it, then rename the live one to <live>_before_<stamp> and the new one to the live name (nothing is dropped)')
        .option('--terminate-sessions', 'with --swap: end the other sessions on the live database at the switch instead of refusing')
        .option('--server', 'restore a whole dump run (needs --service and --environment): its globals (roles, memberships, passwords, tablespaces; existing roles kept as they are), then every database with pg_restore --create (properties, owners, grants), then row counts and privileges checked; refused when any of its databases exists on the target')
        .option('--jobs <n>', 'with --server: databases restored at once (default 2)')
        .option('--clean', 'allow a target that is not empty: drop the backup\'s objects there (with --table/--schema: only the selected ones) and re-create them (pg_restore --clean --if-exists), in the same transaction')
        .option('--no-safety-dump', 'with --clean: do not dump the target into --from (environment "pre-restore") before replacing its objects')
        .option('--owner', 'restore object ownership (the default without --profile; wins over the profile\'s default)')
        .option('--no-owner', 'do not restore object ownership')
        .option('--acl', 'restore privileges (the default without --profile; wins over the profile\'s default)')
        .option('--no-acl', 'do not restore privileges')
        .option('--profile <platform>', 'the target\'s managed platform: supabase, neon, rds, cloudsql or azure; sets the --no-owner / --no-acl defaults for it and names its roles in the checks (docs/managed.md)')
        .option('--skip-refused', 'leave out the backup\'s entries the target refuses (event triggers, extensions it cannot create, comments on extensions it does not own), named before the restore, and restore the rest in one transaction')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--lock-wait-timeout <duration>', 'how long the restore waits for a lock on the target (an open transaction on a table it replaces) before it fails and rolls back; the blocking sessions are named after 5s', '60s')
        .option('--work-dir <dir>', 'directory format: where the archive is downloaded; plain SQL over 256 KiB: where it is spooled (private) until it matched its manifest; --server: where each database is downloaded (its archive; a custom archive of at most 8 MiB as its stored object), up to 2 × --jobs at once (default: $PG_BACKUP_WORK_DIR or the temp dir)'),
    ).option('--json', 'print the result as JSON on stdout').option('--quiet', QUIET_HELP),
  )), '--target-url').action(async (flags: CommonFlags & SshFlags & { from: string; backup?: string; targetUrl: string; table: string[]; schema: string[]; swap?: boolean; terminateSessions?: boolean; server?: boolean; jobs?: string; clean?: boolean; safetyDump: boolean; owner?: boolean; acl?: boolean; profile?: string; skipRefused?: boolean; lockWaitTimeout: string; workDir?: string; maxClockSkew: string; quiet?: boolean }) => {
    if (flags.server) {
      if (flags.clean || flags.database || flags.swap || flags.table.length || flags.schema.length) throw new UsageError('--server restores every database of a run into a server without them: it takes neither --clean, --database, --swap, --table nor --schema');
      const [{ withSshTunnel }, { restoreServer }] = await Promise.all([import('../../postgres/ssh-tunnel.ts'), import('../../commands/restore-server.ts')]);
      const server = await withSshTunnel(sshTunnelOf(flags), [flags.targetUrl], ([targetUrl]) => restoreServer({
        ...readerOptions(flags, signal),
        from: flags.from,
        service: flags.service ?? '',
        environment: flags.environment ?? '',
        backup: flags.backup,
        targetUrl: targetUrl!,
        jobs: flags.jobs === undefined ? undefined : Number(flags.jobs),
        noOwner: flags.owner === false,
        noAcl: flags.acl === false,
        workDir: flags.workDir,
      }), { signal, logger: stderrLogger() });
      if (flags.json) printJson(server);
      exitOnFailedCheck(server, 'restore --server', flags.json, setExitCode);
      return;
    }
    if (flags.jobs !== undefined) throw new UsageError('--jobs is for restore --server (a single restore runs in one transaction, one job)');
    const backup = flags.backup ?? ''; // restore() refuses an empty one in its own words
    const common = (targetUrl: string) => ({
      ...readerOptions(flags, signal),
      from: flags.from,
      backup,
      targetUrl,
      noOwner: flags.owner === undefined ? undefined : !flags.owner,
      noAcl: flags.acl === undefined ? undefined : !flags.acl,
      profile: flags.profile,
      skipRefused: flags.skipRefused,
      maxClockSkew: flags.maxClockSkew,
      lockWaitTimeout: flags.lockWaitTimeout,
      workDir: flags.workDir,
    });
    if (flags.terminateSessions && !flags.swap) throw new UsageError('--terminate-sessions goes with --swap (it ends the sessions on the live database at the switch)');
    if (flags.swap && (flags.clean || flags.table.length || flags.schema.length)) {
      throw new UsageError('--swap restores the whole backup into a new database and switches: it does not take --clean, --table or --schema (restore one table in place with --table, or the whole database with --swap)');
    }
    const [{ withSshTunnel }, { restore }, { restoreSwap }, { RestoreChecksFailedError }] = await Promise.all([
      import('../../postgres/ssh-tunnel.ts'),
      import('../../commands/restore.ts'),
      import('../../commands/restore-swap.ts'),
      import('../../commands/restore-checks.ts'),
    ]);
    try {
      const result = await withSshTunnel<RestoreResult | SwapResult>(sshTunnelOf(flags), [flags.targetUrl], ([targetUrl]) => flags.swap
        ? restoreSwap({ ...common(targetUrl!), terminateSessions: flags.terminateSessions })
        : restore({ ...common(targetUrl!), clean: flags.clean, safetyDump: flags.safetyDump, tables: flags.table, schemas: flags.schema }), { signal, logger: stderrLogger() });
      if (flags.json) printJson(result);
    } catch (err) {
      if (flags.json && err instanceof RestoreChecksFailedError) printJson(err.result);
      throw err;
    }
  });
}
