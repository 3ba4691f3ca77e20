import * as core from '@actions/core';
import { dump } from '../commands/dump.ts';
import { formatBytes, formatSeconds } from '../commands/format.ts';
import type { VerifyLevel } from '../commands/verify.ts';
import { actionLogger, checkDatabaseUrl, maskSecrets, optional, readInputs, required, runAction, s3SettingsFrom, setOutputs, storageInputs } from './action.ts';

/** `actions/dump`: one backup of one database, outputs and a job summary. */
export async function run(): Promise<void> {
  await runAction(async () => {
    const inputs = readInputs({
      'database-url': optional,
      to: required,
      service: optional,
      environment: optional,
      compression: optional,
      verify: optional,
      ...storageInputs,
    });
    const databaseUrl = inputs['database-url'] ?? process.env.DATABASE_URL;
    maskSecrets({ databaseUrls: [databaseUrl], storage: inputs });
    checkDatabaseUrl(databaseUrl);
    const result = await core.group('dump', () =>
      dump({
        databaseUrl,
        to: inputs.to,
        service: inputs.service,
        environment: inputs.environment,
        compression: inputs.compression,
        verify: inputs.verify as VerifyLevel | undefined,
        s3: s3SettingsFrom(inputs),
        logger: actionLogger,
      }),
    );
    const m = result.manifest;
    setOutputs({
      'backup-uri': result.backupUri,
      'manifest-uri': result.manifestUri,
      'backup-key': result.objectKey,
      sha256: m.object.sha256,
      'size-bytes': m.object.sizeBytes,
      'duration-ms': m.durationMs,
      'verify-result': result.verification ? (result.verification.ok ? 'ok' : 'failed') : 'skipped',
    });
    await core.summary
      .addHeading(`Backup of ${m.service}/${m.environment}/${m.database}`, 3)
      .addTable([
        [{ data: 'what', header: true }, { data: 'value', header: true }],
        ['database', `${m.database} (PostgreSQL ${m.server.version}, pg_dump ${m.pgDump.version})`],
        ['where', result.backupUri],
        ['size', `${formatBytes(m.object.sizeBytes)} (${m.compression.algorithm}${m.compression.level ? `:${m.compression.level}` : ''}, ${formatBytes(m.archiveSizeBytes)} before)`],
        ['sha256', `<code>${m.object.sha256}</code>`],
        ['duration', formatSeconds(m.durationMs)],
        ['tables', `${m.tables.length} tables, ${m.tables.reduce((n, t) => n + t.rows, 0)} rows`],
        ['migration head', m.migrationHead ? `${m.migrationHead.head} (${m.migrationHead.table})` : 'no migration table'],
        ['verified', result.verification ? `${result.verification.level}: ${result.verification.ok ? 'OK' : `FAILED: ${result.verification.reason}`}` : 'not asked'],
      ])
      .write();
    if (result.verification && !result.verification.ok) {
      core.setFailed(`verify after dump failed: ${result.verification.reason}`);
      process.exitCode = 1;
    }
  });
}

await run();
