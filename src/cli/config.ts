import { Argument, Option, type Command } from 'commander';
import { UsageError } from '../errors.ts';
import { CONFIG_ENV, CONFIG_FILE_NAME, findConfigFile } from '../config/find.ts';
import type { ConfigFile } from '../config/file.ts';
import type { EffectiveSetting, SettingSpec } from '../config/settings.ts';
import { printJson } from './common.ts';

// The configuration file in the CLI: `--config` on every command that reads settings, one
// `preSubcommand` hook that fills the options the user did not give from pg-backup.yml (before
// commander parses the command line, so a flag still wins and an environment variable set with
// commander's `.env()` still wins over the file, as commander ranks the 'config' source), and
// `pg-backup config check`. The file's reader and schema (yaml, zod) are loaded only when there
// is a file to read (or for `config check`).

/** Commands that take no settings from the file. */
const NOT_CONFIGURED = new Set(['demo', 'config', 'help']);

/**
 * The value of `--name VALUE` / `--name=VALUE` in raw arguments (the last one), before commander
 * parses them; `true` for a flag given without a value of its own (`--name` last, or before
 * another option). Stops at `--`.
 */
export function scanFlag(args: readonly string[], name: string): string | true | undefined {
  let found: string | true | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') break;
    if (arg === `--${name}`) {
      const next = args[i + 1];
      if (next === undefined || next.startsWith('-')) found = true;
      else {
        found = next;
        i++;
      }
    } else if (arg.startsWith(`--${name}=`)) found = arg.slice(name.length + 3);
  }
  return found;
}

/** The option of `command` whose long flag is `--flag`. */
function optionOf(command: Command, flag: string) {
  return command.options.find((o) => o.long === `--${flag}`);
}

/**
 * Fills the options of `command` that `args` (its raw command line) does not give from the
 * configuration file (`--config`, `$PG_BACKUP_CONFIG`, or ./pg-backup.yml), with commander's
 * 'config' source: commander then applies the command line (which wins) and the options'
 * environment variables (which win over 'config'). Nothing happens without a file, or for
 * `--help`.
 * @throws UsageError (one line, file:line:column) for an invalid file or an unset `${VAR}` the command uses.
 */
export async function applyConfigFile(command: Command, args: readonly string[]): Promise<ConfigFile | undefined> {
  if (NOT_CONFIGURED.has(command.name()) || args.includes('--help') || args.includes('-h')) return undefined;
  const named = scanFlag(args, 'config');
  if (named === true) return undefined; // commander reports the missing value
  const file = findConfigFile(named);
  if (!file) return undefined;
  const [{ loadConfigFile }, { configFills }] = await Promise.all([import('../config/file.ts'), import('../config/settings.ts')]);
  const config = loadConfigFile(file);
  const environment = scanFlag(args, 'environment');
  const fills = configFills(config, {
    command: command.name(),
    has: (flag) => optionOf(command, flag) !== undefined,
    given: (flag) => {
      const option = optionOf(command, flag);
      return scanFlag(args, flag) !== undefined || Boolean(option?.envVar && process.env[option.envVar]);
    },
    environment: typeof environment === 'string' ? environment : undefined,
  });
  for (const fill of fills) {
    const option = optionOf(command, fill.flag)!;
    let value: unknown = fill.value;
    if (option.parseArg) {
      try {
        value = option.parseArg(fill.value, option.defaultValue);
      } catch (err) {
        throw new UsageError(`${config.shown}:${fill.from.line}:${fill.from.col}: ${fill.from.spec.key}: ${(err as Error).message}: fix the value`);
      }
    }
    command.setOptionValueWithSource(option.attributeName(), value, 'config');
  }
  return config;
}

/**
 * The configuration file's place in the program: `--config FILE` on every command that takes
 * settings, the hook that applies the file before each command parses its options, and the
 * `config` command. Call once, after every command was added.
 */
export function installConfigFile(program: Command): void {
  for (const command of program.commands) {
    if (NOT_CONFIGURED.has(command.name())) continue;
    command.addOption(new Option('--config <file>', `settings file (default: $${CONFIG_ENV}, else ./${CONFIG_FILE_NAME} if present); flags and environment variables win over it`));
  }
  addConfigCommand(program);
  program.hook('preSubcommand', async (parent, sub) => {
    // parent.args: the subcommand's name, then its raw arguments, not parsed yet.
    await applyConfigFile(sub, parent.args.slice(1));
  });
}

/** Each setting's default as the commands' options declare it (e.g. `service` → `default`). */
function defaultsOf(program: Command, SETTINGS: readonly SettingSpec[]): Map<string, string> {
  const defaults = new Map<string, string>();
  for (const spec of SETTINGS) {
    for (const target of spec.targets) {
      for (const command of program.commands) {
        if (target.commands && !target.commands.includes(command.name())) continue;
        const option = optionOf(command, target.flag);
        if (option && option.defaultValue !== undefined && !defaults.has(spec.key)) defaults.set(spec.key, option.defaultValueDescription ?? (Array.isArray(option.defaultValue) ? option.defaultValue.join(',') : String(option.defaultValue)));
      }
    }
  }
  return defaults;
}

/** `config check` as text: a header line, then one aligned line per setting. */
function formatSettings(header: string[], rows: EffectiveSetting[]): string {
  const value = (r: EffectiveSetting) => r.value ?? '-';
  const w1 = Math.max(...rows.map((r) => r.key.length));
  const w2 = Math.min(60, Math.max(...rows.map((r) => value(r).length)));
  const w3 = Math.max(...rows.map((r) => r.source.length));
  return [...header, ...rows.map((r) => `${r.key.padEnd(w1)}  ${value(r).padEnd(w2)}  ${r.source.padEnd(w3)}  ${r.origin}`.trimEnd()), ''].join('\n');
}

/** Adds `pg-backup config check`. */
function addConfigCommand(program: Command): void {
  program
    .command('config')
    .description(`check the settings file (${CONFIG_FILE_NAME}): print every effective setting with its source (flag, env, file, default), secrets redacted; exit 2 when the file is invalid or a \${VAR} it uses is not set`)
    .addArgument(new Argument('<action>', 'check').choices(['check']))
    .option('--config <file>', `settings file (default: $${CONFIG_ENV}, else ./${CONFIG_FILE_NAME} if present)`)
    .option('--environment <name>', 'the environment whose section of environments: applies (default: the file\'s environment)')
    .option('--json', 'print the settings as JSON on stdout')
    .action(async (_action: string, flags: { config?: string; environment?: string; json?: boolean }) => {
      const file = findConfigFile(flags.config);
      const [{ loadConfigFile }, { SETTINGS, effectiveSettings }] = await Promise.all([import('../config/file.ts'), import('../config/settings.ts')]);
      const config = file ? loadConfigFile(file) : undefined;
      const environment = flags.environment || config?.content.environment;
      const sections = config?.content.environments ?? {};
      const section = environment && sections[environment] ? `environments.${environment}` : undefined;
      const settings = effectiveSettings(config, { environment: flags.environment, defaults: defaultsOf(program, SETTINGS) });
      if (flags.json) {
        printJson({ file: config?.shown ?? null, environment: environment ?? null, section: section ?? null, settings });
        return;
      }
      const header = config
        ? [`configuration file: ${config.shown}`, `environment: ${environment ?? '(none)'}; ${section ? `${section} overrides the top level` : Object.keys(sections).length ? `no section for it in environments (${Object.keys(sections).join(', ')})` : 'no environments: section'}`]
        : [`no configuration file (--config, $${CONFIG_ENV}, ./${CONFIG_FILE_NAME}): flags, environment variables and defaults only`];
      process.stdout.write(formatSettings([...header, ''], settings));
    });
}
