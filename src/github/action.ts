import * as core from '@actions/core';
import { z } from 'zod';
import { CheckFailedError, UsageError, exitCodeOf, messageOf, registerSecret } from '../errors.ts';
import type { Logger } from '../log.ts';
import { connectionSecrets, resolveConnection } from '../postgres/connection.ts';
import { loadIdentities, parseIdentities } from '../backup/encryption.ts';
import type { S3Settings } from '../storage/index.ts';
import { mirrorSettings, parseObjectLock, parseSse, readerSettings, sseCustomerKey } from '../storage/protection.ts';
import type { IssueSettings } from './issues.ts';
import type { ReportingOptions, RunScope } from '../notify/index.ts';
import { fillInputsFromConfig } from './config-inputs.ts';
import { urlSecrets } from '../notify/deliver.ts';
import { runnerLogText } from '../text/sinks.ts';

/**
 * The GitHub Actions door: typed inputs, masking, logging, outputs and the run wrapper shared
 * by `actions/dump`, `actions/verify` and `actions/drill`. Entry files stay a few lines:
 * read inputs → call a command → publish outputs and the job summary.
 */

/**
 * The runner log's one way out: every line, annotation and group name an action writes goes
 * through {@link runnerLogText}, so nothing read from a bucket or a database (a key, a table
 * name, a manifest field, a reason) can start a workflow command (`::stop-commands::`,
 * `::add-mask::`, `::error::`, `##[…]`) or a line of its own. `core.info` writes its text as it
 * is (no escaping at all); `core.warning`, `core.error` and `core.setFailed` escape only `%`, CR
 * and LF of their data.
 */
export const runnerLog = {
  info: (message: string) => core.info(runnerLogText(message)),
  warning: (message: string) => core.warning(runnerLogText(message)),
  /** `core.debug`: shown only when the workflow runs with step debug logging. */
  debug: (message: string) => core.debug(runnerLogText(message)),
  /** `core.setFailed`: an `::error::` annotation and exit code 1 (callers may set another). */
  failed: (message: string) => core.setFailed(runnerLogText(message)),
  group: <T>(name: string, fn: () => Promise<T>) => core.group(runnerLogText(name), fn),
};

/** A logger over `@actions/core` through {@link runnerLog}: info lines, `::warning::` annotations, collapsible groups. */
export const actionLogger: Logger = {
  info: (message) => runnerLog.info(message),
  warn: (message) => runnerLog.warning(message),
  group: (name, fn) => runnerLog.group(name, fn),
  debug: (message) => runnerLog.debug(message),
};

/** An optional string input: absent or blank becomes undefined. */
export const optional = z
  .string()
  .transform((s) => s.trim())
  .transform((s) => (s === '' ? undefined : s))
  .optional();

/** A required string input. */
export const required = z.string().trim().min(1, 'is required');

/** Inputs every action takes to reach S3-compatible storage. */
export const storageInputs = {
  endpoint: optional,
  region: optional,
  'aws-access-key-id': optional,
  'aws-secret-access-key': optional,
  'aws-session-token': optional,
  'sse-c-key': optional,
};

/** Dump-only inputs that protect the backup: encryption, Object Lock, read-only verify credentials, the mirror. */
export const protectionInputs = {
  sse: optional,
  'sse-kms-key-id': optional,
  'object-lock': optional,
  'age-recipients': optional,
  'reader-access-key-id': optional,
  'reader-secret-access-key': optional,
  'mirror-to': optional,
  'mirror-endpoint': optional,
  'mirror-region': optional,
  'mirror-access-key-id': optional,
  'mirror-secret-access-key': optional,
  'mirror-sse-kms-key-id': optional,
};

/**
 * The dump's protection settings from {@link protectionInputs}: write settings (SSE, Object
 * Lock) on top of `base`, age recipients, reader credentials for the verify, and the mirror.
 * Secrets are masked first.
 * @throws UsageError for malformed values (one line naming the input).
 */
export function protectionFrom(base: S3Settings, inputs: { [K in keyof typeof protectionInputs]?: string } & { 'sse-c-key'?: string }) {
  for (const secret of [inputs['reader-secret-access-key'], inputs['mirror-secret-access-key']]) {
    if (secret) {
      core.setSecret(secret);
      registerSecret(secret);
    }
  }
  const write: S3Settings = { ...base, sse: parseSse(inputs.sse, inputs['sse-kms-key-id'], sseCustomerKey(inputs['sse-c-key'] ?? process.env.PG_BACKUP_SSE_C_KEY)), objectLock: parseObjectLock(inputs['object-lock']) };
  const mirrorTo = inputs['mirror-to'] || undefined;
  return {
    s3: write,
    verifyS3: readerSettings(write, { accessKeyId: inputs['reader-access-key-id'], secretAccessKey: inputs['reader-secret-access-key'] }),
    ageRecipients: listInput(inputs['age-recipients'] ?? process.env.PG_BACKUP_AGE_RECIPIENTS, 'lines').flatMap((l) => l.split(/[\s,]+/)).filter(Boolean),
    mirrorTo,
    mirrorS3: mirrorTo
      ? mirrorSettings(write, { endpoint: inputs['mirror-endpoint'], region: inputs['mirror-region'], kmsKeyId: inputs['mirror-sse-kms-key-id'], accessKeyId: inputs['mirror-access-key-id'], secretAccessKey: inputs['mirror-secret-access-key'] })
      : undefined,
  };
}

/** age identities from the `age-identity` input (the identity file's text, masked), else the environment. */
export function identitiesFrom(value: string | undefined): string[] | undefined {
  if (value?.trim()) {
    for (const line of value.split(/\r?\n/)) {
      if (line.trim() && !line.trim().startsWith('#')) {
        core.setSecret(line.trim());
        registerSecret(line.trim());
      }
    }
    return parseIdentities(value, 'input "age-identity"');
  }
  return loadIdentities();
}

/** Inputs of the GitHub failure issue (drill and verify). */
export const issueInputs = {
  'github-token': optional,
  'issue-on-failure': optional,
  'issue-label': optional,
};

/** Issue settings from {@link issueInputs}; undefined when disabled or no token is available. */
export function issueSettingsFrom(inputs: { 'github-token'?: string; 'issue-on-failure'?: string; 'issue-label'?: string }): IssueSettings | undefined {
  const enabled = (inputs['issue-on-failure'] ?? 'true').toLowerCase();
  if (!['true', 'false'].includes(enabled)) throw new UsageError(`input "issue-on-failure" must be true or false (got ${JSON.stringify(inputs['issue-on-failure'])})`);
  if (enabled === 'false') return undefined;
  const token = inputs['github-token'] ?? process.env.GITHUB_TOKEN;
  if (!token) {
    runnerLog.info('no github-token: no failure issue will be opened');
    return undefined;
  }
  core.setSecret(token);
  return { token, label: inputs['issue-label'] ?? 'backup-drill-failure' };
}

/** Inputs that narrow `latest` to one service / environment / database. */
export const filterInputs = {
  service: optional,
  environment: optional,
  database: optional,
};

/**
 * Reads and validates the inputs named in `shape` (kebab-case, as in action.yml) from the
 * runner's `INPUT_<NAME>` variables. With `command` (the action's name), inputs left empty are
 * filled from the settings file of the `config` input (src/github/config-inputs.ts).
 * @throws UsageError naming the first invalid input, or the file's line for an invalid settings file.
 */
export function readInputs<S extends z.ZodRawShape>(shape: S, command?: 'dump' | 'verify' | 'drill' | 'prune'): z.infer<z.ZodObject<S>> {
  const raw: Record<string, string> = {};
  for (const name of Object.keys(shape)) raw[name] = core.getInput(name);
  if (command) fillInputsFromConfig(raw, command);
  const parsed = z.object(shape).safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`input "${issue.path.join('.')}" ${issue.message}`);
  }
  return parsed.data;
}

/**
 * Masks every credential before anything is logged (`core.setSecret`, so the runner replaces
 * them with `***`): the password in each database URL, the S3 secret key and session token from
 * the inputs and from `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, and `PGPASSWORD`.
 */
export function maskSecrets(values: { databaseUrls?: (string | undefined)[]; storage?: { 'aws-secret-access-key'?: string; 'aws-session-token'?: string } }): void {
  for (const url of values.databaseUrls ?? []) {
    if (!url) continue;
    // Every form: URL (also with an unencoded @ or / in the password), ?password=, key=value.
    for (const p of connectionSecrets(url)) {
      core.setSecret(p);
      registerSecret(p);
    }
  }
  const secrets = [
    values.storage?.['aws-secret-access-key'],
    values.storage?.['aws-session-token'],
    process.env.AWS_SECRET_ACCESS_KEY,
    process.env.AWS_SESSION_TOKEN,
    process.env.PGPASSWORD,
  ];
  for (const secret of secrets) {
    if (secret) {
      core.setSecret(secret);
      registerSecret(secret);
    }
  }
}

/** S3 settings from the storage inputs; credentials only when both key inputs are given. */
export function s3SettingsFrom(inputs: { endpoint?: string; region?: string; 'aws-access-key-id'?: string; 'aws-secret-access-key'?: string; 'aws-session-token'?: string; 'sse-c-key'?: string }): S3Settings {
  const key = inputs['sse-c-key'] ?? process.env.PG_BACKUP_SSE_C_KEY;
  if (key) core.setSecret(key.trim());
  const settings: S3Settings = { endpoint: inputs.endpoint, region: inputs.region, sse: parseSse(undefined, undefined, sseCustomerKey(key)) };
  const id = inputs['aws-access-key-id'];
  const secret = inputs['aws-secret-access-key'];
  if (Boolean(id) !== Boolean(secret)) throw new UsageError('give both aws-access-key-id and aws-secret-access-key, or neither (to use the environment / OIDC role)');
  if (id && secret) settings.credentials = { accessKeyId: id, secretAccessKey: secret, sessionToken: inputs['aws-session-token'] };
  return settings;
}

/**
 * A list input: items separated by commas or newlines (`lines`: newlines only, for values that
 * may contain commas, such as URLs and pg_dump arguments). Blank items are dropped.
 */
export function listInput(value: string | undefined, split: 'commas' | 'lines' = 'commas'): string[] {
  if (!value) return [];
  return value
    .split(split === 'lines' ? /\r?\n/ : /[,\r\n]/)
    .map((v) => v.trim())
    .filter(Boolean);
}

/** Validates a database URL input early, so a malformed one fails before any work. */
export function checkDatabaseUrl(url: string | undefined): void {
  if (url) resolveConnection(url);
}

/**
 * Runs an action body: a {@link UsageError} or {@link CheckFailedError} becomes one
 * `core.setFailed` line (exit code 2 or 1); anything else also shows its stack in the debug log.
 */
export async function runAction(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    runnerLog.failed(messageOf(err));
    if (!(err instanceof UsageError) && !(err instanceof CheckFailedError) && err instanceof Error && err.stack) core.debug(err.stack);
    process.exitCode = exitCodeOf(err);
  }
}

/** Sets several outputs at once; undefined values become empty strings. */
export function setOutputs(outputs: Record<string, string | number | boolean | undefined>): void {
  for (const [name, value] of Object.entries(outputs)) core.setOutput(name, value === undefined ? '' : String(value));
}

/** Inputs of the metrics, webhook and healthcheck reporting (dump, verify, drill, prune). */
export const reportingInputs = {
  'metrics-file': optional,
  'pushgateway-url': optional,
  'notify-url': optional,
  'notify-on': optional,
  'healthcheck-url': optional,
};

/**
 * Reporting options from {@link reportingInputs} plus what the inputs say of the run's scope
 * (location, service, environment, database, RTO budget), for `reported()` in src/notify.
 * The webhook and healthcheck URLs (whole and in parts: credentials, path, query), and a
 * Pushgateway password, are masked first.
 */
export function reportingFrom(inputs: { [K in keyof typeof reportingInputs]?: string } & { from?: string; to?: string; service?: string; environment?: string; database?: string; 'max-rto'?: string }): ReportingOptions & RunScope & { logger: Logger } {
  // Each URL whole and each part that may be a token (credentials, path, query).
  const secrets = [inputs['notify-url'], inputs['healthcheck-url']].flatMap((url) => (url ? urlSecrets(url) : []));
  try {
    if (inputs['pushgateway-url']) secrets.push(decodeURIComponent(new URL(inputs['pushgateway-url']).password), new URL(inputs['pushgateway-url']).password);
  } catch {
    // malformed: reported() refuses it with one line naming the input
  }
  for (const secret of secrets) {
    if (secret) {
      core.setSecret(secret);
      registerSecret(secret);
    }
  }
  return {
    metricsFile: inputs['metrics-file'],
    pushgatewayUrl: inputs['pushgateway-url'],
    notifyUrl: inputs['notify-url'] ?? process.env.PG_BACKUP_NOTIFY_URL,
    notifyOn: inputs['notify-on'],
    healthcheckUrl: inputs['healthcheck-url'] ?? process.env.PG_BACKUP_HEALTHCHECK_URL,
    optionNames: {
      metricsFile: 'input "metrics-file"',
      pushgatewayUrl: 'input "pushgateway-url"',
      notifyUrl: 'input "notify-url"',
      notifyOn: 'input "notify-on"',
      healthcheckUrl: 'input "healthcheck-url"',
    },
    from: inputs.from,
    to: inputs.to,
    service: inputs.service,
    environment: inputs.environment,
    database: inputs.database,
    maxRto: inputs['max-rto'],
    logger: actionLogger,
  };
}

/**
 * A boolean input: `true` / `false` (empty: undefined).
 * @throws UsageError naming the input for any other value.
 */
export function booleanInput(value: string | undefined, name: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (value !== 'true' && value !== 'false') throw new UsageError(`input "${name}" must be true or false (got ${JSON.stringify(value)})`);
  return value === 'true';
}
