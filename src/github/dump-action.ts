import * as core from '@actions/core';
import { dumpMany, type DumpOutcome, type DumpRun } from '../commands/dump-many.ts';
import { MAX_PARALLEL_DATABASES } from '../limits.ts';
import { runContext, type ChecksumSidecar } from '../commands/dump.ts';
import { formatBytes, formatSeconds } from '../format.ts';
import type { VerifyLevel } from '../commands/verify.ts';
import { UsageError } from '../errors.ts';
import type { DumpFormat } from '../postgres/dump-options.ts';
import { actionLogger, booleanInput, checkDatabaseUrl, listInput, maskSecrets, optional, protectionFrom, protectionInputs, readInputs, reportingFrom, reportingInputs, required, runAction, s3SettingsFrom, setOutputs, storageInputs } from './action.ts';
import { cancelOnSignals } from './cancel.ts';
import { sshInputs, sshTunnelFromInputs } from './ssh-inputs.ts';
import { withSshTunnel } from '../postgres/ssh-tunnel.ts';
import { reported } from '../notify/index.ts';
import { githubHtmlText as h, markdownCodeBlock } from '../text/sinks.ts';

/** `actions/dump`: one backup per database, outputs and a job summary. */
export async function run(): Promise<void> {
  // A cancelled job (SIGINT, then SIGTERM): pg_dump stopped, the multipart upload aborted.
  const cancellation = cancelOnSignals();
  await runAction(async () => {
    const inputs = readInputs({
      'database-url': optional,
      databases: optional,
      'exclude-database': optional,
      globals: optional,
      'parallel-databases': optional,
      to: required,
      service: optional,
      environment: optional,
      format: optional,
      jobs: optional,
      compression: optional,
      clean: optional,
      'no-owner': optional,
      'no-acl': optional,
      schemas: optional,
      'exclude-schemas': optional,
      profile: optional,
      tables: optional,
      'exclude-tables': optional,
      'exclude-table-data': optional,
      'lock-wait-timeout': optional,
      'pg-dump-args': optional,
      'checksum-sidecars': optional,
      'schema-sidecar': optional,
      'work-dir': optional,
      'stall-timeout': optional,
      'max-clock-skew': optional,
      verify: optional,
      reason: optional,
      'install-pg-client': optional,
      'allow-same-os-user': optional,
      ...storageInputs,
      ...protectionInputs,
      ...reportingInputs,
      ...sshInputs,
    }, 'dump');
    const databaseUrls = listInput(inputs['database-url'] ?? process.env.DATABASE_URL, 'lines');
    maskSecrets({ databaseUrls, storage: inputs });
    for (const url of databaseUrls) checkDatabaseUrl(url);
    const reporting = { ...reportingFrom(inputs), databases: listInput(inputs.databases), databaseUrl: databaseUrls };
    let outcomes: DumpOutcome[];
    let run: DumpRun | undefined;
    let failure: unknown;
    const databases = listInput(inputs.databases);
    const parallel = inputs['parallel-databases'];
    if (parallel !== undefined && !/^\d{1,3}$/.test(parallel)) throw new UsageError(`input "parallel-databases" must be a count from 1 to ${MAX_PARALLEL_DATABASES} (got ${JSON.stringify(parallel)})`);
    // The bastion's key and known hosts, written to a private directory removed on every exit.
    const ssh = await sshTunnelFromInputs(inputs);
    try {
      run = await reported(reporting, 'dump', () => withSshTunnel(ssh.settings, databaseUrls, (urls) => dumpMany({
          databaseUrls: urls,
          databases,
          allDatabases: databases.length === 1 && databases[0] === 'all',
          excludeDatabases: listInput(inputs['exclude-database']),
          noGlobals: booleanInput(inputs.globals, 'globals') === false,
          parallelDatabases: parallel === undefined ? undefined : Number(parallel),
          to: inputs.to,
          service: inputs.service,
          environment: inputs.environment,
          format: inputs.format as DumpFormat | undefined,
          jobs: inputs.jobs === undefined ? undefined : Number(inputs.jobs),
          compression: inputs.compression,
          clean: booleanInput(inputs.clean, 'clean'),
          noOwner: booleanInput(inputs['no-owner'], 'no-owner'),
          noAcl: booleanInput(inputs['no-acl'], 'no-acl'),
          schemas: listInput(inputs.schemas),
          excludeSchemas: listInput(inputs['exclude-schemas']),
          profile: inputs.profile,
          tables: listInput(inputs.tables),
          excludeTables: listInput(inputs['exclude-tables']),
          excludeTableData: listInput(inputs['exclude-table-data']),
          lockWaitTimeout: inputs['lock-wait-timeout'],
          extraArgs: listInput(inputs['pg-dump-args'], 'lines'),
          checksumSidecars: listInput(inputs['checksum-sidecars']) as ChecksumSidecar[],
          schemaSidecar: booleanInput(inputs['schema-sidecar'], 'schema-sidecar'),
          workDir: inputs['work-dir'],
          stallTimeout: inputs['stall-timeout'],
          maxClockSkew: inputs['max-clock-skew'],
          verify: inputs.verify as VerifyLevel | undefined,
          context: runContext(inputs.reason),
          installClient: booleanInput(inputs['install-pg-client'], 'install-pg-client'),
          allowSameOsUser: booleanInput(inputs['allow-same-os-user'], 'allow-same-os-user'),
          ...protectionFrom({ ...s3SettingsFrom(inputs), signal: cancellation.signal }, inputs),
          logger: actionLogger,
          signal: cancellation.signal,
        }), { signal: cancellation.signal, logger: actionLogger }));
      outcomes = run.outcomes;
    } catch (err) {
      const partial = err as { outcomes?: DumpOutcome[]; run?: DumpRun };
      if (!partial.outcomes) throw err;
      outcomes = partial.outcomes;
      run = partial.run;
      failure = err;
    } finally {
      await ssh.cleanup();
    }
    const globals = run?.globals;
    const first = outcomes.find((o) => o.result)?.result;
    const m = first?.manifest;
    setOutputs({
      'backup-uri': first?.backupUri,
      'manifest-uri': first?.manifestUri,
      'backup-key': first?.objectKey,
      sha256: m?.object.sha256,
      'size-bytes': m?.object.sizeBytes,
      'duration-ms': m?.durationMs,
      'restore-command': first?.restoreCommand,
      'verify-result': first?.verification ? (first.verification.ok ? 'ok' : 'failed') : 'skipped',
      'mirror-uri': first?.mirror?.uri,
      'mirror-result': first?.mirror ? (!first.mirror.ok ? 'failed' : first.mirror.verified ? 'verified' : 'written') : 'none',
      'run-id': run?.runId,
      'globals-uri': globals?.result?.backupUri,
      'globals-role-passwords': globals?.result ? String(globals.result.rolePasswords) : undefined,
      backups: JSON.stringify(outcomes.map((o) => ({ database: o.database, ok: o.ok, error: o.error, backupUri: o.result?.backupUri, manifestUri: o.result?.manifestUri, backupKey: o.result?.objectKey, sha256: o.result?.manifest.object.sha256, sizeBytes: o.result?.manifest.object.sizeBytes, mirror: o.result?.mirror, standby: o.result?.manifest.standby }))),
    });
    const rows = outcomes.map((o) => {
      const r = o.result;
      const mm = r?.manifest;
      return [
        h(`${mm ? `${mm.service}/${mm.environment}/` : ''}${o.database}`),
        o.ok ? '✅' : `❌ ${h(o.error ?? '')}`,
        h(r?.backupUri ?? '-'),
        mm ? `${formatBytes(mm.object.sizeBytes)} (${mm.format}, ${mm.compression.algorithm}${mm.compression.level ? `:${mm.compression.level}` : ''}; ${formatBytes(mm.archiveSizeBytes)} before)` : '-',
        mm ? `<code>${h(mm.object.sha256)}</code>` : '-',
        mm ? formatSeconds(mm.durationMs) : '-',
        mm ? h(`${mm.tables.length} tables, ${mm.tables.reduce((n, t) => n + t.rows, 0)} rows; migration head ${mm.migrationHead?.head ?? '-'}${mm.standby ? `; from a hot standby at ${mm.standby.replayLsn ?? '?'} (replay ${mm.standby.replayPaused ? 'paused' : 'not paused'})` : ''}`) : '-',
        r?.verification ? h(`${r.verification.level}: ${r.verification.ok ? 'OK' : `FAILED: ${r.verification.reason}`}`) : 'not asked',
        r?.mirror ? h(`${r.mirror.uri}: ${!r.mirror.ok ? `FAILED: ${r.mirror.error}` : r.mirror.verified ? 'sha256 OK' : 'written, not re-read'}`) : '-',
      ];
    });
    if (globals) {
      const g = globals.result;
      rows.unshift([
        h(`${g ? `${g.manifest.service}/${g.manifest.environment}/` : ''}@globals (roles, tablespaces)`),
        globals.ok ? '✅' : `❌ ${h(globals.error ?? '')}`,
        h(g?.backupUri ?? '-'),
        g ? formatBytes(g.manifest.object.sizeBytes) : '-',
        g ? `<code>${h(g.manifest.object.sha256)}</code>` : '-',
        g ? formatSeconds(g.manifest.durationMs) : '-',
        g ? h(`${g.manifest.globals?.roles.length ?? 0} roles, ${g.manifest.globals?.tablespaces.length ?? 0} tablespaces; role passwords ${g.rolePasswords ? 'included' : 'NOT included (no pg_authid access)'}`) : '-',
        '-',
        '-',
      ]);
    }
    await core.summary
      .addHeading(run ? `Backups (run ${h(run.runId)})` : 'Backups', 3)
      .addTable([
        ['database', 'result', 'where', 'size', 'sha256', 'duration', 'contents', 'verified', 'mirror'].map((data) => ({ data, header: true })),
        ...rows,
      ])
      .addRaw(first ? `\n\nRestore it:\n\n${markdownCodeBlock(first.restoreCommand, 'sh')}\n` : '')
      .write();
    if (failure) throw failure;
  });
  cancellation.dispose();
  if (cancellation.exitCode() !== undefined) process.exitCode = cancellation.exitCode();
}

await run();
