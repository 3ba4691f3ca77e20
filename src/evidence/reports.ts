import { filterPrefix, type BackupFilter } from '../backup/catalog.ts';
import { DRILL_STAMP, DRILLS_FOLDER, decodeSegment } from '../backup/keys.ts';
import type { Storage } from '../storage/index.ts';

/** One drill report in the bucket, as its key names it. */
export interface DrillReportRef {
  key: string;
  service: string;
  environment: string;
  /** The database, or the stanza of a physical drill. */
  database: string;
  /** The backup id (or pgBackRest label) in the key; `unknown` when the drill could not identify it. */
  backupId: string;
  /** `YYYYMMDDTHHMMSS(.mmm)Z`. */
  stamp: string;
  /** The stamp as a date (UTC). */
  at: Date;
}

/** `drills/<service>/<environment>/<name>/<YYYY>-Q<n>/<backup id>-drill-<stamp>.json`. */
const REPORT_KEY = new RegExp(String.raw`^${DRILLS_FOLDER}\/([^/]+)\/([^/]+)\/([^/]+)\/\d{4}-Q[1-4]\/(.+)-drill-(${DRILL_STAMP})\.json$`);

/** The Date of a drill stamp (`20261201T030000.123Z` or `20261201T030000Z`). */
export function stampDate(stamp: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d{3}))?Z$/.exec(stamp)!;
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, +(m[7] ?? 0)));
}

/**
 * Every drill report under `drills/` matching `filter`, oldest first. Keys whose folder names are
 * not valid percent-encoding are skipped. Needs List.
 */
export async function listDrillReports(storage: Storage, filter: BackupFilter = {}): Promise<DrillReportRef[]> {
  const prefix = `${DRILLS_FOLDER}/${filterPrefix(filter)}`;
  const refs: DrillReportRef[] = [];
  for await (const obj of storage.list(prefix)) {
    const m = REPORT_KEY.exec(obj.key);
    if (!m) continue;
    let labels;
    try {
      labels = { service: decodeSegment(m[1]!), environment: decodeSegment(m[2]!), database: decodeSegment(m[3]!) };
    } catch {
      continue;
    }
    if ((filter.service && labels.service !== filter.service) || (filter.environment && labels.environment !== filter.environment) || (filter.database && labels.database !== filter.database)) continue;
    refs.push({ key: obj.key, ...labels, backupId: m[4]!, stamp: m[5]!, at: stampDate(m[5]!) });
  }
  return refs.sort((a, b) => a.at.getTime() - b.at.getTime() || (a.key < b.key ? -1 : 1));
}
