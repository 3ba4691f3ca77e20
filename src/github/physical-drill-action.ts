import * as core from '@actions/core';
import type { SigningKey } from '../evidence/dsse.ts';
import { formatSeconds } from '../format.ts';
import { UsageError } from '../errors.ts';
import { physicalDrill } from '../physical/drill.ts';
import { PgBackRestDriver } from '../physical/pgbackrest.ts';
import { actionLogger, booleanInput, runnerLog, s3SettingsFrom, setOutputs, type issueInputs, type storageInputs } from './action.ts';
import { syncFailureIssue, type IssueSettings } from './issues.ts';
import type { Logger } from '../log.ts';
import { reported, type ReportingOptions, type RunScope } from '../notify/index.ts';
import { githubHtmlText as h } from '../text/sinks.ts';

type Inputs = { [K in keyof typeof storageInputs | keyof typeof issueInputs]?: string } & {
  from?: string;
  backup?: string;
  'target-url'?: string;
  service?: string;
  environment?: string;
  database?: string;
  'work-dir'?: string;
  'allow-same-os-user'?: string;
  'smoke-sql'?: string;
  'max-rto'?: string;
  'max-rpo'?: string;
  'pgbackrest-stanza'?: string;
  'pgbackrest-config'?: string;
  'pgbackrest-verify'?: string;
  'target-time'?: string;
  'log-to'?: string;
};

/**
 * `actions/drill` with `pgbackrest-stanza`: the physical drill (src/physical/drill.ts) with the
 * same outputs, job summary and failure issue as a logical drill (the issue's target is
 * `<service>/<environment>/<stanza>`).
 * @throws UsageError for inputs of the logical drill mixed in.
 */
export async function runPhysicalDrill(inputs: Inputs, issues: IssueSettings | undefined, reporting: ReportingOptions & RunScope & { logger: Logger } = { logger: actionLogger }, signingKey?: SigningKey): Promise<void> {
  const mixed = (['from', 'target-url'] as const).filter((k) => inputs[k]);
  if (inputs.backup && inputs.backup !== 'latest') mixed.push('backup' as never);
  if (mixed.length) throw new UsageError(`input${mixed.length > 1 ? 's' : ''} ${mixed.map((m) => `"${m}"`).join(', ')} belong to a drill of a logical backup, not to "pgbackrest-stanza": give "log-to" for where the drill log goes`);
  const verify = (inputs['pgbackrest-verify'] ?? 'false').toLowerCase();
  if (!['true', 'false'].includes(verify)) throw new UsageError(`input "pgbackrest-verify" must be true or false (got ${JSON.stringify(inputs['pgbackrest-verify'])})`);
  const result = await reported({ ...reporting, service: inputs.service, environment: inputs.environment, stanza: inputs['pgbackrest-stanza'] }, 'drill', () => physicalDrill({
    driver: new PgBackRestDriver({ stanza: inputs['pgbackrest-stanza']!, config: inputs['pgbackrest-config'] }),
    targetTime: inputs['target-time'],
    logTo: inputs['log-to'],
    service: inputs.service,
    environment: inputs.environment,
    database: inputs.database,
    workDir: inputs['work-dir'],
    allowSameOsUser: booleanInput(inputs['allow-same-os-user'], 'allow-same-os-user'),
    smokeSql: inputs['smoke-sql'],
    verifyRepository: verify === 'true',
    maxRto: inputs['max-rto'],
    maxRpo: inputs['max-rpo'],
    s3: s3SettingsFrom(inputs),
    logger: actionLogger,
    signingKey,
  }));
  setOutputs({
    result: result.ok ? 'ok' : 'failed',
    reason: result.reason,
    'rto-ms': result.rtoMs,
    'rpo-ms': result.rpoMs,
    'backup-uri': result.backup ? `pgbackrest:${result.scope}/${result.backup.label}` : undefined,
    'drill-log-uri': result.drillLogUri,
    'drill-report-uri': result.drillReportUri,
    'drill-evidence-uri': result.drillEvidenceUri,
  });
  const issue = issues
    ? await syncFailureIssue(
        { kind: 'drill', service: result.service, environment: result.environment, database: result.scope, ok: result.ok, reason: result.reason, problems: result.problems, drillLogUri: result.drillLogUri, backupUri: result.backup ? `pgBackRest stanza ${result.scope}, backup ${result.backup.label}` : undefined },
        issues,
      )
    : undefined;
  if (issue !== undefined) core.setOutput('issue-number', String(issue));
  const r = result.recovery;
  await core.summary
    .addHeading(`Restore drill (pgBackRest): ${result.ok ? 'OK' : 'FAILED'}`, 3)
    .addTable([
      [{ data: 'what', header: true }, { data: 'value', header: true }],
      ['stanza', h(`${result.scope} (${result.toolVersion ?? 'pgBackRest'})`)],
      ['backup', result.backup ? h(`${result.backup.label} (${result.backup.type}, stopped ${result.backup.stoppedAt})`) : '(none restored)'],
      ['target', result.target.type === 'time' ? h(`${result.target.time} (${result.target.pgbackrest})`) : 'the end of the WAL archive'],
      ['recovery', r ? h(`ended at ${r.switchLsn ?? '?'}: ${r.stopReason ?? '?'}; last transaction ${r.lastTransactionAt ?? 'none'}`) : '-'],
      ['RTO', `${formatSeconds(result.rtoMs)} (restore ${formatSeconds(result.phases.restoreMs)}, WAL replay until promotion ${formatSeconds(result.phases.replayMs)})`],
      ['RPO (newest archived WAL)', result.rpoMs === undefined ? '-' : h(`${formatSeconds(result.rpoMs)} (${result.newestWal?.segment ?? '?'})`)],
      ['extensions', result.extensions.length ? result.extensions.map(h).join('<br>') : 'none beyond plpgsql'],
      ['smoke checks', result.smoke.length ? `${result.smoke.filter((s) => s.ok).length}/${result.smoke.length} passed` : 'none given'],
      ['repository verify', result.repositoryVerify ? (result.repositoryVerify.ok ? 'every file valid' : result.repositoryVerify.problems.map(h).join('<br>')) : 'not asked'],
      ['drill log', h(result.drillLogUri ?? '(not archived)')],
      ['result', result.ok ? 'restore drill OK' : result.problems.map(h).join('<br>')],
    ])
    .addHeading('RTO trend (newest first)', 4)
    .addTable([
      [{ data: 'drill', header: true }, { data: 'backup', header: true }, { data: 'result', header: true }, { data: 'RTO', header: true }],
      ...result.history.map((r) => [h(r.startedAt), h(r.backupId ?? '-'), r.ok ? 'OK' : 'FAILED', formatSeconds(r.rtoMs)]),
    ])
    .write();
  if (!result.ok) {
    runnerLog.failed(`restore drill failed: ${result.reason}`);
    process.exitCode = 1;
  }
}
