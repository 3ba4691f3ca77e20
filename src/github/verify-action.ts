import * as core from '@actions/core';
import { formatBytes, formatSeconds } from '../format.ts';
import { verify, type VerifyLevel } from '../commands/verify.ts';
import { actionLogger, booleanInput, runnerLog, filterInputs, issueInputs, issueSettingsFrom, maskSecrets, optional, readInputs, runAction, s3SettingsFrom, setOutputs, storageInputs, identitiesFrom, reportingFrom, reportingInputs } from './action.ts';
import { reported } from '../notify/index.ts';
import { cancelOnSignals } from './cancel.ts';
import { syncFailureIssue } from './issues.ts';
import { checkVerifyScope, walFreshness } from '../physical/wal-freshness.ts';
import { githubHtmlText as h } from '../text/sinks.ts';

/** `actions/verify`: proves a stored backup intact and readable. */
export async function run(): Promise<void> {
  const cancellation = cancelOnSignals();
  await runAction(async () => {
    const inputs = readInputs({
      from: optional,
      'wal-prefix': optional,
      backup: optional,
      level: optional,
      'max-age': optional,
      'max-clock-skew': optional,
      'expect-every': optional,
      'fail-on-suspicion': optional,
      'work-dir': optional,
      'allow-same-os-user': optional,
      record: optional,
      ...filterInputs,
      ...issueInputs,
      ...storageInputs,
      'age-identity': optional,
      ...reportingInputs,
    }, 'verify');
    const issues = issueSettingsFrom(inputs);
    maskSecrets({ storage: inputs });
    const reporting = reportingFrom(inputs);
    checkVerifyScope(inputs.from, inputs['wal-prefix'], { from: 'input "from"', walPrefix: 'input "wal-prefix"', maxAge: 'input "max-age"' }, inputs['max-age']);
    if (inputs['wal-prefix']) {
      const wal = await reported(reporting, 'verify', () => runnerLog.group('WAL archive freshness', () => walFreshness({ prefix: inputs['wal-prefix']!, maxAge: inputs['max-age']!, s3: s3SettingsFrom(inputs), logger: actionLogger })));
      const labels = { service: inputs.service ?? '*', environment: inputs.environment ?? '*', database: `WAL ${wal.prefix}` };
      const walIssue = issues ? await syncFailureIssue({ kind: 'verify', ...labels, ok: wal.ok, reason: wal.reason, problems: wal.problems }, issues) : undefined;
      if (walIssue !== undefined) core.setOutput('issue-number', String(walIssue));
      setOutputs({ result: wal.ok ? 'ok' : 'failed', reason: wal.reason, 'newest-age-ms': wal.newestAgeMs, 'duration-ms': wal.durationMs, 'backup-uri': wal.newestUri });
      await core.summary
        .addHeading(`WAL archive freshness: ${wal.ok ? 'OK' : 'FAILED'}`, 3)
        .addTable([
          [{ data: 'check', header: true }, { data: 'result', header: true }],
          ['WAL archive', h(wal.prefix)],
          ['objects', String(wal.objects)],
          ['newest', wal.newestUri ? h(`${wal.newestUri} (${wal.newestAt})`) : '-'],
          ['age', wal.newestAgeMs === undefined ? '-' : h(`${formatSeconds(wal.newestAgeMs)} (max-age ${inputs['max-age']})`)],
          ['result', wal.ok ? 'OK' : wal.problems.map(h).join('<br>')],
        ])
        .write();
      if (!wal.ok) {
        runnerLog.failed(`verify failed: ${wal.reason}`);
        process.exitCode = 1;
      }
      return;
    }
    const result = await reported(reporting, 'verify', () => runnerLog.group('verify', () =>
      verify({
        from: inputs.from!,
        backup: inputs.backup ?? 'latest',
        filter: { service: inputs.service, environment: inputs.environment, database: inputs.database },
        level: inputs.level as VerifyLevel | undefined,
        maxAge: inputs['max-age'],
        maxClockSkew: inputs['max-clock-skew'],
        expectEvery: inputs['expect-every'],
        failOnSuspicion: inputs['fail-on-suspicion'] === 'true',
        workDir: inputs['work-dir'],
        allowSameOsUser: booleanInput(inputs['allow-same-os-user'], 'allow-same-os-user'),
        record: inputs.record === 'true',
        s3: s3SettingsFrom(inputs),
        ageIdentities: identitiesFrom(inputs['age-identity']),
        logger: actionLogger,
        signal: cancellation.signal,
      }),
    ));
    const m = result.manifest;
    const labels = { service: m?.service ?? inputs.service ?? '*', environment: m?.environment ?? inputs.environment ?? '*', database: m?.database ?? inputs.database ?? '*' };
    const issue = issues ? await syncFailureIssue({ kind: 'verify', ...labels, ok: result.ok, reason: result.reason, problems: [...result.problems, ...result.suspicions], backupUri: result.backupUri }, issues) : undefined;
    if (issue !== undefined) core.setOutput('issue-number', String(issue));
    setOutputs({
      result: result.ok ? 'ok' : 'failed',
      reason: result.reason,
      'backup-uri': result.backupUri,
      sha256: result.sha256,
      'size-bytes': result.sizeBytes,
      'duration-ms': result.durationMs,
      'newest-age-ms': result.newestAgeMs,
      suspicions: result.suspicions.join('\n'),
      'record-uri': result.recordUri,
    });
    await core.summary
      .addHeading(`Verify: ${result.ok ? 'OK' : 'FAILED'}`, 3)
      .addTable([
        [{ data: 'check', header: true }, { data: 'result', header: true }],
        ['backup', h(result.backupUri ?? '(not found)')],
        ['size', result.manifest ? `${formatBytes(result.sizeBytes)} (manifest: ${formatBytes(result.manifest.object.sizeBytes)})` : '-'],
        ['sha256', result.sha256 ? `<code>${h(result.sha256)}</code>` : '-'],
        ['level', result.level],
        ['result', result.ok ? 'OK' : [...result.problems, ...result.suspicions].map(h).join('<br>')],
        ['suspicions', result.suspicions.length ? result.suspicions.map(h).join('<br>') : 'none'],
        ['verify record', result.recordUri ? h(result.recordUri) : inputs.record === 'true' ? 'not written (see the warning)' : '-'],
        ['newest backup age', result.newestAgeMs === undefined ? '-' : formatSeconds(result.newestAgeMs)],
        ['duration', formatSeconds(result.durationMs)],
      ])
      .write();
    if (!result.ok) {
      runnerLog.failed(`verify failed: ${result.reason}`);
      process.exitCode = 1;
    }
  });
  cancellation.dispose();
  if (cancellation.exitCode() !== undefined) process.exitCode = cancellation.exitCode();
}

await run();
