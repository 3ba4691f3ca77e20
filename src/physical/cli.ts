import { UsageError } from '../errors.ts';
import type { SigningKey } from '../evidence/dsse.ts';
import { stderrLogger } from '../log.ts';
import { terminalText } from '../text/sinks.ts';
import { printDrillRecordUris } from '../cli/drill-output.ts';
import type { S3Settings } from '../storage/index.ts';
import { physicalDrill, type PhysicalDrillResult } from './drill.ts';
import { PgBackRestDriver } from './pgbackrest.ts';

/** The `pg-backup drill` flags a physical drill reads. */
export interface PhysicalDrillFlags {
  pgbackrestStanza?: string;
  pgbackrestConfig?: string;
  pgbackrestVerify?: boolean;
  targetTime?: string;
  logTo?: string;
  from?: string;
  targetUrl?: string;
  backup?: string;
  service?: string;
  environment?: string;
  database?: string;
  workDir?: string;
  smokeSql?: string;
  maxRto?: string;
  maxRpo?: string;
  allowSameOsUser?: boolean;
}

/**
 * `pg-backup drill --pgbackrest-stanza NAME …`: checks that no logical-drill option is mixed in,
 * runs {@link physicalDrill} with the pgBackRest driver, prints the report (`--json`) and sets
 * exit code 1 on a failed drill.
 * @throws UsageError for a missing stanza or options of the logical drill.
 */
export async function physicalDrillCli(
  flags: PhysicalDrillFlags,
  io: { s3: S3Settings; signingKey?: SigningKey; json?: boolean; signal: AbortSignal; setExitCode: () => void; printJson: (v: unknown) => void },
): Promise<PhysicalDrillResult> {
  if (!flags.pgbackrestStanza) throw new UsageError('--pgbackrest-config, --pgbackrest-verify, --target-time and --log-to belong to a physical drill: give --pgbackrest-stanza NAME too');
  const mixed = [flags.from && '--from', flags.targetUrl && '--target-url', flags.backup && flags.backup !== 'latest' && '--backup'].filter(Boolean);
  if (mixed.length) throw new UsageError(`${mixed.join(', ')} belong${mixed.length > 1 ? '' : 's'} to a drill of a logical backup, not to --pgbackrest-stanza: pgBackRest's configuration names the repository, --target-time the moment, --log-to where the drill log goes`);
  const result = await physicalDrill({
    driver: new PgBackRestDriver({ stanza: flags.pgbackrestStanza, config: flags.pgbackrestConfig }),
    targetTime: flags.targetTime,
    logTo: flags.logTo,
    service: flags.service,
    environment: flags.environment,
    database: flags.database,
    workDir: flags.workDir,
    smokeSql: flags.smokeSql,
    verifyRepository: flags.pgbackrestVerify,
    maxRto: flags.maxRto,
    maxRpo: flags.maxRpo,
    allowSameOsUser: flags.allowSameOsUser,
    s3: io.s3,
    signingKey: io.signingKey,
    logger: stderrLogger(),
    signal: io.signal,
  });
  if (io.json) io.printJson(result);
  else printDrillRecordUris(result);
  if (!result.ok) {
    if (!io.json) process.stderr.write(`drill failed: ${terminalText((result.reason ?? 'failed').replace(/^drill failed: /, ''))}\n`);
    io.setExitCode();
  }
  return result;
}
