import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Node } from 'yaml';
import { z } from 'zod';
import { parseDuration } from '../duration.ts';
import { UsageError } from '../errors.ts';

// The configuration file, pg-backup.yml: its schema (zod), how it is found and read, and its
// errors, each one line naming the file, line and column and what to do. What the settings mean
// for each command, and their precedence, is settings.ts.

// Where the file is (its name, its variable, the search): find.ts, which loads neither yaml nor
// zod, so that a command run without a file loads neither.
export { CONFIG_ENV, CONFIG_FILE_NAME, findConfigFile } from './find.ts';

/** `${NAME}` in a string value: the value of the environment variable NAME when the setting is used. */
export const ENV_REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** A URL whose user-info holds a literal password (`scheme://user:password@`), not a `${VAR}` reference. */
function literalPassword(url: string): boolean {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)@/i.exec(url);
  if (!m) return false;
  const info = m[1]!;
  const colon = info.indexOf(':');
  return colon >= 0 && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(info.slice(colon + 1));
}

const hasReference = (s: string) => /\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(s);

const text = (what: string) => z.string({ error: `must be ${what}` }).trim().min(1, { error: `must be ${what}, not empty` });

/** A duration (`90s`, `30h`, `7d`, `1h30m`), or a `${VAR}` reference checked when used. */
const duration = text('a duration such as 30m, 30h or 7d').refine(
  (s) => {
    if (hasReference(s)) return true;
    try {
      parseDuration(s, '');
      return true;
    } catch {
      return false;
    }
  },
  { error: 'must be a duration: a number with a unit, e.g. 90s, 30m, 30h, 7d or 1h30m' },
);

const count = z.number({ error: 'must be a whole number, e.g. 7' }).int({ error: 'must be a whole number, e.g. 7' }).min(0, { error: 'must be 0 or more' });

/** A URL without a literal password: a password goes in an environment variable, referenced as `${NAME}`. */
const url = (what: string, schemes?: RegExp) =>
  text(what)
    .refine((s) => !literalPassword(s), { error: 'holds a literal password: the file is meant to be committed; put the password in an environment variable and write ${NAME} in its place' })
    .refine((s) => !schemes || hasReference(s) || schemes.test(s), { error: `must be ${what}` });

/** A credential-bearing URL (webhook, healthcheck ping URL): only as a `${VAR}` reference. */
const secretUrl = text('a ${NAME} reference to an environment variable holding the URL').refine(hasReference, {
  error: 'is a credential (whoever knows it can post or ping): keep it out of the file; write ${NAME} and set the environment variable NAME (e.g. a repository secret)',
});

const location = z.preprocess(
  (v) => (typeof v === 'string' ? { url: v } : v),
  z.strictObject(
    {
      url: url('s3://BUCKET/PREFIX or file:///DIR', /^(s3|file):\/\//),
      endpoint: url('an http(s):// S3 endpoint URL', /^https?:\/\//).optional(),
      region: text('a region name, e.g. auto or eu-west-1').optional(),
    },
    { error: 'must be s3://BUCKET/PREFIX, file:///DIR, or a mapping with url (and endpoint, region)' },
  ),
);

const section = {
  location: location.optional(),
  service: text('a service name').optional(),
  databases: z
    .preprocess((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v), z.array(text('a database name'), { error: 'must be a list of database names, e.g. [app, billing]' }).min(1, { error: 'must name at least one database' }))
    .optional(),
  profile: text('a profile name').optional(),
  retention: z
    .strictObject({
      'keep-last': count.optional(),
      'keep-daily': count.optional(),
      'keep-weekly': count.optional(),
      'keep-monthly': count.optional(),
      'max-age': duration.optional(),
      'keep-proven': count.optional(),
      'incomplete-grace': duration.optional(),
      'keep-safety-dumps': duration.optional(),
    }, { error: 'must be a mapping of keep-last, keep-daily, keep-weekly, keep-monthly, max-age, keep-proven, incomplete-grace, keep-safety-dumps' })
    .optional(),
  notify: z
    .strictObject({
      url: secretUrl.optional(),
      on: z.enum(['failure', 'always'], { error: 'must be failure or always' }).optional(),
      'healthcheck-url': secretUrl.optional(),
      'pushgateway-url': url('an http(s):// Pushgateway URL', /^https?:\/\//).optional(),
      timeout: duration.optional(),
    }, { error: 'must be a mapping of url, on, healthcheck-url, pushgateway-url, timeout' })
    .optional(),
  drill: z
    .strictObject({
      'max-rto': duration.optional(),
      'max-rpo': duration.optional(),
      'smoke-sql': text('a path to a SQL file').optional(),
      jobs: z.number({ error: 'must be a whole number of 1 or more' }).int({ error: 'must be a whole number of 1 or more' }).min(1, { error: 'must be 1 or more' }).optional(),
    }, { error: 'must be a mapping of max-rto, max-rpo, smoke-sql, jobs' })
    .optional(),
};

/** One section of the file: the top level, or one environment's overrides under `environments:`. */
export const ConfigSectionSchema = z.strictObject(section, { error: 'must be a mapping of settings' });

/**
 * The whole file: a section, plus `environment` (the default environment) and `environments`
 * (per-environment sections, chosen by the effective environment). Unknown keys are errors.
 */
export const ConfigFileSchema = z.strictObject(
  {
    ...section,
    environment: text('an environment name').optional(),
    environments: z.record(z.string(), ConfigSectionSchema, { error: 'must be a mapping of environment names to settings' }).optional(),
  },
  { error: 'must be a mapping of settings (location, service, environment, databases, retention, notify, profile, drill, environments)' },
);

/** A section's settings as validated. */
export type ConfigSection = z.infer<typeof ConfigSectionSchema>;
/** The whole file as validated. */
export type ConfigFileContent = z.infer<typeof ConfigFileSchema>;

/** A configuration file, read and validated. */
export interface ConfigFile {
  /** Absolute path. */
  file: string;
  /** The path as messages show it (relative to the working directory, or the action's workspace, when under it). */
  shown: string;
  content: ConfigFileContent;
  /** `[line, column]` (1-based) of the value at a key path, e.g. `['retention', 'keep-daily']`; the nearest enclosing node when the path goes deeper than the file. */
  position(keys: readonly (string | number)[]): [number, number];
}

/** How a file path is shown: relative to `base` (the working directory, or an action's workspace) when inside it. */
function shownPath(file: string, base: string): string {
  const rel = path.relative(base, file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The known keys of the mapping at `keys` in the schema (for "did you mean"). */
function knownKeys(keys: readonly (string | number)[]): string[] {
  const top = Object.keys(ConfigFileSchema.shape);
  const inSection = (k: string) => ({ retention: Object.keys(section.retention.unwrap().shape), notify: Object.keys(section.notify.unwrap().shape), drill: Object.keys(section.drill.unwrap().shape), location: ['url', 'endpoint', 'region'] })[k];
  if (keys.length === 0) return top;
  if (keys[0] === 'environments') {
    if (keys.length === 2) return Object.keys(section);
    return inSection(String(keys[2])) ?? [];
  }
  return inSection(String(keys[0])) ?? [];
}

/** "did you mean" for an unknown key: a known key within 2 edits, or equal but for case and `_`. */
function suggestion(key: string, known: string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/_/g, '-');
  return known.find((k) => norm(k) === norm(key)) ?? known.map((k) => [k, distance(norm(key), k)] as const).filter(([, d]) => d <= 2).sort((a, b) => a[1] - b[1])[0]?.[0];
}

/** `a.b.c` for a key path (`(top level)` when empty). */
function dotted(keys: readonly (string | number)[]): string {
  return keys.length ? keys.join('.') : '(top level)';
}

type YamlLibrary = typeof import('yaml');
let yamlLibrary: YamlLibrary | undefined;

/**
 * The `yaml` library, loaded when a file is read (an action run without a configuration file
 * does not load it). In the bundles esbuild turns this `require` into the initialisation of the
 * bundled module.
 */
function yaml(): YamlLibrary {
  yamlLibrary ??= (typeof require === 'function' ? require('yaml') : createRequire(import.meta.url)('yaml')) as YamlLibrary;
  return yamlLibrary;
}

/**
 * Reads, parses (YAML 1.2, duplicate keys refused) and validates a configuration file. Messages
 * show its path relative to `base` when it lies inside.
 * @throws UsageError, one line: `FILE:LINE:COL: what is wrong: what to do` — a file that cannot
 * be read, bad YAML, an unknown key (with "did you mean"), a wrong type or value, a literal
 * credential.
 */
export function loadConfigFile(file: string, base = process.cwd()): ConfigFile {
  const shown = shownPath(file, base);
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read configuration file ${shown}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}: check the path and its permissions`);
  }
  const { LineCounter, isMap, isScalar, isSeq, parseDocument } = yaml();
  const lines = new LineCounter();
  const doc = parseDocument(source, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): [number, number] => {
    const p = lines.linePos(offset);
    return [p.line, p.col];
  };
  const [yamlError] = doc.errors;
  if (yamlError) {
    const [line, col] = at(yamlError.pos[0]);
    const what = yamlError.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new UsageError(`${shown}:${line}:${col}: not valid YAML: ${what}: fix the file's syntax`);
  }

  const nodeAt = (keys: readonly (string | number)[]): { node: Node | null; keyNode?: Node } => {
    let node: Node | null = doc.contents as Node | null;
    let keyNode: Node | undefined;
    for (const k of keys) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(k));
        if (!pair) break;
        keyNode = pair.key as Node;
        node = (pair.value as Node | null) ?? keyNode;
      } else if (isSeq(node) && typeof k === 'number' && node.items[k]) {
        node = node.items[k] as Node;
        keyNode = undefined;
      } else break;
    }
    return { node, keyNode };
  };
  const position = (keys: readonly (string | number)[]): [number, number] => {
    const { node, keyNode } = nodeAt(keys);
    const range = node?.range ?? keyNode?.range;
    return range ? at(range[0]) : [1, 1];
  };

  const raw = doc.contents === null ? {} : doc.toJS();
  const parsed = ConfigFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const keys = issue.path.filter((k): k is string | number => typeof k !== 'symbol');
    if (issue.code === 'unrecognized_keys') {
      const key = issue.keys[0]!;
      const parent = nodeAt(keys).node;
      const pair = isMap(parent) ? parent.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === key) : undefined;
      const [line, col] = pair?.key && (pair.key as Node).range ? at((pair.key as Node).range![0]) : position(keys);
      const known = knownKeys(keys);
      const hint = suggestion(key, known);
      const where = keys.length ? ` in ${dotted(keys)}` : '';
      throw new UsageError(`${shown}:${line}:${col}: unknown key ${JSON.stringify(key)}${where}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}: fix or remove it (known here: ${known.join(', ')})`);
    }
    const [line, col] = position(keys);
    const got = nodeAt(keys).node;
    // A URL may be a credential: never echoed.
    const sensitive = keys.some((k) => /url|endpoint|location/.test(String(k)));
    const value = isScalar(got) && !sensitive ? ` (got ${JSON.stringify(got.value)})` : '';
    const name = keys[0] === 'location' && keys[1] === 'url' && isScalar(nodeAt(['location']).node) ? 'location' : dotted(keys);
    const todo = issue.message.includes('${NAME}') ? '' : ': fix the value';
    throw new UsageError(`${shown}:${line}:${col}: ${name} ${issue.message}${value}${todo}`);
  }
  return { file, shown, content: parsed.data, position };
}
