import type { Command } from 'commander';
import { MAX_CLOCK_SKEW_HELP } from '../../backup/clock.ts';
import type { DiffExample, DiffResult, DiffValue } from '../../commands/diff.ts';
import { UsageError, messageOf } from '../../errors.ts';
import { terminalText } from '../../text/sinks.ts';
import { EXIT, filterOptions, identityOption, printJson, readerOptions, storageOptions, type CliContext, type CommonFlags, QUIET_HELP } from '../common.ts';

/**
 * `pg-backup diff`: one table of a backup against the live table, row by row, like diff(1):
 * exit 0 identical, 1 different, 2 trouble (a bad option, a table missing on either side or
 * without a key, a backup that does not match its manifest, a failed repair). With `--apply`,
 * the exit code tells the table's state afterwards: 0 once the repair made it equal to the
 * backup, 1 while extra rows were left alone.
 */
export function addDiffCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  return storageOptions(identityOption(
    filterOptions(
      program
        .command('diff')
        .description('compare one table of a backup with the live table by key (rows missing, extra, changed), in a throwaway cluster; write a repair script (--sql-file) or apply it (--apply, after a safety dump). Exit 0 identical, 1 different, 2 error')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .requiredOption('--backup <key>', 'a key or id from "pg-backup list", or latest (with --service/--environment/--database)')
        .requiredOption('--table <schema.table>', 'the table to compare, e.g. public.orders or "Sales"."Order Lines"')
        .requiredOption('--target-url <url>', 'postgresql://… of the live database holding the table')
        .option('--sql-file <file>', 'write a repair script for review: INSERTs of missing rows, UPDATEs back to the backup\'s values, one transaction; apply with psql -f')
        .option('--include-extra', 'the repair also deletes the live rows the backup lacks (default: left alone)')
        .option('--apply', 'run the repair on the live database in one transaction, after a safety dump of the table into --from')
        .option('--examples <n>', 'example rows shown per kind of difference', '5')
        .option('--max-clock-skew <duration>', MAX_CLOCK_SKEW_HELP, '10m')
        .option('--work-dir <dir>', 'where the archive and the throwaway cluster live (default: $PG_BACKUP_WORK_DIR or the temp dir)')
        .option('--allow-same-os-user', 'without root or passwordless sudo, run the throwaway PostgreSQL as your own OS user anyway (environment scrubbed; code restored from the backup could read your files): otherwise refused'),
    ).option('--json', 'print the result as JSON on stdout').option('--quiet', QUIET_HELP),
  )).action(async (flags: CommonFlags & { from: string; backup: string; table: string; targetUrl: string; sqlFile?: string; includeExtra?: boolean; apply?: boolean; examples: string; maxClockSkew: string; workDir?: string; allowSameOsUser?: boolean }) => {
    const examples = Number(flags.examples);
    if (!Number.isInteger(examples) || examples < 0 || examples > 1000) throw new UsageError(`--examples must be a whole number from 0 to 1000 (got ${JSON.stringify(flags.examples)})`);
    const { diff } = await import('../../commands/diff.ts');
    let result: DiffResult;
    try {
      result = await diff({
        ...readerOptions(flags, signal),
        from: flags.from,
        backup: flags.backup,
        table: flags.table,
        targetUrl: flags.targetUrl,
        sqlFile: flags.sqlFile,
        includeExtra: flags.includeExtra,
        apply: flags.apply,
        examples,
        maxClockSkew: flags.maxClockSkew,
        workDir: flags.workDir,
        allowSameOsUser: flags.allowSameOsUser,
      });
    } catch (err) {
      // Like diff(1): trouble is exit 2, whatever its kind (1 means "different").
      if (err instanceof UsageError || signal.aborted) throw err;
      throw new UsageError(messageOf(err));
    }
    if (flags.json) printJson(result);
    else process.stdout.write(describeDiff(result));
    const stillDifferent = result.applied ? result.counts.extra > 0 && !flags.includeExtra : !result.identical;
    setExitCode(stillDifferent ? EXIT.failed : EXIT.ok);
  });
}

/** A value for the terminal: NULL, or the text quoted, controls escaped, cut at 60 characters. */
function shownValue(v: DiffValue): string {
  if (v === null) return 'NULL';
  const cut = v.length > 60 ? `${v.slice(0, 59)}…` : v;
  return `'${terminalText(cut)}'`;
}

function shownRecord(r: Record<string, DiffValue> | undefined): string {
  return Object.entries(r ?? {}).map(([k, v]) => `${terminalText(k)}=${shownValue(v)}`).join(' ');
}

function shownExample(e: DiffExample, kind: 'missing' | 'extra' | 'changed'): string {
  const key = shownRecord(e.key);
  if (kind === 'changed') return `  ${key}: ${(e.changes ?? []).map((c) => `${terminalText(c.column)} ${shownValue(c.backup)} in the backup, ${shownValue(c.live)} live`).join('; ')}\n`;
  const values = shownRecord(e.values);
  return `  ${key}${values ? `: ${values}` : ''}\n`;
}

/** The human summary of a diff (stdout): counts, examples, the script, what was applied. Every value from either database escaped for the terminal. */
export function describeDiff(r: DiffResult): string {
  const table = terminalText(`${r.table.schema}.${r.table.table}`);
  const by = `${r.key.kind} ${terminalText(r.key.columns.join(', '))}`;
  const out: string[] = [];
  if (r.identical) {
    out.push(`${table}: identical to backup ${terminalText(r.backupId)} (${r.counts.backupRows} rows, matched by ${by})\n`);
  } else {
    out.push(`${table}: ${r.counts.missing} missing, ${r.counts.changed} changed, ${r.counts.extra} extra against backup ${terminalText(r.backupId)} (backup ${r.counts.backupRows} rows, live ${r.counts.liveRows}; matched by ${by})\n`);
    const sections: [keyof DiffResult['examples'], string][] = [
      ['missing', 'missing (in the backup, not live)'],
      ['changed', 'changed (same key, other values)'],
      ['extra', 'extra (live only)'],
    ];
    for (const [kind, title] of sections) {
      const list = r.examples[kind];
      if (!list.length) continue;
      const total = r.counts[kind];
      out.push(`${title}${total > list.length ? `, first ${list.length} of ${total}` : ''}:\n`);
      for (const e of list) out.push(shownExample(e, kind));
    }
  }
  if (r.sqlFile && r.repair) {
    out.push(`repair script: ${terminalText(r.sqlFile)} (${r.repair.inserts} INSERT, ${r.repair.updates} UPDATE, ${r.repair.deletes} DELETE${r.repair.extraLeftAlone ? `; ${r.repair.extraLeftAlone} extra rows left alone, --include-extra deletes them` : ''}); review it, then: psql -X -v ON_ERROR_STOP=1 -f FILE "$TARGET_DATABASE_URL"\n`);
  }
  if (r.applied) {
    out.push(`applied in one transaction: ${r.applied.inserted} inserted, ${r.applied.updated} updated, ${r.applied.deleted} deleted\n`);
    if (r.applied.safetyDump) out.push(`safety dump of the table before the repair: ${terminalText(r.applied.safetyDump.backupUri)}\n`);
  }
  return out.join('');
}
