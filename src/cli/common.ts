import type { Command } from 'commander';
import { Option } from 'commander';
import { loadIdentities } from '../backup/encryption.ts';
import { stderrLogger } from '../log.ts';
import type { S3Settings } from '../storage/index.ts';
import { parseSse, sseCustomerKey } from '../storage/protection.ts';
import { terminalJson, terminalText } from '../text/sinks.ts';

// What every command's CLI definition (src/cli/commands/<command>.ts) shares: the exit codes,
// the run's context, the option groups several commands take, and how flags become settings.

/** Exit codes: 0 success, 1 a check failed (or an unexpected error), 2 a usage error. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/**
 * What a command's action gets from the program: `signal` aborts the run (SIGINT, SIGTERM, a
 * closed stdout/stderr; every command passes it down), `setExitCode` records the exit code of a
 * run that ended without throwing (1 for a failed check).
 */
export interface CliContext {
  signal: AbortSignal;
  setExitCode: (code: number) => void;
}

/** Flags of the shared option groups ({@link storageOptions}, {@link identityOption}, {@link filterOptions}), `--json` and `--quiet`, as commander names them (camelCase). */
export interface CommonFlags {
  endpoint?: string;
  region?: string;
  ageIdentityFile?: string;
  json?: boolean;
  quiet?: boolean;
  service?: string;
  environment?: string;
  database?: string;
}

/** S3 settings for reading: endpoint, region, the SSE-C key when `PG_BACKUP_SSE_C_KEY` is set, and the command's signal (SIGINT/SIGTERM abort requests in flight). */
export function s3Settings(flags: CommonFlags, signal?: AbortSignal): S3Settings {
  return { endpoint: flags.endpoint, region: flags.region, sse: parseSse(undefined, undefined, sseCustomerKey()), signal };
}

/** age identities from `--age-identity-file`, else the environment. */
export function identitiesOf(flags: CommonFlags): string[] | undefined {
  return loadIdentities(flags.ageIdentityFile);
}

/** The `--service` / `--environment` / `--database` filter of the backups a command reads. */
export function filterOf(flags: CommonFlags) {
  return { service: flags.service, environment: flags.environment, database: flags.database };
}

/**
 * What a command that reads (and may decrypt) backups passes down from its flags: the
 * `--service/--environment/--database` filter, S3 settings with the run's signal, the age
 * identities, a stderr logger (quiet with `--quiet`) and the signal itself.
 * @throws UsageError when the age identity file cannot be read.
 */
export function readerOptions(flags: CommonFlags, signal: AbortSignal) {
  return { filter: filterOf(flags), s3: s3Settings(flags, signal), ageIdentities: identitiesOf(flags), logger: stderrLogger(flags.quiet), signal };
}

/** The help of `--quiet` (verify, drill, restore): no progress lines (src/backup/progress-eta.ts) and no informational lines on stderr; warnings, errors and the result stay. */
export const QUIET_HELP = 'no progress or informational lines on stderr (warnings, errors and the result still)';

/** A verify or drill result as `--json` prints it: the manifest left out, its id as `backupId`. */
export function checkJson(result: { manifest?: { id: string } }) {
  return { ...result, manifest: undefined, backupId: result.manifest?.id };
}

/**
 * The end of a run whose check may have failed (verify, drill, prune): when `result.ok` is false,
 * `<command> failed: <reason>` on stderr (unless `--json` printed the result; the reason escaped
 * for the terminal) and exit code 1.
 */
export function exitOnFailedCheck(result: { ok: boolean; reason?: string }, command: string, json: boolean | undefined, setExitCode: (code: number) => void): void {
  if (result.ok) return;
  // A reason that already says "<command> failed: …" is not prefixed twice.
  const reason = (result.reason ?? 'failed').replace(new RegExp(`^${command} failed: `), '');
  if (!json) process.stderr.write(`${command} failed: ${terminalText(reason)}\n`);
  setExitCode(EXIT.failed);
}

/** Prints `value` on stdout as indented JSON (the `--json` output), with the characters JSON leaves raw that a terminal would act on escaped ({@link terminalJson}). */
export function printJson(value: unknown): void {
  process.stdout.write(`${terminalJson(value, 2)}\n`);
}

/** Adds `--endpoint` and `--region` (the S3 connection; credentials come from the environment). */
export function storageOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--endpoint <url>', 'S3 endpoint for R2, Spaces, MinIO, B2, Ceph (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL)'))
    .addOption(new Option('--region <name>', 'S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)'));
}

/** Adds `--age-identity-file`, for commands that read backups encrypted with age. */
export function identityOption(cmd: Command): Command {
  return cmd.option('--age-identity-file <file>', 'age identity (secret key) file for backups encrypted with --age-recipient (default: $PG_BACKUP_AGE_IDENTITY, $PG_BACKUP_AGE_IDENTITY_FILE)');
}

/** Adds `--service`, `--environment` and `--database`, which narrow the backups a command reads ({@link filterOf}). */
export function filterOptions(cmd: Command): Command {
  return cmd
    .option('--service <name>', 'only backups of this service')
    .option('--environment <name>', 'only backups of this environment')
    .option('--database <name>', 'only backups of this database');
}
