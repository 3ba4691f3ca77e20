import { existsSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors.ts';

// Where the configuration file is: its default name, the variable that names it, and the search.
// Apart from file.ts (the schema and the reader, which load zod and yaml), so that every command
// can look for a file and load those only when there is one.

/** The file name looked for in the working directory when neither `--config` nor `PG_BACKUP_CONFIG` names one. */
export const CONFIG_FILE_NAME = 'pg-backup.yml';

/** The variable naming the configuration file (as `--config` does; the flag wins). */
export const CONFIG_ENV = 'PG_BACKUP_CONFIG';

/**
 * Finds the configuration file: `explicit` (the `--config` flag, or an action's `config` input),
 * else `$PG_BACKUP_CONFIG`, else `pg-backup.yml` in `dir` (the working directory) if it exists.
 * Relative paths are taken from `dir`. Returns undefined when none is named and none exists.
 * @throws UsageError when a named file does not exist.
 */
export function findConfigFile(explicit: string | undefined, dir = process.cwd(), env: NodeJS.ProcessEnv = process.env): string | undefined {
  const named = explicit?.trim() || env[CONFIG_ENV]?.trim();
  if (named) {
    const file = path.resolve(dir, named);
    if (!readable(file)) throw new UsageError(`configuration file ${named} not found or not readable${explicit?.trim() ? '' : ` (named by $${CONFIG_ENV})`}: check the path, or remove it to use flags only`);
    return file;
  }
  const file = path.join(dir, CONFIG_FILE_NAME);
  return readable(file) ? file : undefined;
}

/**
 * Whether `file` exists and this process may look at it. Under Node's permission model
 * (`node --permission` without `--allow-fs-read` for that path) `existsSync` throws
 * ERR_ACCESS_DENIED: a default file the process may not read is one it does not have.
 */
function readable(file: string): boolean {
  try {
    return existsSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_ACCESS_DENIED') return false;
    throw err;
  }
}
