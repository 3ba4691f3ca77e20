// Where a workflow reads the settings the README tells users to create in a GitHub
// environment, checked on the token tree of GitHub's own parser (workflow-parser.ts).
//
// GitHub's rules for reusable workflows: a job that calls one (`uses:`) has no environment, so
// an environment-scoped `${{ vars.X }}` or `${{ secrets.X }}` written there is empty; a job of
// the called workflow that declares `environment:` sees that environment's variables, and its
// secrets only when the caller says `secrets: inherit` (actions/runner#4453).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { root } from '../helpers.ts';
import { parseWorkflowFile, TokenType, type TokenJson } from './workflow-parser.ts';
import type { WorkflowSource } from './workflow-files.ts';

/** Names of environment-scoped settings: secrets and configuration variables. */
export interface EnvironmentSettings {
  secrets: string[];
  vars: string[];
}

/**
 * The settings the README's quick start tells users to create in an environment: the
 * backticked names in its step 1, secrets before the word "variables", variables after it.
 * @throws Error when step 1 cannot be found.
 */
export function readmeEnvironmentSettings(): EnvironmentSettings {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const step = /\n1\. In your repository, create an environment([\s\S]*?)\n2\. /.exec(readme);
  if (!step) throw new Error('README.md: the quick start\'s step 1 ("1. In your repository, create an environment") is missing');
  const [secretsPart, varsPart = ''] = step[1]!.split(/\bvariables\b/);
  const names = (text: string) => [...text.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!);
  return { secrets: names(secretsPart!), vars: names(varsPart) };
}

type Mapping = { type: number; map?: { Key: TokenJson; Value: TokenJson }[] };

function entries(token: TokenJson | undefined): [string, TokenJson][] {
  const t = token as Mapping | undefined;
  return t && typeof t === 'object' && t.type === TokenType.Mapping ? (t.map ?? []).map((e) => [String(e.Key), e.Value]) : [];
}

function get(token: TokenJson | undefined, key: string): TokenJson | undefined {
  return entries(token).find(([k]) => k === key)?.[1];
}

/** Every expression (the text inside `${{ }}`) anywhere under `token`. */
function expressions(token: TokenJson | undefined): string[] {
  if (!token || typeof token !== 'object') return [];
  const t = token as { type: number; expr?: string; map?: { Key: TokenJson; Value: TokenJson }[]; seq?: TokenJson[] };
  if (t.type === TokenType.BasicExpression || t.type === TokenType.InsertExpression) return [t.expr ?? ''];
  return [...(t.map ?? []).flatMap((e) => [...expressions(e.Key), ...expressions(e.Value)]), ...(t.seq ?? []).flatMap(expressions)];
}

/** The `vars.X` / `secrets.X` names an expression reads (also `vars['X']`). */
function reads(expression: string, context: 'vars' | 'secrets'): string[] {
  const re = new RegExp(`\\b${context}(?:\\.([A-Za-z_][A-Za-z0-9_]*)|\\[\\s*'([^']+)'\\s*\\])`, 'g');
  return [...expression.matchAll(re)].map((m) => (m[1] ?? m[2])!);
}

/** One job as the checks need it. */
interface JobFacts {
  id: string;
  /** The reusable workflow it calls, or undefined for a job with steps. */
  calls?: string;
  inheritsSecrets: boolean;
  hasEnvironment: boolean;
  vars: Set<string>;
  secrets: Set<string>;
}

/** Parses `source` with GitHub's parser and describes its jobs. @throws Error listing the parser's errors. */
export async function jobFacts(source: WorkflowSource): Promise<JobFacts[]> {
  const parsed = await parseWorkflowFile(source.file, source.text);
  if (parsed.errors.length > 0) throw new Error(`${source.file}: ${parsed.errors.join('; ')}`);
  return entries(get(parsed.tokens, 'jobs')).map(([id, job]) => {
    const all = expressions(job);
    const uses = get(job, 'uses');
    return {
      id,
      calls: typeof uses === 'string' ? uses : undefined,
      inheritsSecrets: get(job, 'secrets') === 'inherit',
      hasEnvironment: get(job, 'environment') !== undefined,
      vars: new Set(all.flatMap((e) => reads(e, 'vars'))),
      secrets: new Set(all.flatMap((e) => reads(e, 'secrets'))),
    };
  });
}

/** This repository's reusable workflow that `ref` names (`./.github/workflows/x.yml` or `pg-backup-actions/pg-backup-actions/.github/workflows/x.yml@…`), if any. */
export function ownReusableWorkflow(ref: string): string | undefined {
  const m = /^(?:\.\/|pg-backup-actions\/pg-backup-actions\/)(\.github\/workflows\/[\w.-]+\.ya?ml)(?:@.+)?$/.exec(ref);
  return m?.[1];
}

/**
 * What a workflow gets wrong about environment-scoped settings, one line each (empty: nothing):
 * a calling job that reads one (empty there); a job with steps and no `environment:` that reads
 * one; a caller of our reusable workflow whose environment jobs read an environment secret,
 * without `secrets: inherit`. Also returns which settings end up read where they exist (the
 * workflow's own environment jobs, and the environment jobs of the reusable workflows it calls).
 * @param load reads a reusable workflow of this repository by its path.
 */
export async function environmentProblems(source: WorkflowSource, settings: EnvironmentSettings, load: (file: string) => WorkflowSource): Promise<{ problems: string[]; resolved: Set<string> }> {
  const problems: string[] = [];
  const resolved = new Set<string>();
  const scoped = (job: JobFacts) => [...[...job.vars].filter((n) => settings.vars.includes(n)).map((n) => `vars.${n}`), ...[...job.secrets].filter((n) => settings.secrets.includes(n)).map((n) => `secrets.${n}`)];
  for (const job of await jobFacts(source)) {
    const names = scoped(job);
    if (job.calls !== undefined) {
      if (names.length > 0) problems.push(`${source.file} job ${job.id}: ${names.join(', ')} read in a job that calls a reusable workflow; it has no environment, so they are empty there`);
      const own = ownReusableWorkflow(job.calls);
      if (!own) continue;
      for (const called of (await jobFacts(load(own))).filter((j) => j.hasEnvironment)) {
        const secrets = [...called.secrets].filter((n) => settings.secrets.includes(n));
        if (secrets.length > 0 && !job.inheritsSecrets) {
          problems.push(`${source.file} job ${job.id}: ${own} job ${called.id} reads the environment secret${secrets.length > 1 ? 's' : ''} ${secrets.join(', ')}, which resolve only with secrets: inherit`);
        }
        for (const n of called.vars) if (settings.vars.includes(n)) resolved.add(`vars.${n}`);
        if (job.inheritsSecrets) for (const n of secrets) resolved.add(`secrets.${n}`);
      }
    } else if (!job.hasEnvironment) {
      if (names.length > 0) problems.push(`${source.file} job ${job.id}: ${names.join(', ')} read in a job without environment:, where environment-scoped settings are empty`);
    } else {
      for (const n of names) resolved.add(n);
    }
  }
  return { problems, resolved };
}
