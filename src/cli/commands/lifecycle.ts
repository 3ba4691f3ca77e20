import type { Command } from 'commander';
import { UsageError } from '../../errors.ts';
import { stderrLogger } from '../../log.ts';
import { filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/**
 * `pg-backup lifecycle`: prints the S3 lifecycle rule matching a retention, or puts it with `--apply` and prints what the bucket then holds.
 */
export function addLifecycleCommand(program: Command, { signal }: CliContext): Command {
  return storageOptions(
    filterOptions(
      program
        .command('lifecycle')
        .description('print (or --apply) the S3 bucket lifecycle rule matching a retention: expiration after --max-age, noncurrent versions, incomplete multipart uploads')
        .requiredOption('--to <url>', 's3://BUCKET/PREFIX')
        .requiredOption('--max-age <duration>', 'expire objects under the prefix this long after they were written (whole days, rounded up)')
        .option('--noncurrent-days <n>', 'versioned buckets: remove noncurrent versions after N days', '7')
        .option('--abort-multipart-days <n>', 'abort incomplete multipart uploads after N days', '7')
        .option('--print', 'print the rule as S3 lifecycle JSON (the default)')
        .option('--apply', 'put it with PutBucketLifecycleConfiguration, keeping rules with other IDs, and print what the bucket holds'),
    ),
  ).action(async (flags: CommonFlags & { to: string; maxAge: string; noncurrentDays: string; abortMultipartDays: string; print?: boolean; apply?: boolean }) => {
    if (flags.print && flags.apply) throw new UsageError('give --print or --apply, not both');
    const { lifecycle } = await import('../../commands/lifecycle.ts');
    const result = await lifecycle({
      to: flags.to,
      filter: filterOf(flags),
      maxAge: flags.maxAge,
      noncurrentDays: flags.noncurrentDays,
      abortMultipartDays: flags.abortMultipartDays,
      apply: flags.apply,
      s3: s3Settings(flags, signal),
      logger: stderrLogger(),
    });
    printJson(result.applied ? result.readBack : result.configuration);
  });
}
