import type { Command } from 'commander';
import { formatBytes, formatSeconds } from '../../format.ts';
import { stderrLogger } from '../../log.ts';
import type { CliContext } from '../common.ts';

/**
 * `pg-backup demo`: the whole job (dump, verify, drill) on a throwaway PostgreSQL with a sample database and a local `file://` bucket; prints where everything went.
 */
export function addDemoCommand(program: Command, { signal }: CliContext): Command {
  return program
    .command('demo')
    .description('the whole job on an embedded default: a throwaway PostgreSQL with a sample database, dumped to a local file:// bucket, verified, drilled')
    .option('--bucket <url>', 'where to put the backups', `file://${process.cwd()}/demo-bucket`)
    .action(async (flags: { bucket: string }) => {
      const { demo } = await import('../../commands/demo.ts');
      const summary = await demo({ bucket: flags.bucket, logger: stderrLogger(), signal });
      process.stdout.write(
        [
          '',
          `demo OK: dumped "${summary.database}" to ${summary.backupUri}`,
          `  ${formatBytes(summary.sizeBytes)} stored, sha256 ${summary.sha256}`,
          `  verify: OK; drill: restore drill OK, RTO ${formatSeconds(summary.rtoMs)}, ${summary.tables} tables' row counts match`,
          `  drill log: ${summary.drillLogUri}`,
          `  try: npx pg-backup list --from ${flags.bucket}`,
          '',
        ].join('\n'),
      );
    });
}
