import type { Command } from 'commander';
import { formatBytes } from '../../format.ts';
import { list } from '../../commands/list.ts';
import { filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';
import { renderTable } from '../table.ts';

/**
 * `pg-backup list`: complete backups under `--from`, newest first, as a table with a header (`--json`: the array); a backup that is not restorable as listed is named on stderr. With `--safety-dumps`, the safety dumps `restore --clean` took instead.
 */
export function addListCommand(program: Command, { signal }: CliContext): Command {
  return storageOptions(
    filterOptions(program.command('list').description('list complete backups (manifest present), newest first').requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR'))
      .option('--safety-dumps', 'list the safety dumps restore --clean took (under safety-dumps/) instead of the backups')
      .option('--json', 'print JSON on stdout'),
  ).action(async (flags: CommonFlags & { from: string; safetyDumps?: boolean }) => {
    const backups = await list({ from: flags.from, filter: filterOf(flags), s3: s3Settings(flags, signal), safetyDumps: flags.safetyDumps });
    if (flags.json) return printJson(backups);
    if (backups.length === 0) {
      process.stderr.write(`no complete ${flags.safetyDumps ? 'safety dumps' : 'backups'} under ${flags.from}\n`);
      return;
    }
    const rows = backups.map((b) => [b.startedAt, b.sizeBytes === undefined ? 'missing' : formatBytes(b.sizeBytes), b.status.toUpperCase(), `${b.service}/${b.environment}/${b.database}`, b.key]);
    const lines = renderTable([{ header: 'STARTED (UTC)' }, { header: 'SIZE', align: 'right' }, { header: 'STATUS' }, { header: 'SERVICE/ENVIRONMENT/DATABASE' }, { header: 'KEY' }], rows);
    for (const line of lines) process.stdout.write(`${line}\n`);
    const broken = backups.filter((b) => b.status !== 'ok');
    for (const b of broken) process.stderr.write(`${b.status.toUpperCase()}: ${b.key}: ${b.problem}\n`);
    if (broken.length) process.stderr.write(`${broken.length} of ${backups.length} backups are not restorable as listed; retention never counts them as keepers\n`);
  });
}
