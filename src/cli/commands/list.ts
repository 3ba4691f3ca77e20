import type { Command } from 'commander';
import { formatBytes } from '../../format.ts';
import { terminalText } from '../../text/sinks.ts';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import { filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';
import { renderTable } from '../table.ts';

/**
 * `pg-backup list`: complete backups under `--from`, newest first, as a table with a header (`--json`: the array); a backup that is not restorable as listed is named on stderr. With `--safety-dumps`, the safety dumps `restore --clean` took instead.
 * Names and keys come from the bucket: each cell is escaped for the terminal before the table measures it.
 */
export function addListCommand(program: Command, { signal }: CliContext): Command {
  return storageOptions(
    filterOptions(program.command('list').description('list complete backups (manifest present), newest first').requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR'))
      .option('--safety-dumps', 'list the safety dumps restore --clean took (under safety-dumps/) instead of the backups')
      .option('--json', 'print JSON on stdout')
      .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m'),
  ).action(async (flags: CommonFlags & { from: string; safetyDumps?: boolean; maxClockSkew: string }) => {
    const { list } = await import('../../commands/list.ts');
    const backups = await list({ from: flags.from, filter: filterOf(flags), s3: s3Settings(flags, signal), safetyDumps: flags.safetyDumps, maxClockSkew: flags.maxClockSkew });
    if (flags.json) return printJson(backups);
    if (backups.length === 0) {
      process.stderr.write(`no complete ${flags.safetyDumps ? 'safety dumps' : 'backups'} under ${terminalText(flags.from)}\n`);
      return;
    }
    // A run's globals are marked as such (with whether they hold role passwords); RUN ties a run's backups together.
    const what = (b: (typeof backups)[number]) => (b.kind === 'globals' ? `${b.service}/${b.environment} globals${b.rolePasswords === false ? ' (no passwords)' : ''}` : `${b.service}/${b.environment}/${b.database}`);
    const rows = backups.map((b) => [b.startedAt, b.sizeBytes === undefined ? 'missing' : formatBytes(b.sizeBytes), b.status.toUpperCase(), what(b), b.run ?? '-', b.key].map(terminalText));
    const lines = renderTable([{ header: 'STARTED (UTC)' }, { header: 'SIZE', align: 'right' }, { header: 'STATUS' }, { header: 'SERVICE/ENVIRONMENT/DATABASE' }, { header: 'RUN' }, { header: 'KEY' }], rows);
    for (const line of lines) process.stdout.write(`${line}\n`);
    const broken = backups.filter((b) => b.status !== 'ok');
    for (const b of broken) process.stderr.write(`${b.status.toUpperCase()}: ${terminalText(b.key)}: ${terminalText(b.problem ?? '')}\n`);
    if (broken.length) process.stderr.write(`${broken.length} of ${backups.length} backups are not restorable as listed; retention never counts them as keepers\n`);
    const untrusted = broken.filter((b) => b.status === 'future' || b.status === 'misdated').length;
    if (untrusted) process.stderr.write(`${untrusted} of them ${untrusted === 1 ? 'is' : 'are'} stamped in the future or misdated: never "latest", never fresh, kept by prune for inspection; check the clocks of the runners that dump and who can write to the bucket\n`);
  });
}
