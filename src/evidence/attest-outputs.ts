import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { openStorage, type S3Settings } from '../storage/index.ts';

/**
 * What `actions/attest` needs to attest a drill result in GitHub (the drill workflow's `attest`
 * input): the subject — the dump object's key and `sha256:<manifest sha256>`, as in the
 * statement pg-backup writes itself — and the stored report as compact JSON, the predicate.
 * `gh attestation verify <downloaded object> --owner ORG --predicate-type
 * https://pg-backup-actions.dev/drill/v1` then finds it (`evidence verify --github-owner`).
 * @returns undefined when the drill identified no backup or wrote no report (nothing to attest).
 */
export async function attestationOutputs(
  from: string,
  s3: S3Settings | undefined,
  result: { backupUri?: string; drillReportUri?: string; manifest?: { object: { sha256: string } } },
  logger: Logger,
): Promise<{ subjectName: string; subjectDigest: string; report: string } | undefined> {
  if (!result.backupUri || !result.drillReportUri || !result.manifest) return undefined;
  const storage = openStorage(from, { ...s3, signal: undefined });
  const subjectName = storage.keyOf(result.backupUri);
  const reportKey = storage.keyOf(result.drillReportUri);
  if (!subjectName || !reportKey) return undefined;
  try {
    const report = JSON.stringify(JSON.parse(await storage.getText(reportKey)));
    return { subjectName, subjectDigest: `sha256:${result.manifest.object.sha256}`, report };
  } catch (err) {
    logger.warn(`nothing to attest: the drill report ${result.drillReportUri} could not be read back: ${messageOf(err)}`);
    return undefined;
  }
}
