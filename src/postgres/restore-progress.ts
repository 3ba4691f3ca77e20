import { terminalText } from '../text/sinks.ts';

// Tables done of total while pg_restore runs, from its `--verbose` lines on stderr, and the
// filter that keeps those lines out of the stderr the error classification reads.
//
// The lines (pg_log_info in pg_backup_archiver.c and parallel.c, the same in PostgreSQL 15, 16,
// 17 and 18; checked against pg_restore 15.x's real output):
//   pg_restore: processing item 214 TABLE a                 (leader, before the parallel loop)
//   pg_restore: creating TABLE "public.a"
//   pg_restore: launching item 3346 TABLE DATA a            (leader, parallel restore)
//   pg_restore: processing data for table "public.a"        (the process that loads it)
//   pg_restore: finished item 3346 TABLE DATA a             (leader, parallel restore)
//   pg_restore: executing SEQUENCE SET s
//   pg_restore: while PROCESSING TOC: / from TOC entry 214; 1259 16428 TABLE a postgres
// Errors, warnings, details and hints (`pg_restore: error: …`, `warning:`, `detail:`, `hint:`)
// are printed with or without --verbose, followed by unprefixed lines (`Command was: …`).
//
// The names in these lines come from the archive and are printed raw: a name with a line break
// could forge a line (even a fake `pg_restore: error: …` ahead of the real one). So --verbose is
// only used when no name can hold one ({@link namesAllowVerbose}); names shown are escaped.

/** A table of the manifest: its schema, name and row count (the weights of the percent). */
export interface ProgressTable {
  schema: string;
  table: string;
  rows: number;
}

/** The messages pg_restore prints with or without --verbose: they are kept for the error classification. */
const KEPT = /^pg_restore: (?:error|warning|detail|hint): /;
const DATA_START = /^pg_restore: processing data for table "(.*)"$/;
const FINISHED_DATA = /^pg_restore: finished item (\d+) TABLE DATA (.*)$/;
const LAUNCHED = /^pg_restore: launching item \d+ /;

/**
 * Whether pg_restore's --verbose lines can be told apart from its other output for this archive:
 * no schema or table name of the manifest, and no tag of the archive's TOC (when read raw:
 * src/postgres/archive-offsets.ts `readArchiveToc`; `pg_restore --list` replaces line breaks
 * by spaces, so it cannot tell), holds a line break.
 */
export function namesAllowVerbose(tables: { schema: string; table: string }[], tocTags: string[] = []): boolean {
  const breaks = /[\r\n]/;
  return !tables.some((t) => breaks.test(t.schema) || breaks.test(t.table)) && !tocTags.some((t) => breaks.test(t));
}

/** A name for a progress line: quoted, at most 60 characters, control characters escaped (src/text/sinks.ts). */
export function shownTableName(qualified: string): string {
  return terminalText(JSON.stringify(qualified.length > 60 ? `${qualified.slice(0, 59)}…` : qualified));
}

/**
 * Counts tables done of total from pg_restore's --verbose lines. Serial restore: a table's data
 * is done when the next item starts (`processing data` of the next table, `creating INDEX`…) or
 * the run ends; parallel restore: at `finished item N TABLE DATA`. The fraction is weighted by
 * the manifest's row counts (+1 per table, so empty tables count too).
 */
export class RestoreTableProgress {
  readonly total: number;
  private done = 0;
  private doneWeight = 0;
  private readonly totalWeight: number;
  /** Rows by qualified name and by bare name (a parallel `finished item` names the table without its schema). */
  private readonly rowsByName = new Map<string, number>();
  private readonly rowsByTag = new Map<string, number[]>();
  private parallel = false;
  private open: string | undefined;
  /** The table whose data started last (qualified, raw: {@link current} escapes it). */
  private last: string | undefined;
  private postData = false;

  constructor(tables: ProgressTable[]) {
    this.total = tables.length;
    this.totalWeight = tables.reduce((s, t) => s + t.rows + 1, 0);
    for (const t of tables) {
      this.rowsByName.set(`${t.schema}.${t.table}`, t.rows);
      const list = this.rowsByTag.get(t.table) ?? [];
      list.push(t.rows);
      this.rowsByTag.set(t.table, list);
    }
  }

  /** Takes one stderr line; returns true when it was a --verbose progress line (to be left out of the kept stderr). */
  line(text: string): boolean {
    if (!text.startsWith('pg_restore: ') || KEPT.test(text)) return false;
    if (LAUNCHED.test(text)) this.parallel = true;
    const finished = FINISHED_DATA.exec(text);
    if (finished) {
      const rows = this.rowsByTag.get(finished[2]!)?.shift();
      this.finish(rows);
      return true;
    }
    const start = DATA_START.exec(text);
    if (!this.parallel && this.open !== undefined) {
      this.finish(this.rowsByName.get(this.open));
      this.open = undefined;
    }
    if (start) {
      this.last = start[1]!;
      if (!this.parallel) this.open = start[1]!;
    } else if (this.done > 0 && this.done >= this.total) this.postData = true;
    return true;
  }

  private finish(rows: number | undefined): void {
    if (this.done >= this.total) return;
    this.done++;
    this.doneWeight += (rows ?? 0) + 1;
  }

  /** Tables whose data is loaded. */
  get tablesDone(): number {
    return this.done;
  }

  /** The fraction (0–1) of the rows (+1 per table) loaded. */
  get fraction(): number {
    return this.totalWeight ? this.doneWeight / this.totalWeight : 1;
  }

  /** What the line shows after the counts: the table loading last (escaped), or the post-data phase. */
  get detail(): string | undefined {
    if (this.postData || (this.total > 0 && this.done >= this.total)) return 'indexes and constraints';
    return this.last !== undefined ? `loading ${shownTableName(this.last)}` : undefined;
  }
}

/**
 * An execa stderr transform (a generator over lines) for a pg_restore run with --verbose: each
 * progress line goes to `progress` (and `onLine` afterwards) and is left out of the stderr that
 * execa keeps, so the error classification (target.ts `classifyRestoreFailure`, processes.ts
 * `describeFailure`) reads what pg_restore prints without --verbose. Unprefixed lines right
 * after a progress line (a name's continuation) are left out too. `serial` (one job, e.g. a
 * `--single-transaction` restore): kept lines followed by another progress line are dropped —
 * with --exit-on-error a serial pg_restore stops at its first error, so such lines were no error.
 */
export function pgRestoreStderrFilter(progress: RestoreTableProgress, options: { serial?: boolean; onLine?: () => void } = {}) {
  let afterProgress = false;
  let pending: string[] = [];
  return {
    *transform(line: string): Generator<string> {
      if (progress.line(line)) {
        afterProgress = true;
        if (options.serial) pending = [];
        options.onLine?.();
        return;
      }
      if (afterProgress && !line.startsWith('pg_restore: ')) return;
      afterProgress = false;
      if (options.serial) pending.push(line);
      else yield line;
    },
    *final(): Generator<string> {
      yield* pending;
      pending = [];
    },
  };
}
