import type { Command } from 'commander';
import { stderrLogger } from '../log.ts';
import { parseSse, sseCustomerKey } from '../storage/protection.ts';
import { terminalJson } from '../text/sinks.ts';
import { formatTable } from './text.ts';

interface StatusFlags {
  from: string;
  json?: boolean;
  html?: string;
  markdown?: string;
  maxAge?: string;
  rtoBudget?: string;
  maxClockSkew: string;
  publish?: boolean;
  service?: string;
  environment?: string;
  database?: string;
  endpoint?: string;
  region?: string;
  requireSignedDrills?: boolean;
  publicKey?: string;
}

/**
 * Adds `pg-backup status` to the program: the table on stdout (or `--json`), optional HTML and
 * Markdown files; exit code 1 (through `setExitCode`) when a database is stale, its last
 * drill failed, or it holds a record stamped in the future or misdated.
 */
export function addStatusCommand(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('status')
    .description('the state of every backup under a location: per database the newest backup and its age, size and trend, complete and proven backups, last verify and last drill with RTO; exit 1 when one is stale, its last drill failed, or a record is stamped in the future or misdated')
    .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR: every service, environment and database under it')
    .option('--max-age <duration>', 'a database whose newest complete backup is older is stale', '30h')
    .option('--max-clock-skew <duration>', 'a backup, drill report or verify record stamped later than now plus this is FUTURE: not counted, named, exit 1', '10m')
    .option('--rto-budget <duration>', 'RTO budget for the charts and warnings when a drill report records none (e.g. 30m)')
    .option('--html <file>', 'write a self-contained HTML page (table and charts, no network request when opened)')
    .option('--markdown <file>', 'write a Markdown version (table and a Mermaid RTO chart) for a GitHub job summary')
    .option('--publish', 'also put the HTML page at status/index.html under --from (needs s3:PutObject there; a failure is a warning)')
    .option('--service <name>', 'only this service')
    .option('--environment <name>', 'only this environment')
    .option('--database <name>', 'only this database (or stanza)')
    .option('--endpoint <url>', 'S3 endpoint for R2, Spaces, MinIO, B2, Ceph (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL)')
    .option('--region <name>', 'S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)')
    .option('--require-signed-drills', 'count a drill only when its signed statement verifies with --public-key (docs/evidence.md); unsigned or forged ones are named')
    .option('--public-key <file>', 'Ed25519 public key (PEM) of the drills\' --sign-key, for --require-signed-drills')
    .option('--json', 'print the status as JSON on stdout')
    .action(async (flags: StatusFlags) => {
      const { requireSignedDrills } = await import('../evidence/check.ts');
      const drillTrust = requireSignedDrills(flags.requireSignedDrills, flags.publicKey);
      const { status } = await import('../commands/status.ts');
      const result = await status({
        from: flags.from,
        filter: { service: flags.service, environment: flags.environment, database: flags.database },
        maxAge: flags.maxAge,
        rtoBudget: flags.rtoBudget,
        maxClockSkew: flags.maxClockSkew,
        htmlFile: flags.html,
        markdownFile: flags.markdown,
        publish: flags.publish,
        s3: { endpoint: flags.endpoint, region: flags.region, sse: parseSse(undefined, undefined, sseCustomerKey()) },
        logger: stderrLogger(flags.json),
        drillTrust,
      });
      if (flags.json) process.stdout.write(`${terminalJson(result.fleet, 2)}\n`);
      else process.stdout.write(formatTable(result.fleet, Boolean(process.stdout.isTTY) && !process.env.NO_COLOR));
      for (const file of [result.htmlFile, result.markdownFile]) if (file) process.stderr.write(`wrote ${file}\n`);
      if (!result.fleet.ok) setExitCode(1);
    });
}
