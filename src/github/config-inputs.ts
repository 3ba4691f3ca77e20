import * as core from '@actions/core';
import { CONFIG_ENV, findConfigFile, loadConfigFile } from '../config/file.ts';
import { configFills } from '../config/settings.ts';

/**
 * Fills the inputs left empty from the settings file the `config` input names (a path in the
 * workspace, relative to `$GITHUB_WORKSPACE`), else `$PG_BACKUP_CONFIG`; without either, nothing
 * (an action never picks up a pg-backup.yml it was not told about). Inputs given win over the
 * file, and so do the environment variables of a setting (`PG_BACKUP_NOTIFY_URL`, `AWS_REGION` …);
 * the `environment` input (else the file's `environment`) chooses the file's section. `raw` maps
 * input names to their text (empty: not given) and is changed in place. Secret values (webhook and
 * healthcheck URLs) are masked.
 * @param command the action: `dump`, `verify`, `drill` or `prune` (which settings apply).
 * @throws UsageError (one line, file:line:column) for a missing or invalid file, or an unset `${VAR}` a filled input uses.
 */
export function fillInputsFromConfig(raw: Record<string, string>, command: string): void {
  const named = core.getInput('config');
  if (!named.trim() && !process.env[CONFIG_ENV]?.trim()) return;
  const workspace = process.env.GITHUB_WORKSPACE || process.cwd();
  const file = findConfigFile(named, workspace);
  if (!file) return;
  const config = loadConfigFile(file, workspace);
  const fills = configFills(config, {
    command,
    has: (flag) => flag in raw,
    given: (flag) => (raw[flag] ?? '').trim() !== '',
    environment: raw.environment?.trim() || undefined,
  });
  for (const fill of fills) {
    if (fill.from.spec.secret) core.setSecret(fill.value);
    raw[fill.flag] = fill.value;
  }
  core.info(`settings from ${config.shown}: ${fills.length ? fills.map((f) => f.flag).join(', ') : 'none (every input it sets was given)'}`);
}
