import type { Command } from 'commander';
import { terminalText } from '../../text/sinks.ts';
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { UsageError, messageOf } from '../../errors.ts';
import { parseDuration } from '../../duration.ts';
import { checkLocation, openStorage } from '../../storage/index.ts';
import { stderrLogger } from '../../log.ts';
import { EXIT, filterOf, filterOptions, printJson, s3Settings, storageOptions, type CliContext, type CommonFlags } from '../common.ts';

/** `pg-backup evidence`: `verify` (signed drill results) and `report` (the quarterly evidence report). */
export function addEvidenceCommand(program: Command, { signal, setExitCode }: CliContext): Command {
  const evidence = program.command('evidence').description('evidence for audits: check the signed drill results (verify), write the quarterly evidence report (report)');
  storageOptions(
    filterOptions(
      evidence
        .command('verify')
        .description('check every drill report\'s signed in-toto statement: signature by a trusted key, predicate equal to the stored report, subject equal to the backup\'s manifest sha256; exit 1 when one is not valid')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .option('--backup <key>', 'only the drills of this backup (a key or id from "pg-backup list", or latest)')
        .option('--public-key <file>', 'Ed25519 public key (PEM) of the drill\'s --sign-key (openssl pkey -in key.pem -pubout)')
        .option('--github-owner <org>', 'check GitHub artifact attestations (actions/attest in the drill workflow) with "gh attestation verify --owner ORG" (needs gh and GitHub)'),
    ).option('--json', 'print the verdicts as JSON on stdout'),
  ).action(async (flags: CommonFlags & { from: string; backup?: string; publicKey?: string; githubOwner?: string }) => {
    if (flags.publicKey && flags.githubOwner) throw new UsageError('give --public-key or --github-owner, not both');
    const [{ verifyEvidence }, { loadPublicKey }] = await Promise.all([import('../../evidence/verify.ts'), import('../../evidence/dsse.ts')]);
    const result = await verifyEvidence({
      from: flags.from,
      filter: filterOf(flags),
      backup: flags.backup,
      trust: flags.publicKey ? { keys: [loadPublicKey(flags.publicKey)] } : undefined,
      githubOwner: flags.githubOwner,
      s3: s3Settings(flags, signal),
      logger: stderrLogger(flags.json),
      signal,
    });
    if (flags.json) printJson(result);
    else {
      const width = Math.max(0, ...result.reports.map((r) => r.label.length));
      for (const r of result.reports) {
        process.stdout.write(terminalText(`${r.label.padEnd(width)}  ${r.service}/${r.environment}/${r.database}  ${r.backupId}  drill ${r.at}${r.drillOk === undefined ? '' : r.drillOk ? ' OK' : ' FAILED'}  ${r.reportUri}${r.detail ? `  (${r.detail})` : ''}`) + '\n');
      }
    }
    if (!result.ok) {
      if (!flags.json) process.stderr.write(`${terminalText(`evidence verify failed: ${result.reason}`)}\n`);
      setExitCode(EXIT.failed);
    }
  });
  storageOptions(
    filterOptions(
      evidence
        .command('report')
        .description('the quarterly evidence report: per database the backups, verify results, drills (RTO against budget, RPO, signature state) and failures with how long they stayed open, mapped to SOC 2 A1.2/A1.3 and ISO 27001 A.8.13/A.5.30')
        .requiredOption('--from <url>', 's3://BUCKET/PREFIX or file:///DIR')
        .requiredOption('--quarter <YYYY-Qn>', 'the calendar quarter (UTC), e.g. 2026-Q4')
        .option('--html', 'a self-contained HTML page (prints to PDF)')
        .option('--markdown', 'Markdown (the default)')
        .option('--json', 'the report\'s data as JSON')
        .option('--output <file>', 'write it to this file (whole or not at all) instead of stdout')
        .option('--public-key <file>', 'check each drill\'s signature with this Ed25519 public key (else only whether it is signed)')
        .option('--rto-budget <duration>', 'RTO budget for drills whose report records none (e.g. 30m)'),
    ),
  ).action(async (flags: CommonFlags & { from: string; quarter: string; html?: boolean; markdown?: boolean; output?: string; publicKey?: string; rtoBudget?: string }) => {
    const formats = [flags.html && 'html', flags.markdown && 'markdown', flags.json && 'json'].filter(Boolean);
    if (formats.length > 1) throw new UsageError(`give one of --html, --markdown and --json (got ${formats.map((f) => `--${f}`).join(', ')})`);
    if (flags.output !== undefined && !flags.output.trim()) throw new UsageError('--output is empty: give a file name, e.g. --output evidence-2026-Q4.html');
    const [{ collectQuarterlyEvidence, parseQuarter }, { renderQuarterlyHtml, renderQuarterlyMarkdown }, { loadPublicKey }] = await Promise.all([
      import('../../evidence/quarterly.ts'),
      import('../../evidence/quarterly-render.ts'),
      import('../../evidence/dsse.ts'),
    ]);
    const quarter = parseQuarter(flags.quarter);
    const rtoBudgetMs = flags.rtoBudget === undefined ? undefined : parseDuration(flags.rtoBudget, '--rto-budget');
    const trust = flags.publicKey ? { keys: [loadPublicKey(flags.publicKey)] } : undefined;
    const storage = openStorage(flags.from, s3Settings(flags, signal));
    await checkLocation(storage);
    const report = await collectQuarterlyEvidence(storage, { quarter, filter: filterOf(flags), trust, rtoBudgetMs });
    const text = flags.html ? renderQuarterlyHtml(report) : flags.json ? `${JSON.stringify(report, null, 2)}\n` : renderQuarterlyMarkdown(report);
    if (flags.output) {
      await writeWholeFile(flags.output, text);
      process.stderr.write(`wrote ${flags.output}\n`);
    } else process.stdout.write(text);
    const gaps = report.controls.filter((c) => c.state === 'gaps').map((c) => `${c.framework} ${c.control}`);
    process.stderr.write(`${terminalText(`${report.quarter}: ${report.databases.length} database(s); ${gaps.length ? `gaps in ${gaps.join(', ')}` : 'every control row met'}`)}\n`);
  });
  return evidence;
}

/**
 * Writes `text` to `file` whole or not at all: into a temporary file beside it, then renamed.
 * @throws UsageError when the directory is not writable.
 */
async function writeWholeFile(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, text);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new UsageError(`cannot write ${file}: ${messageOf(err)}`);
  }
}
