import type { Command } from 'commander';
import { loadPublicKey } from '../../evidence/dsse.ts';
import { verifyEvidence } from '../../evidence/verify.ts';
import { terminalText } from '../../evidence/text.ts';
import { UsageError } from '../../errors.ts';
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
  return evidence;
}
