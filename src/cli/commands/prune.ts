import type { Command } from 'commander';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { DEFAULT_KEEP_SAFETY_DUMPS } from '../../backup/safety.ts';
import { stderrLogger } from '../../log.ts';
import { terminalText } from '../../text/sinks.ts';
import { reported } from '../../notify/index.ts';
import { reportingOptions } from '../../notify/cli-options.ts';
import { exitOnFailedCheck, filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/**
 * `pg-backup prune`: applies a retention policy; prints the plan (`--json`: result and plan), deletes only with `--apply`; exit code 1 when a group is refused or a delete fails.
 */
export function addPruneCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  const command = storageOptions(
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
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--keep-safety-dumps <duration>', 'delete the safety dumps restore --clean took once older than this (they never count as backups)', DEFAULT_KEEP_SAFETY_DUMPS)
        .option('--apply', 'delete (default: dry run, print the plan only)')
        .option('--require-signed-drills', 'count a drill as proof only when its signed statement verifies with --public-key (docs/evidence.md); unsigned or forged ones are named')
        .option('--public-key <file>', 'Ed25519 public key (PEM) of the drills\' --sign-key, for --require-signed-drills'),
    ).option('--json', 'print the result and the plan as JSON on stdout'),
  ).action(async (flags: CommonFlags & { from: string; keepLast?: string; keepDaily?: string; keepWeekly?: string; keepMonthly?: string; maxAge?: string; keepProven: string; incompleteGrace: string; keepSafetyDumps: string; maxClockSkew: string; apply?: boolean; requireSignedDrills?: boolean; publicKey?: string }) => {
    const { requireSignedDrills } = await import('../../evidence/check.ts');
    const drillTrust = requireSignedDrills(flags.requireSignedDrills, flags.publicKey);
    const { formatPlan, prune } = await import('../../commands/prune.ts');
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
      maxClockSkew: flags.maxClockSkew,
      keepSafetyDumps: flags.keepSafetyDumps,
      apply: flags.apply,
      drillTrust,
      s3: s3Settings(flags, signal),
      logger: stderrLogger(),
      signal,
    }));
    if (flags.json) printJson(result);
    else for (const line of formatPlan(result.plan, result.safetyDumps)) process.stdout.write(`${terminalText(line)}\n`); // names, ids and reasons from the bucket
    exitOnFailedCheck(result, 'prune', flags.json, setExitCode);
  });
  return reportingOptions(command);
}
