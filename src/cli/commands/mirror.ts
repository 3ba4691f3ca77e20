import type { Command } from 'commander';
import { stderrLogger } from '../../log.ts';
import type { S3Settings } from '../../storage/index.ts';
import { mirrorSettings, parseObjectLock, parseSse, sseCustomerKey } from '../../storage/protection.ts';
import { filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/**
 * `pg-backup mirror`: copies the complete backups another location lacks, each checked against its manifest's SHA-256, manifest last.
 */
export function addMirrorCommand(program: Command, { signal }: CliContext): Command {
  return storageOptions(
    filterOptions(
      program
        .command('mirror')
        .description('copy complete backups missing at another location (an off-region DR bucket), checking each object\'s sha256 against its manifest, manifest last; idempotent')
        .requiredOption('--from <url>', 'the backup location, s3://BUCKET/PREFIX or file:///DIR (read access)')
        .requiredOption('--to <url>', 'the mirror location (write access; credentials: $PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY, else the default chain)')
        .option('--to-endpoint <url>', 'S3 endpoint of --to (never taken from $AWS_ENDPOINT_URL*)')
        .option('--to-region <name>', 'S3 region of --to')
        .option('--since <duration>', 'only backups taken within this long, e.g. 7d (default: all)')
        .option('--sse <type>', 'server-side encryption of the copies: AES256, aws:kms or sse-c (key in $PG_BACKUP_SSE_C_KEY)')
        .option('--sse-kms-key-id <id>', 'the KMS key of the target region for --sse aws:kms')
        .option('--object-lock <mode:days>', 'Object Lock retention on every copy, e.g. compliance:30')
        .option('--dry-run', 'list what would be copied'),
    ).option('--json', 'print the result as JSON on stdout'),
  ).action(async (flags: CommonFlags & { from: string; to: string; toEndpoint?: string; toRegion?: string; since?: string; dryRun?: boolean; sse?: string; sseKmsKeyId?: string; objectLock?: string }) => {
    const read = s3Settings(flags, signal);
    const protect: S3Settings = { ...read, sse: parseSse(flags.sse, flags.sseKmsKeyId, sseCustomerKey()), objectLock: parseObjectLock(flags.objectLock) };
    const { mirror } = await import('../../commands/mirror.ts');
    const result = await mirror({
      from: flags.from,
      to: flags.to,
      filter: filterOf(flags),
      since: flags.since,
      dryRun: flags.dryRun,
      s3: read,
      targetS3: mirrorSettings(protect, { endpoint: flags.toEndpoint, region: flags.toRegion, kmsKeyId: flags.sseKmsKeyId }),
      logger: stderrLogger(),
      signal,
    });
    if (flags.json) printJson(result);
  });
}
