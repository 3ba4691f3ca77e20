import * as core from '@actions/core';
import { describePhases } from '../commands/drill.ts';
import { formatSeconds } from '../format.ts';
import { parsePostgresVersions, runDrill } from '../commands/drill-majors.ts';
import {
  actionLogger, booleanInput, runnerLog, checkDatabaseUrl, filterInputs, issueInputs, issueSettingsFrom, maskSecrets, optional, readInputs, runAction, s3SettingsFrom, setOutputs, storageInputs, identitiesFrom, reportingFrom, reportingInputs,
} from './action.ts';
import { reported } from '../notify/index.ts';
import { cancelOnSignals } from './cancel.ts';
import { sshInputs, sshTunnelFromInputs } from './ssh-inputs.ts';
import { withSshTunnel } from '../postgres/ssh-tunnel.ts';
import { syncFailureIssue } from './issues.ts';
import { runPhysicalDrill } from './physical-drill-action.ts';
import { UsageError } from '../errors.ts';
import { parseSigningKey } from '../evidence/dsse.ts';
import { attestationOutputs } from '../evidence/attest-outputs.ts';
import { githubHtmlText as h } from '../text/sinks.ts';

/** `actions/drill`: restores a backup into a throwaway PostgreSQL, checks it and times it. */
export async function run(): Promise<void> {
  const cancellation = cancelOnSignals();
  await runAction(async () => {
    const inputs = readInputs({
      from: optional,
      backup: optional,
      'target-url': optional,
      'work-dir': optional,
      'allow-same-os-user': optional,
      jobs: optional,
      profile: optional,
      'smoke-sql': optional,
      'max-rto': optional,
      'max-rpo': optional,
      'max-clock-skew': optional,
      'postgres-versions': optional,
      'install-pg-client': optional,
      'no-owner': optional,
      'no-acl': optional,
      ...filterInputs,
      ...issueInputs,
      ...storageInputs,
      'age-identity': optional,
      'sign-key': optional,
      ...reportingInputs,
      'pgbackrest-stanza': optional,
      'pgbackrest-config': optional,
      'pgbackrest-verify': optional,
      'target-time': optional,
      'log-to': optional,
      ...sshInputs,
    }, 'drill');
    const issues = issueSettingsFrom(inputs);
    maskSecrets({ databaseUrls: [inputs['target-url']], storage: inputs });
    // The PEM is multi-line: each line is masked too, as the runner masks a log line only by whole registered values.
    if (inputs['sign-key']) for (const secret of [inputs['sign-key'], ...inputs['sign-key'].split(/\r?\n/).filter((l) => l.trim() && !l.startsWith('-----'))]) core.setSecret(secret);
    const signingKey = inputs['sign-key'] ? parseSigningKey(inputs['sign-key'], 'input "sign-key"') : undefined;
    const reporting = reportingFrom(inputs);
    if (inputs['pgbackrest-stanza'] && inputs['postgres-versions']) throw new UsageError('postgres-versions rehearses a pg_dump backup in other majors; a physical drill (pgbackrest-stanza) restores into the backup\'s own major: give one of them');
    if (inputs['pgbackrest-stanza']) return runPhysicalDrill(inputs, issues, reporting, signingKey);
    if (!inputs.from) throw new UsageError('input "from" is required (s3://BUCKET/PREFIX or file:///DIR), or give "pgbackrest-stanza" for a physical drill');
    checkDatabaseUrl(inputs['target-url']);
    const postgresVersions = inputs['postgres-versions'] ? parsePostgresVersions(inputs['postgres-versions']) : undefined;
    if (inputs['ssh-tunnel'] && !inputs['target-url']) throw new UsageError('input "ssh-tunnel" reaches the database of input "target-url": give target-url (a throwaway cluster needs no tunnel)');
    // The bastion's key and known hosts, written to a private directory removed on every exit.
    const ssh = await sshTunnelFromInputs(inputs);
    const result = await reported(reporting, 'drill', () => withSshTunnel(ssh.settings, [inputs['target-url']], ([targetUrl]) => runDrill({
        from: inputs.from!,
        backup: inputs.backup ?? 'latest',
        filter: { service: inputs.service, environment: inputs.environment, database: inputs.database },
        targetUrl,
        workDir: inputs['work-dir'],
        allowSameOsUser: booleanInput(inputs['allow-same-os-user'], 'allow-same-os-user'),
        jobs: inputs.jobs === undefined ? undefined : Number(inputs.jobs),
        profile: inputs.profile,
        smokeSql: inputs['smoke-sql'],
        maxRto: inputs['max-rto'],
        maxRpo: inputs['max-rpo'],
        maxClockSkew: inputs['max-clock-skew'],
        postgresVersions,
        installClient: booleanInput(inputs['install-pg-client'], 'install-pg-client'),
        noOwner: booleanInput(inputs['no-owner'], 'no-owner'),
        noAcl: booleanInput(inputs['no-acl'], 'no-acl'),
        s3: s3SettingsFrom(inputs),
        ageIdentities: identitiesFrom(inputs['age-identity']),
        logger: actionLogger,
        signal: cancellation.signal,
        signingKey,
      }), { signal: cancellation.signal, logger: actionLogger })).finally(() => ssh.cleanup());
    const attest = await attestationOutputs(inputs.from!, s3SettingsFrom(inputs), result, actionLogger);
    setOutputs({
      result: result.ok ? 'ok' : 'failed',
      reason: result.reason,
      'rto-ms': result.rtoMs,
      'rpo-ms': result.rpoMs,
      'backup-uri': result.backupUri,
      'drill-log-uri': result.drillLogUri,
      'drill-report-uri': result.drillReportUri,
      'drill-evidence-uri': result.drillEvidenceUri,
      'subject-name': attest?.subjectName,
      'subject-digest': attest?.subjectDigest,
      'drill-report': attest?.report,
    });
    const m = result.manifest;
    const labels = { service: m?.service ?? inputs.service ?? '*', environment: m?.environment ?? inputs.environment ?? '*', database: m?.database ?? inputs.database ?? '*' };
    const issue = issues
      ? await syncFailureIssue({ kind: 'drill', ...labels, ok: result.ok, reason: result.reason, problems: result.problems, drillLogUri: result.drillLogUri, backupUri: result.backupUri }, issues)
      : undefined;
    if (issue !== undefined) core.setOutput('issue-number', String(issue));
    // Every value from the bucket or the database is escaped for the summary's HTML (h).
    const rows = result.tables.map((t) => [h(`${t.schema}.${t.table}`), String(t.expected), t.actual === undefined ? 'missing' : String(t.actual), t.ok ? '✅' : '❌']);
    await core.summary
      .addHeading(`Restore drill: ${result.ok ? 'OK' : 'FAILED'}`, 3)
      .addTable([
        [{ data: 'what', header: true }, { data: 'value', header: true }],
        ['backup', h(result.backupUri ?? '(not found)')],
        ['target', h(result.target)],
        ['RTO', `${formatSeconds(result.rtoMs)}: from the download's start to the checks' end`],
        ['phases', h(describePhases(result.phases, result.target === 'throwaway' || result.majors !== undefined))],
        ['sequences', result.sequencesBehind.length ? result.sequencesBehind.map(h).join('<br>') : 'none behind their columns'],
        ['migration head', result.migrationHead ? h(`${result.migrationHead.actual ?? 'missing'}${result.migrationHead.ok ? ' (as recorded)' : ` (expected ${result.migrationHead.expected})`}`) : 'no migration table'],
        ['smoke checks', result.smoke.length ? `${result.smoke.filter((r) => r.ok).length}/${result.smoke.length} passed` : 'none given'],
        ['RPO (backup age)', result.rpoMs === undefined ? '-' : formatSeconds(result.rpoMs)],
        ['drill log', h(result.drillLogUri ?? '(not archived)')],
        ['result', result.ok ? 'restore drill OK' : result.problems.map(h).join('<br>')],
      ])
      .addTable([[{ data: 'table', header: true }, { data: 'rows in manifest', header: true }, { data: 'rows restored', header: true }, { data: '', header: true }], ...rows])
      .addHeading('RTO trend (newest first)', 4)
      .addTable([
        [{ data: 'drill', header: true }, { data: 'backup', header: true }, { data: 'result', header: true }, { data: 'RTO', header: true }],
        ...result.history.map((r) => [h(r.startedAt), h(r.backupId ?? '-'), r.ok ? 'OK' : 'FAILED', formatSeconds(r.rtoMs)]),
      ])
      .write();
    if (result.majors) {
      // Upgrade rehearsal: one row per server major.
      await core.summary
        .addHeading('Upgrade rehearsal: one drill per server major', 4)
        .addTable([
          [{ data: 'major', header: true }, { data: 'server_version', header: true }, { data: 'server binaries', header: true }, { data: 'RTO', header: true }, { data: 'result', header: true }, { data: 'failed check', header: true }],
          ...result.majors.map((m) => [String(m.major), h(m.serverVersion ?? '(not started)'), h(m.packageSpec ?? m.binaries ?? '-'), formatSeconds(m.rtoMs), m.ok ? '✅ OK' : '❌ FAILED', h(m.reason ?? '')]),
        ])
        .write();
    }
    if (!result.ok) {
      runnerLog.failed(`restore drill failed: ${result.reason}`);
      process.exitCode = 1;
    }
  });
  cancellation.dispose();
  if (cancellation.exitCode() !== undefined) process.exitCode = cancellation.exitCode();
}

await run();
