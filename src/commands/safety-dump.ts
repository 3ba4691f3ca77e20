import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { safetyDumpLocation } from '../backup/safety.ts';
import type { S3Settings } from '../storage/index.ts';
import { dump } from './dump.ts';

/** Where a safety dump went, and the command that restores it. */
export interface SafetyDump {
  backupUri: string;
  manifestUri: string;
  restoreCommand: string;
}

/**
 * The dump taken before a command replaces data in a user's database (`restore --clean`,
 * `diff --apply`): `dump` of `databaseUrl` (only `tables`, psql patterns, when given) into the
 * safety folder of `from` (src/backup/safety.ts), under `service`/`environment`, with `reason` in
 * its manifest. Logs where it goes and where it went.
 * @throws the dump's own error when `signal` fired (a cancelled run); otherwise UsageError (a user mistake) or
 *   CheckFailedError, both with `refused(<the dump's error>)` as their one line: nothing was changed.
 */
export async function takeSafetyDump(o: { databaseUrl: string; from: string; service: string; environment: string; tables?: string[]; s3?: S3Settings; logger: Logger; signal?: AbortSignal; what: string; why: string; reason: string; refused: (cause: string) => string }): Promise<SafetyDump> {
  o.logger.info(`safety dump of ${o.what} into ${safetyDumpLocation(o.from.replace(/\/+$/, ''))} ${o.why}`);
  try {
    const taken = await dump({ databaseUrl: o.databaseUrl, to: safetyDumpLocation(o.from), service: o.service, environment: o.environment, tables: o.tables, s3: o.s3, logger: o.logger, signal: o.signal, context: { reason: o.reason } });
    o.logger.info(`safety dump: ${taken.backupUri}`);
    return { backupUri: taken.backupUri, manifestUri: taken.manifestUri, restoreCommand: taken.restoreCommand };
  } catch (err) {
    if (o.signal?.aborted) throw err; // a cancelled run: its own error, not a refusal
    const line = o.refused(messageOf(err));
    throw err instanceof UsageError ? new UsageError(line) : new CheckFailedError(line);
  }
}
