import type { Command } from 'commander';
import { formatBytes } from '../../format.ts';
import { list } from '../../commands/list.ts';
import { terminalText } from '../../text/sinks.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/**
 * `pg-backup list`: complete backups under `--from`, newest first, one line each (`--json`: the array); a backup that is not restorable as listed is named on stderr.
 * Names and keys come from the bucket: each is escaped for the terminal as it is printed.
 */
export function addListCommand(program: Command, { signal }: CliContext): Command {
  return storageOptions(
    filterOptions(program.command('list').description('list complete backups (manifest present), newest first').requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')).option(
      '--json',
      'print JSON on stdout',
    ).option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m'),
  ).action(async (flags: CommonFlags & { from: string; maxClockSkew: string }) => {
    const backups = await list({ from: flags.from, filter: filterOf(flags), s3: s3Settings(flags, signal), maxClockSkew: flags.maxClockSkew });
    if (flags.json) return printJson(backups);
    if (backups.length === 0) {
      process.stderr.write(`no complete backups under ${terminalText(flags.from)}\n`);
      return;
    }
    for (const b of backups) {
      const size = b.sizeBytes === undefined ? 'missing' : formatBytes(b.sizeBytes);
      process.stdout.write(`${b.startedAt}  ${size.padStart(8)}  ${b.status.toUpperCase().padEnd(13)}  ${terminalText(`${b.service}/${b.environment}/${b.database}`)}  ${terminalText(b.key)}\n`);
    }
    const broken = backups.filter((b) => b.status !== 'ok');
    for (const b of broken) process.stderr.write(`${b.status.toUpperCase()}: ${terminalText(b.key)}: ${terminalText(b.problem ?? '')}\n`);
    if (broken.length) process.stderr.write(`${broken.length} of ${backups.length} backups are not restorable as listed; retention never counts them as keepers\n`);
    const untrusted = broken.filter((b) => b.status === 'future' || b.status === 'misdated').length;
    if (untrusted) process.stderr.write(`${untrusted} of them ${untrusted === 1 ? 'is' : 'are'} stamped in the future or misdated: never "latest", never fresh, kept by prune for inspection; check the clocks of the runners that dump and who can write to the bucket\n`);
  });
}
