import * as core from '@actions/core';
import * as github from '@actions/github';
import { messageOf } from '../errors.ts';
import { issueTitleText, markdownCode, markdownText, runnerLogText } from '../text/sinks.ts';

/** What failed (or passed), for the failure issue. */
export interface CheckOutcome {
  /** `drill` or `verify` (freshness, integrity). */
  kind: 'drill' | 'verify';
  service: string;
  environment: string;
  database: string;
  ok: boolean;
  /** Why it failed. */
  reason?: string;
  /** Every problem found, for the issue body. */
  problems?: string[];
  drillLogUri?: string;
  backupUri?: string;
}

/** Settings of the failure issue. */
export interface IssueSettings {
  token: string;
  /** Default `backup-drill-failure`. */
  label: string;
}

/** The hidden marker that ties an issue to one check of one database. */
export function issueMarker(o: Pick<CheckOutcome, 'kind' | 'service' | 'environment' | 'database'>): string {
  return `<!-- pg-backup:${o.kind}:${encodeURIComponent(o.service)}/${encodeURIComponent(o.environment)}/${encodeURIComponent(o.database)} -->`;
}

/** The workflow run's URL, from the runner's `GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`, `GITHUB_RUN_ID`. */
export function runUrl(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!env.GITHUB_REPOSITORY || !env.GITHUB_RUN_ID) return undefined;
  return `${env.GITHUB_SERVER_URL || 'https://github.com'}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}`;
}

/**
 * Keeps one GitHub issue per failing check of one database: on failure, comments on the open
 * issue with this check's marker and label, or opens one; on success, comments on and closes
 * such an open issue. Uses `@actions/github` (REST API at `GITHUB_API_URL`, repository from
 * `GITHUB_REPOSITORY`). A failure to reach GitHub is a warning: it never changes the check's
 * verdict. Returns the issue's number, if one was opened, commented or closed.
 */
export async function syncFailureIssue(outcome: CheckOutcome, settings: IssueSettings): Promise<number | undefined> {
  try {
    const octokit = github.getOctokit(settings.token);
    const { owner, repo } = github.context.repo;
    const marker = issueMarker(outcome);
    const open = await octokit.paginate(octokit.rest.issues.listForRepo, { owner, repo, state: 'open', labels: settings.label, per_page: 100 });
    const existing = open.find((i) => !i.pull_request && (i.body ?? '').includes(marker));
    // The names, reason and problems come from the bucket and the database: each is escaped for
    // where it goes (Markdown body, plain title, runner log), at the moment it is written.
    const target = `${outcome.service}/${outcome.environment}/${outcome.database}`;
    const targetMd = markdownCode(target);
    const run = runUrl();
    const details = [
      outcome.reason ? `**Reason:** ${markdownText(outcome.reason)}` : undefined,
      outcome.problems && outcome.problems.length > 1 ? `**All problems:**\n${outcome.problems.map((p) => `- ${markdownText(p)}`).join('\n')}` : undefined,
      outcome.backupUri ? `**Backup:** ${markdownCode(outcome.backupUri)}` : undefined,
      outcome.drillLogUri ? `**Drill log:** ${markdownCode(outcome.drillLogUri)}` : undefined,
      run ? `**Run:** ${run}` : undefined,
    ].filter(Boolean).join('\n\n');
    const log = (message: string) => core.info(runnerLogText(message));
    if (!outcome.ok) {
      if (existing) {
        await octokit.rest.issues.createComment({ owner, repo, issue_number: existing.number, body: `The ${outcome.kind} of ${targetMd} failed again.\n\n${details}` });
        log(`commented on issue #${existing.number}: ${outcome.kind} of ${target} still failing`);
        return existing.number;
      }
      const created = await octokit.rest.issues.create({
        owner,
        repo,
        title: issueTitleText(`Backup ${outcome.kind} failed: ${target}`),
        labels: [settings.label],
        body: `The backup ${outcome.kind} of **${targetMd}** failed. A backup that cannot be proven to restore is not a backup: treat this as an incident.\n\n${details}\n\n${marker}`,
      });
      log(`opened issue #${created.data.number}: ${outcome.kind} of ${target} failed`);
      return created.data.number;
    }
    if (existing) {
      await octokit.rest.issues.createComment({ owner, repo, issue_number: existing.number, body: `The ${outcome.kind} of ${targetMd} passed.${run ? ` Run: ${run}` : ''} Closing.` });
      await octokit.rest.issues.update({ owner, repo, issue_number: existing.number, state: 'closed', state_reason: 'completed' });
      log(`closed issue #${existing.number}: ${outcome.kind} of ${target} passes again`);
      return existing.number;
    }
    return undefined;
  } catch (err) {
    core.warning(runnerLogText(`could not update the failure issue on GitHub: ${messageOf(err)} (the workflow needs "permissions: issues: write")`));
    return undefined;
  }
}
