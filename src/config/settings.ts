import path from 'node:path';
import { UsageError, redact, registerSecret } from '../errors.ts';
import { ENV_REFERENCE, type ConfigFile, type ConfigSection } from './file.ts';

// What each setting of pg-backup.yml fills, in the CLI (an option the user did not give) and in
// the actions (an input left empty), and the precedence both follow:
//   flag (or action input) > environment variable > the file's `environments.<env>` section >
//   the file's top level > the option's default.
// The effective environment (flag, else the file's `environment`) chooses the section.

/** Where one setting goes: the option (CLI `--flag`, action input of the same name) it fills. */
export interface SettingTarget {
  /** The CLI flag without `--`, which is also the action input's name. */
  flag: string;
  /** Only these commands (CLI command or action name); all that have the flag when absent. */
  commands?: readonly string[];
  /** Not applied when the user gave one of these flags (they choose another mode, e.g. `verify --wal-prefix`). */
  unless?: readonly string[];
  /** `databases` → `--database`: only when the file names exactly one database. */
  single?: boolean;
}

/** One setting of the file: its key, where it sits in a section, and what it fills. */
export interface SettingSpec {
  /** Dotted key as `config check` shows it, e.g. `retention.keep-daily`; `location` is the URL. */
  key: string;
  /** Path inside a section (`['location', 'url']`). */
  path: readonly string[];
  targets: readonly SettingTarget[];
  /** Environment variables that win over the file for this setting (as they win over its default). */
  env?: readonly string[];
  /** A credential: its value is registered for redaction and never shown. */
  secret?: boolean;
  /** A file path: resolved against the configuration file's directory. */
  filePath?: boolean;
  /** Read from the top level only (not from an environment's section). */
  topOnly?: boolean;
}

/** Every setting of pg-backup.yml, in the order `config check` shows them. */
export const SETTINGS: readonly SettingSpec[] = [
  { key: 'location', path: ['location', 'url'], targets: [{ flag: 'from', unless: ['wal-prefix', 'pgbackrest-stanza'] }, { flag: 'to', commands: ['dump', 'lifecycle'] }] },
  { key: 'location.endpoint', path: ['location', 'endpoint'], targets: [{ flag: 'endpoint' }], env: ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'] },
  { key: 'location.region', path: ['location', 'region'], targets: [{ flag: 'region' }], env: ['AWS_REGION', 'AWS_DEFAULT_REGION'] },
  { key: 'service', path: ['service'], targets: [{ flag: 'service' }] },
  { key: 'environment', path: ['environment'], targets: [{ flag: 'environment' }], topOnly: true },
  { key: 'databases', path: ['databases'], targets: [{ flag: 'databases', commands: ['dump'] }, { flag: 'database', single: true }] },
  { key: 'profile', path: ['profile'], targets: [{ flag: 'profile', commands: ['dump', 'restore', 'drill'] }] },
  { key: 'retention.keep-last', path: ['retention', 'keep-last'], targets: [{ flag: 'keep-last', commands: ['prune'] }] },
  { key: 'retention.keep-daily', path: ['retention', 'keep-daily'], targets: [{ flag: 'keep-daily', commands: ['prune'] }] },
  { key: 'retention.keep-weekly', path: ['retention', 'keep-weekly'], targets: [{ flag: 'keep-weekly', commands: ['prune'] }] },
  { key: 'retention.keep-monthly', path: ['retention', 'keep-monthly'], targets: [{ flag: 'keep-monthly', commands: ['prune'] }] },
  { key: 'retention.max-age', path: ['retention', 'max-age'], targets: [{ flag: 'max-age', commands: ['prune', 'lifecycle'] }] },
  { key: 'retention.keep-proven', path: ['retention', 'keep-proven'], targets: [{ flag: 'keep-proven', commands: ['prune'] }] },
  { key: 'retention.incomplete-grace', path: ['retention', 'incomplete-grace'], targets: [{ flag: 'incomplete-grace', commands: ['prune'] }] },
  { key: 'retention.keep-safety-dumps', path: ['retention', 'keep-safety-dumps'], targets: [{ flag: 'keep-safety-dumps', commands: ['prune'] }] },
  { key: 'notify.url', path: ['notify', 'url'], targets: [{ flag: 'notify-url' }], env: ['PG_BACKUP_NOTIFY_URL'], secret: true },
  { key: 'notify.on', path: ['notify', 'on'], targets: [{ flag: 'notify-on' }] },
  { key: 'notify.healthcheck-url', path: ['notify', 'healthcheck-url'], targets: [{ flag: 'healthcheck-url' }], env: ['PG_BACKUP_HEALTHCHECK_URL'], secret: true },
  { key: 'notify.pushgateway-url', path: ['notify', 'pushgateway-url'], targets: [{ flag: 'pushgateway-url' }] },
  { key: 'notify.timeout', path: ['notify', 'timeout'], targets: [{ flag: 'notify-timeout' }] },
  { key: 'drill.max-rto', path: ['drill', 'max-rto'], targets: [{ flag: 'max-rto', commands: ['drill'] }, { flag: 'rto-budget', commands: ['status'] }] },
  { key: 'drill.max-rpo', path: ['drill', 'max-rpo'], targets: [{ flag: 'max-rpo', commands: ['drill'] }] },
  { key: 'drill.smoke-sql', path: ['drill', 'smoke-sql'], targets: [{ flag: 'smoke-sql', commands: ['drill'] }], filePath: true },
  { key: 'drill.jobs', path: ['drill', 'jobs'], targets: [{ flag: 'jobs', commands: ['drill'] }] },
];

/** A setting's value as the file gives it, before `${VAR}` expansion. */
export interface FileValue {
  spec: SettingSpec;
  /** The value as text: numbers as digits, lists comma-separated. */
  raw: string;
  /** `top level` or `environments.<name>`. */
  section: string;
  /** Key path in the file, for positions. */
  keys: string[];
  line: number;
  col: number;
}

/** Reads `keys` from a section (location given as a string already became `{ url }`). */
function valueIn(section: ConfigSection | undefined, keys: readonly string[]): unknown {
  let v: unknown = section;
  for (const k of keys) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/**
 * The file's value of each setting for `environment`: from `environments.<environment>` when
 * that section has it, else from the top level. A section's `location` replaces the top level's
 * whole (url, endpoint and region together: another environment may live with another provider).
 */
export function fileValues(config: ConfigFile, environment: string | undefined): Map<string, FileValue> {
  const { content } = config;
  const envSection = environment ? content.environments?.[environment] : undefined;
  const out = new Map<string, FileValue>();
  for (const spec of SETTINGS) {
    const fromEnv = !spec.topOnly && envSection && (spec.path[0] === 'location' ? envSection.location !== undefined : valueIn(envSection, spec.path) !== undefined);
    const keys = fromEnv ? ['environments', environment!, ...spec.path] : [...spec.path];
    const value = fromEnv ? valueIn(envSection, spec.path) : valueIn(content as ConfigSection, spec.path);
    if (value === undefined) continue;
    const [line, col] = config.position(keys);
    out.set(spec.key, { spec, raw: Array.isArray(value) ? value.join(',') : String(value), section: fromEnv ? `environments.${environment}` : 'top level', keys, line, col });
  }
  return out;
}

/**
 * A file value with every `${NAME}` replaced by the environment variable NAME; a file path made
 * absolute against the file's directory. The value of a secret setting is registered for
 * redaction ({@link registerSecret}).
 * @throws UsageError naming the file, line and variable when a referenced variable is unset or empty.
 */
export function expandValue(config: ConfigFile, value: FileValue, env: NodeJS.ProcessEnv = process.env): string {
  const expanded = value.raw.replace(ENV_REFERENCE, (_, name: string) => {
    const v = env[name];
    if (v === undefined || v === '') {
      throw new UsageError(`${config.shown}:${value.line}:${value.col}: ${value.spec.key} refers to \${${name}}, which is not set: set the environment variable ${name}, or remove the key`);
    }
    return v;
  });
  if (value.spec.secret) registerSecret(expanded);
  return value.spec.filePath ? path.resolve(path.dirname(config.file), expanded) : expanded;
}

/** What a command or action offers to the file: its name, its flags (inputs), and which of them the user set. */
export interface ConfigConsumer {
  /** CLI command (`prune`) or action (`prune`). */
  command: string;
  /** Flags (inputs) the command has, without `--`. */
  has: (flag: string) => boolean;
  /** True when the user gave this flag (or input), or an environment variable set it. */
  given: (flag: string) => boolean;
  /** The environment given on the command line (or input), if any: it chooses the file's section. */
  environment?: string;
}

/** One value the file gives a command: fill `flag` with `value` (text, as on a command line). */
export interface ConfigFill {
  flag: string;
  value: string;
  from: FileValue;
}

/**
 * The values the file gives one command: for each setting that targets a flag the command has
 * and the user did not give (nor an environment variable of the setting set), the file's value
 * for the effective environment, expanded.
 * @throws UsageError for an unset `${VAR}` in a value the command uses.
 */
export function configFills(config: ConfigFile, consumer: ConfigConsumer, env: NodeJS.ProcessEnv = process.env): ConfigFill[] {
  const environment = consumer.environment || config.content.environment;
  const values = fileValues(config, environment);
  const fills: ConfigFill[] = [];
  for (const spec of SETTINGS) {
    const value = values.get(spec.key);
    if (!value) continue;
    if (spec.env?.some((name) => env[name])) continue;
    for (const target of spec.targets) {
      if (target.commands && !target.commands.includes(consumer.command)) continue;
      if (!consumer.has(target.flag) || consumer.given(target.flag)) continue;
      if (target.unless?.some((flag) => consumer.has(flag) && consumer.given(flag))) continue;
      if (target.single && value.raw.includes(',')) continue;
      fills.push({ flag: target.flag, value: expandValue(config, value, env), from: value });
    }
  }
  return fills;
}

/** Where an effective setting comes from. */
export type SettingSource = 'flag' | 'env' | 'file' | 'default' | 'unset';

/** One row of `pg-backup config check`. */
export interface EffectiveSetting {
  key: string;
  /** The value as shown: secrets redacted (`***`). Undefined when not set. */
  value: string | undefined;
  source: SettingSource;
  /** `flag --environment`, `env AWS_REGION`, `pg-backup.yml:3:11 (environments.production)`, the default's description. */
  origin: string;
}

/**
 * The effective value of every setting, as `config check` shows it, with its source: the flag
 * (`environment` only: `config check` takes `--environment`), an environment variable of the
 * setting, the file (section and position), else `defaults` (key → default as text, from the
 * commands' options).
 * @throws UsageError for an unset `${VAR}` (a run using that setting would fail the same way).
 */
export function effectiveSettings(config: ConfigFile | undefined, options: { environment?: string; defaults: ReadonlyMap<string, string> }, env: NodeJS.ProcessEnv = process.env): EffectiveSetting[] {
  const environment = options.environment || config?.content.environment;
  const values = config ? fileValues(config, environment) : new Map<string, FileValue>();
  return SETTINGS.map((spec): EffectiveSetting => {
    if (spec.key === 'environment' && options.environment) return { key: spec.key, value: options.environment, source: 'flag', origin: 'flag --environment' };
    const envName = spec.env?.find((name) => env[name]);
    if (envName) {
      const v = env[envName]!;
      if (spec.secret) registerSecret(v);
      return { key: spec.key, value: redact(v), source: 'env', origin: `env ${envName}` };
    }
    const value = values.get(spec.key);
    if (value && config) {
      const expanded = expandValue(config, value, env);
      const refs = [...value.raw.matchAll(ENV_REFERENCE)].map((m) => `\${${m[1]}}`);
      return { key: spec.key, value: redact(expanded), source: 'file', origin: `${config.shown}:${value.line}:${value.col} (${value.section}${refs.length ? `, ${refs.join(' ')}` : ''})` };
    }
    const fallback = options.defaults.get(spec.key);
    if (fallback !== undefined) return { key: spec.key, value: fallback, source: 'default', origin: 'default' };
    return { key: spec.key, value: undefined, source: 'unset', origin: '' };
  });
}
