import * as core from '@actions/core';
import { formatBytes } from '../format.ts';
import { prune } from '../commands/prune.ts';
import { UsageError } from '../errors.ts';
import { actionLogger, runnerLog, filterInputs, maskSecrets, optional, readInputs, required, runAction, s3SettingsFrom, setOutputs, storageInputs, reportingFrom, reportingInputs } from './action.ts';
import { reported } from '../notify/index.ts';
import { githubHtmlText as h } from '../text/sinks.ts';

/**
 * `actions/prune`: applies a retention policy. A dry run unless `apply: true` — the plan is in
 * the job summary; deleting is opted into, never a default.
 */
export async function run(): Promise<void> {
  await runAction(async () => {
    const inputs = readInputs({
      from: required,
      'keep-last': optional,
      'keep-daily': optional,
      'keep-weekly': optional,
      'keep-monthly': optional,
      'max-age': optional,
      'keep-proven': optional,
      'incomplete-grace': optional,
      'keep-safety-dumps': optional,
      'max-clock-skew': optional,
      apply: optional,
      ...filterInputs,
      ...storageInputs,
      ...reportingInputs,
    }, 'prune');
    maskSecrets({ storage: inputs });
    const apply = (inputs.apply ?? 'false').toLowerCase();
    if (!['true', 'false'].includes(apply)) throw new UsageError(`input "apply" must be true or false (got ${JSON.stringify(inputs.apply)})`);
    const reporting = reportingFrom(inputs);
    const result = await reported(reporting, 'prune', () => runnerLog.group(apply === 'true' ? 'prune' : 'prune (dry run)', () =>
      prune({
        from: inputs.from,
        filter: { service: inputs.service, environment: inputs.environment, database: inputs.database },
        keepLast: inputs['keep-last'],
        keepDaily: inputs['keep-daily'],
        keepWeekly: inputs['keep-weekly'],
        keepMonthly: inputs['keep-monthly'],
        maxAge: inputs['max-age'],
        keepProven: inputs['keep-proven'],
        incompleteGrace: inputs['incomplete-grace'],
        keepSafetyDumps: inputs['keep-safety-dumps'],
        maxClockSkew: inputs['max-clock-skew'],
        apply: apply === 'true',
        s3: s3SettingsFrom(inputs),
        logger: actionLogger,
      }),
    ));
    setOutputs({
      result: result.ok ? 'ok' : 'failed',
      reason: result.reason,
      applied: result.applied,
      kept: result.counts.kept,
      deleted: result.counts.deleted,
      'incomplete-deleted': result.counts.incompleteDeleted,
      'bytes-deleted': result.counts.bytesDeleted,
      refused: result.refused.join('\n'),
      plan: JSON.stringify(result.plan),
    });
    const verb = result.applied ? 'deleted' : 'to delete';
    const groups = [...result.plan.groups, ...(result.safetyDumps.length ? [{ service: 'safety dumps', environment: 'restore --clean', database: '', backups: result.safetyDumps, incomplete: [] }] : [])];
    const rows = groups.flatMap((g) =>
      [...g.backups, ...g.incomplete].map((b) => [
        h([g.service, g.environment, g.database].filter(Boolean).join('/')),
        h(b.id) + (b.complete ? '' : ' (incomplete)'),
        b.startedAt.toISOString().replace('.000Z', 'Z'),
        b.archiveBytes === undefined ? '-' : formatBytes(b.archiveBytes), // the archive, as list and the CLI's plan show it
        b.action === 'keep' ? 'keep' : result.applied ? '🗑️ deleted' : '🗑️ delete',
        h(b.reasons.join('; ')),
      ]),
    );
    await core.summary
      .addHeading(`Prune: ${result.ok ? (result.applied ? 'applied' : 'dry run (nothing deleted; set apply: true to delete)') : 'FAILED'}`, 3)
      .addRaw(`<p>kept ${result.counts.kept}; ${verb} ${result.counts.deleted} backup(s) and ${result.counts.incompleteDeleted} incomplete (frees ${formatBytes(result.counts.bytesDeleted)})</p>`)
      .addRaw(result.refused.length ? `<p>Refused: ${result.refused.map(h).join('<br>')}</p>` : '')
      .addTable([
        [{ data: 'group', header: true }, { data: 'backup', header: true }, { data: 'taken (UTC)', header: true }, { data: 'size', header: true }, { data: 'action', header: true }, { data: 'why', header: true }],
        ...rows,
      ])
      .write();
    if (!result.ok) {
      runnerLog.failed(`prune failed: ${result.reason}`);
      process.exitCode = 1;
    }
  });
}

await run();
