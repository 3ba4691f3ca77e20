import { rename, rm, writeFile } from 'node:fs/promises';
import type { DrillTrust } from '../evidence/check.ts';
import path from 'node:path';
import type { BackupFilter } from '../backup/catalog.ts';
import { parseDuration } from '../duration.ts';
import { parseMaxClockSkew } from '../backup/clock.ts';
import { UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { openStorage, type S3Settings, type Storage } from '../storage/index.ts';
import { chartLibrary } from '../status/chart-library.ts';
import { renderHtml } from '../status/html.ts';
import { renderMarkdown } from '../status/markdown.ts';
import { DEFAULT_MAX_AGE_MS, collectFleetStatus, type FleetStatus } from '../status/model.ts';

/** Where `--publish` puts the page, relative to the location: `status/index.html`. */
export const PUBLISHED_PAGE_KEY = 'status/index.html';

/** Options of {@link status}. */
export interface StatusOptions {
  /** `s3://BUCKET/PREFIX` or `file:///DIR`: every service, environment and database under it. */
  from: string;
  filter?: BackupFilter;
  /** A database whose newest complete backup is older is stale (`30h`, `2d`). Default 30 h. */
  maxAge?: string;
  /** The RTO budget for drills whose report records none (`30m`). */
  rtoBudget?: string;
  /**
   * A backup, drill report or verify record stamped later than now + this (`10m`, the default)
   * is `future`: not counted, named, and the status fails (src/backup/clock.ts).
   */
  maxClockSkew?: string;
  /** Write the self-contained HTML page to this file. */
  htmlFile?: string;
  /** Write the Markdown version (job summary) to this file. */
  markdownFile?: string;
  /** Also put the HTML page at `status/index.html` under `from` (needs PutObject there). */
  publish?: boolean;
  s3?: S3Settings;
  logger: Logger;
  /** The clock (tests). */
  now?: () => Date;
  /** The storage to use instead of opening `from` (tests). */
  storage?: Storage;
  /** `--require-signed-drills`: only drill reports whose signed statement verifies count. */
  drillTrust?: DrillTrust;
}

/** The outcome of {@link status}: the fleet, and where its views went. */
export interface StatusResult {
  fleet: FleetStatus;
  htmlFile?: string;
  markdownFile?: string;
  /** The published page's URI, when `publish` succeeded. */
  publishedUri?: string;
}

/**
 * The state of every backup under a location: per database the newest backup and its age, size
 * and trend, complete and proven backups kept, last verify and last drill with RTO — see
 * {@link collectFleetStatus}. `fleet.ok` is false when a database is stale, its last drill
 * failed, or it holds a record stamped in the future or misdated (the CLI exits 1). Optionally writes an HTML page and a Markdown summary (each file
 * written whole or not at all) and publishes the page into the bucket; a failed publish is a
 * warning, the status stands.
 * @throws UsageError for a bad duration, an unwritable output file, or a location holding no
 *   backup and no drill report (a wrong `--from` is the likely cause).
 */
export async function status(options: StatusOptions): Promise<StatusResult> {
  const maxAgeMs = options.maxAge === undefined ? DEFAULT_MAX_AGE_MS : parseDuration(options.maxAge, '--max-age');
  if (maxAgeMs <= 0) throw new UsageError(`--max-age ${JSON.stringify(options.maxAge)} must be longer than 0`);
  const rtoBudgetMs = options.rtoBudget === undefined ? undefined : parseDuration(options.rtoBudget, '--rto-budget');
  if (rtoBudgetMs !== undefined && rtoBudgetMs <= 0) throw new UsageError(`--rto-budget ${JSON.stringify(options.rtoBudget)} must be longer than 0`);
  for (const file of [options.htmlFile, options.markdownFile]) if (file !== undefined && !file.trim()) throw new UsageError('an output file name is empty: give a path, e.g. --html status.html');
  const maxClockSkewMs = parseMaxClockSkew(options.maxClockSkew);
  const storage = options.storage ?? openStorage(options.from, options.s3);

  const fleet = await collectFleetStatus(storage, { filter: options.filter, maxAgeMs, rtoBudgetMs, maxClockSkewMs, now: options.now?.(), drillTrust: options.drillTrust });
  if (fleet.databases.length === 0) {
    const scope = [options.filter?.service, options.filter?.environment, options.filter?.database].filter(Boolean).join('/');
    throw new UsageError(`no backups and no drill reports under ${storage.url}${scope ? ` for ${scope}` : ''}: check --from (it is the prefix the dumps were written to)`);
  }
  const result: StatusResult = { fleet };
  const html = options.htmlFile !== undefined || options.publish ? renderHtml(fleet, await chartLibrary()) : undefined;
  if (options.htmlFile !== undefined) result.htmlFile = await writeWhole(options.htmlFile, html!);
  if (options.markdownFile !== undefined) result.markdownFile = await writeWhole(options.markdownFile, renderMarkdown(fleet));
  if (options.publish) {
    try {
      await storage.put(PUBLISHED_PAGE_KEY, html!, 'text/html; charset=utf-8');
      result.publishedUri = storage.uri(PUBLISHED_PAGE_KEY);
      options.logger.info(`published ${result.publishedUri}`);
    } catch (err) {
      options.logger.warn(`status page not published to ${storage.uri(PUBLISHED_PAGE_KEY)}: ${messageOf(err)}`);
    }
  }
  return result;
}

/**
 * Writes a file through a temporary name and a rename, so a reader never sees half a page.
 * @returns the absolute path.
 * @throws UsageError when the directory does not exist or is not writable.
 */
async function writeWhole(file: string, text: string): Promise<string> {
  const target = path.resolve(file);
  const temp = `${target}.${process.pid}.tmp`;
  try {
    await writeFile(temp, text);
    await rename(temp, target);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw new UsageError(`cannot write ${file}: ${messageOf(err)}: give a path in a writable directory`);
  }
  return target;
}
