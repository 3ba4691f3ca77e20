import type { Command } from 'commander';
import type { VerifyLevel } from '../../commands/verify.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { stderrLogger } from '../../log.ts';
import { UsageError } from '../../errors.ts';
import { terminalText } from '../../text/sinks.ts';
import { reported } from '../../notify/index.ts';
import { reportingOptions } from '../../notify/cli-options.ts';
import { checkVerifyScope } from '../../physical/wal-freshness.ts';
import { checkJson, exitOnFailedCheck, filterOf, filterOptions, identityOption, printJson, readerOptions, s3Settings, storageOptions, type CliContext, type CommonFlags, QUIET_HELP } from '../common.ts';

/**
 * `pg-backup verify`: checks a backup at `--level` (or, with `--wal-prefix`, the freshness of a WAL archive); exit code 1 when the check fails.
 */
export function addVerifyCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  const command = storageOptions(identityOption(
    filterOptions(
      program
        .command('verify')
        .description('re-download a backup, check size and sha256 against its manifest, and read the whole archive with pg_restore; or, with --wal-prefix, check that WAL archiving is fresh')
        .option('--from <url>', 's3://BUCKET/PREFIX or file:///DIR (required unless --wal-prefix)')
        .option('--wal-prefix <url>', 'instead of backups, a WAL archive (e.g. s3://BUCKET/pgbackrest/archive/main/): fail when its newest object is older than --max-age')
        .option('--backup <key>', 'a key or id from "pg-backup list" (or a drill report\'s backupId), or latest', 'latest')
        .option('--level <level>', 'none (no download: freshness only), checksum, archive (+ full pg_restore read) or schema (+ schema replay into a throwaway PostgreSQL)', 'archive')
        .option('--max-age <duration>', 'fail when the newest complete backup in scope is older (e.g. 30h)')
        .option('--expect-every <duration>', 'fail on gaps longer than 1.5x this cadence in the listed history (e.g. 6h)')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--fail-on-suspicion', 'fail (not just warn) on a backup far smaller than the previous one or a table whose rows collapsed')
        .option('--work-dir <dir>', 'where the throwaway cluster of --level schema lives')
        .option('--allow-same-os-user', 'level schema without root or passwordless sudo: run the throwaway PostgreSQL as your own OS user anyway (environment scrubbed; code restored from the backup could read your files): otherwise refused')
        .option('--record', 'write the verdict to <id>.verify.json beside the backup, so prune knows it is proven (needs s3:PutObject there; a failed write is a warning)')
        .option('--recipients', 'instead of reading backups: check without decrypting that every backup in scope (--since) was encrypted to each --require-recipient (manifest and age header; docs/evidence.md)')
        .option('--require-recipient <age1…>', 'with --recipients: an age recipient every backup must be encrypted to (repeat for several)', (v: string, all: string[] = []) => [...all, v])
        .option('--since <duration>', 'with --recipients: only backups taken within this duration (e.g. 90d)'),
    ).option('--json', 'print the result as JSON on stdout').option('--quiet', QUIET_HELP),
  )).action(async (flags: CommonFlags & { from?: string; walPrefix?: string; backup: string; level: VerifyLevel; maxAge?: string; expectEvery?: string; maxClockSkew: string; failOnSuspicion?: boolean; workDir?: string; record?: boolean; allowSameOsUser?: boolean; recipients?: boolean; requireRecipient?: string[]; since?: string }) => {
    if (flags.recipients || flags.requireRecipient || flags.since) {
      if (!flags.recipients) throw new UsageError('--require-recipient and --since belong to --recipients: add it');
      if (!flags.from) throw new UsageError('--recipients needs --from s3://BUCKET/PREFIX (or file:///DIR)');
      const { verifyRecipients } = await import('../../evidence/recipients.ts');
      const r = await verifyRecipients({ from: flags.from, filter: filterOf(flags), required: flags.requireRecipient ?? [], since: flags.since, s3: s3Settings(flags, signal), logger: stderrLogger(), signal });
      if (flags.json) printJson(r);
      else for (const b of r.backups) process.stdout.write(`${terminalText(`${b.ok ? 'OK     ' : 'FAILED '} ${b.id}  ${b.recipients.length} recipient(s) in the manifest, ${b.headerStanzas ?? '?'} in the age header${b.problems.length ? `  (${b.problems.join('; ')})` : ''}`)}\n`);
      exitOnFailedCheck(r, 'verify --recipients', flags.json, setExitCode);
      return;
    }
    checkVerifyScope(flags.from, flags.walPrefix, { from: '--from', walPrefix: '--wal-prefix', maxAge: '--max-age' }, flags.maxAge);
    if (flags.walPrefix) {
      const { walFreshness } = await import('../../physical/wal-freshness.ts');
      const wal = await reported({ ...flags, logger: stderrLogger() }, 'verify', () => walFreshness({ prefix: flags.walPrefix!, maxAge: flags.maxAge!, s3: s3Settings(flags, signal), logger: stderrLogger() }));
      if (flags.json) printJson(wal);
      exitOnFailedCheck(wal, 'verify', flags.json, setExitCode);
      return;
    }
    const { verify } = await import('../../commands/verify.ts');
    const result = await reported({ ...flags, logger: stderrLogger() }, 'verify', () => verify({
      ...readerOptions(flags, signal),
      from: flags.from!,
      backup: flags.backup,
      level: flags.level,
      maxAge: flags.maxAge,
      expectEvery: flags.expectEvery,
      maxClockSkew: flags.maxClockSkew,
      failOnSuspicion: flags.failOnSuspicion,
      workDir: flags.workDir,
      record: flags.record,
      allowSameOsUser: flags.allowSameOsUser,
    }));
    if (flags.json) printJson(checkJson(result));
    exitOnFailedCheck(result, 'verify', flags.json, setExitCode);
  });
  return reportingOptions(command);
}
