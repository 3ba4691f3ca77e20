// The workflow files this repository ships or documents, and the safety rules every one of
// them follows (issue 24: no expression inside a script, no persisted checkout credentials,
// third-party actions pinned by commit).
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { root } from '../helpers.ts';

/** One workflow-shaped text: its name (a repository path, or `README.md#…` for a block) and its YAML. */
export interface WorkflowSource {
  file: string;
  text: string;
}

/**
 * The README's quick-start workflow: the first ```yaml block that is a whole workflow (starts
 * with `name:`).
 * @throws Error when the README has none (the quick start moved: update this reader).
 */
export function readmeWorkflow(): WorkflowSource {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const block = /```yaml\n(name:[\s\S]*?)```/.exec(readme);
  if (!block) throw new Error('README.md has no ```yaml block starting with "name:"');
  return { file: 'README.md#quick-start', text: block[1]! };
}

/** Every workflow: .github/workflows/*.yml, docs/examples/*.yml and the README's quick start. */
export function workflowSources(): WorkflowSource[] {
  const out: WorkflowSource[] = [];
  for (const dir of ['.github/workflows', 'docs/examples']) {
    for (const f of readdirSync(path.join(root, dir)).filter((n) => /\.ya?ml$/.test(n)).sort()) {
      out.push({ file: `${dir}/${f}`, text: readFileSync(path.join(root, dir, f), 'utf8') });
    }
  }
  out.push(readmeWorkflow());
  return out;
}

/** Every action definition: actions/*\/action.yml. */
export function actionSources(): WorkflowSource[] {
  return readdirSync(path.join(root, 'actions'))
    .sort()
    .map((name) => `actions/${name}/action.yml`)
    .map((file) => ({ file, text: readFileSync(path.join(root, file), 'utf8') }));
}

/**
 * Our own actions and reusable workflows, referenced by a release tag (`@v1`): what users pin,
 * and what the release workflow moves. Inside our reusable workflows GitHub offers no way to
 * name "the commit this workflow runs from" for an action of the same repository, so they
 * follow the release line too.
 */
export const OWN_REF = /^pg-backup-actions\/pg-backup-actions\/(actions\/[a-z-]+|\.github\/workflows\/[a-z-]+\.yml)@v\d+(\.\d+){0,2}$/;

/** A third-party reference pinned by full commit SHA: `owner/repo[/path]@<40 hex>`. */
const SHA_REF = /^[A-Za-z0-9][\w.-]*\/[\w.-]+(\/[\w./-]+)?@[0-9a-f]{40}$/;

type Step = { uses?: unknown; run?: unknown; with?: Record<string, unknown> };

/** The steps and job-level `uses:` of a workflow or an action definition, with where each is. */
function stepsOf(doc: Record<string, any>): { where: string; step: Step }[] {
  const out: { where: string; step: Step }[] = [];
  for (const [jobId, job] of Object.entries<Record<string, any>>(doc?.jobs ?? {})) {
    if (job?.uses !== undefined) out.push({ where: `job ${jobId}`, step: { uses: job.uses } });
    (job?.steps ?? []).forEach((step: Step, i: number) => out.push({ where: `job ${jobId} step ${i + 1}`, step }));
  }
  (doc?.runs?.steps ?? []).forEach((step: Step, i: number) => out.push({ where: `step ${i + 1}`, step }));
  return out;
}

/**
 * What breaks the workflow safety rules in one file, one line per finding (empty: safe):
 * - `${{` inside a `run:` script (the value is pasted into the script before the shell reads
 *   it: a quote or `$(…)` in it runs as code; pass it through `env:` instead);
 * - `actions/checkout` without `persist-credentials: false` (the token stays in .git/config
 *   for every later step);
 * - a third-party `uses:` not pinned by a full commit SHA with its version in a comment
 *   (`…@<40 hex> # v5.1.0`); local `./` paths, `docker://` images and {@link OWN_REF} pass.
 */
export function safetyFindings(source: WorkflowSource): string[] {
  const findings: string[] = [];
  const doc = parse(source.text) as Record<string, any>;
  const lines = source.text.split('\n');
  for (const { where, step } of stepsOf(doc)) {
    if (typeof step.run === 'string' && step.run.includes('${{')) findings.push(`${source.file} ${where}: \${{ }} inside run: (pass it through env:)`);
    if (typeof step.uses !== 'string') continue;
    const uses = step.uses.trim();
    if (/^actions\/checkout@/.test(uses) && String(step.with?.['persist-credentials']) !== 'false') {
      findings.push(`${source.file} ${where}: actions/checkout without persist-credentials: false`);
    }
    if (uses.startsWith('./') || uses.startsWith('docker://') || OWN_REF.test(uses)) continue;
    if (!SHA_REF.test(uses)) {
      findings.push(`${source.file} ${where}: ${uses} is not pinned by a full commit SHA`);
      continue;
    }
    const line = lines.find((l) => l.includes(`uses: ${uses}`));
    if (!line || !/#\s*v\d+(\.\d+){0,2}\s*$/.test(line)) findings.push(`${source.file} ${where}: ${uses} has no "# vX.Y.Z" comment naming its version`);
  }
  return findings;
}

/** How many `run:` scripts and `uses:` references {@link safetyFindings} looked at in `source`. */
export function countChecked(source: WorkflowSource): { runs: number; uses: number } {
  const steps = stepsOf(parse(source.text) as Record<string, any>);
  return { runs: steps.filter((s) => typeof s.step.run === 'string').length, uses: steps.filter((s) => typeof s.step.uses === 'string').length };
}
