import { Transform, type Readable } from 'node:stream';
import { formatBytes, formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';
import type { Storage } from '../storage/index.ts';

// Progress and ETA of the long steps (verify, drill, restore, diff): bytes of the archive read
// of its size, tables done of total, the percent and an ETA. One updating line on a terminal;
// in a log (the GitHub Actions runner, any non-TTY stderr) one line every 10 s or every 10 %,
// whichever comes first, with the elapsed time. `--quiet` (a quiet logger) turns it off. The
// dump's own byte counter is src/backup/progress.ts; the pg_restore side (its --verbose TOC
// lines) is src/postgres/restore-progress.ts.

/** In a log, a progress line at least this often while a step runs (ms). */
export const LOG_EVERY_MS = 10_000;
/** In a log, a progress line too whenever the percent crossed another multiple of this. */
export const LOG_EVERY_PERCENT = 10;
/** On a terminal, how often the line is redrawn (ms). */
const REDRAW_MS = 500;
/** How often a log reporter looks at the clock for the 10 s rule (ms). */
const CLOCK_TICK_MS = 1_000;

/**
 * When a progress line is due in a log: {@link LOG_EVERY_MS} after the last one, or as soon as
 * the percent crossed the next multiple of {@link LOG_EVERY_PERCENT} (a step that jumps over
 * several multiples at once gets one line). `now` is injected (ms, monotonic enough: Date.now).
 */
export class ProgressThrottle {
  private lastAt: number;
  private nextPercent: number;
  private readonly now: () => number;
  private readonly everyMs: number;
  private readonly everyPercent: number;
  constructor(now: () => number = Date.now, everyMs = LOG_EVERY_MS, everyPercent = LOG_EVERY_PERCENT) {
    this.now = now;
    this.everyMs = everyMs;
    this.everyPercent = everyPercent;
    this.lastAt = now();
    this.nextPercent = everyPercent;
  }

  /**
   * Whether a line is due for `percent` (0–100, undefined when the step has no known total:
   * then only the time rule applies). When it says yes, it counts the line as written.
   */
  due(percent?: number): boolean {
    const t = this.now();
    const byPercent = percent !== undefined && percent >= this.nextPercent;
    if (!byPercent && t - this.lastAt < this.everyMs) return false;
    this.lastAt = t;
    if (percent !== undefined && percent >= this.nextPercent) this.nextPercent = (Math.floor(percent / this.everyPercent) + 1) * this.everyPercent;
    return true;
  }

  /** Starts a new step: the percent rule begins again at the first multiple; the clock counts from now. */
  restart(): void {
    this.lastAt = this.now();
    this.nextPercent = this.everyPercent;
  }
}

/** One past drill, as far as the ETA needs it (a {@link DrillHistoryEntry} of src/commands/drill-report.ts). */
export interface DrillTiming {
  ok: boolean;
  /** Its recovery time (ms): from the download's start to the checks' end. */
  rtoMs: number;
  /** The size of the archive it restored (the manifest's `archiveSizeBytes`); undefined in records older than this field. */
  archiveSizeBytes?: number;
  backupId?: string;
}

/** What a database's drill history says about its restore speed: the median RTO per archive byte, and how many drills it comes from. */
export interface DrillRate {
  msPerByte: number;
  drills: number;
}

/**
 * The median RTO per archive byte of the successful drills in `history` that know their
 * archive's size (a record without `archiveSizeBytes` counts when it drilled `current.id`, whose
 * size is known). Undefined when no drill qualifies. The median, not the mean: one drill slowed
 * by a busy runner does not move it.
 */
export function drillRate(history: DrillTiming[], current?: { id: string; archiveSizeBytes: number }): DrillRate | undefined {
  const rates: number[] = [];
  for (const d of history) {
    const size = d.archiveSizeBytes ?? (current && d.backupId === current.id ? current.archiveSizeBytes : undefined);
    if (d.ok && d.rtoMs > 0 && size && size > 0) rates.push(d.rtoMs / size);
  }
  if (!rates.length) return undefined;
  rates.sort((a, b) => a - b);
  const mid = rates.length >> 1;
  const msPerByte = rates.length % 2 ? rates[mid]! : (rates[mid - 1]! + rates[mid]!) / 2;
  return { msPerByte, drills: rates.length };
}

/**
 * Remaining time (ms) from the drill history: `rate × archive bytes − elapsed`. Undefined when
 * the step already took longer than its history predicts (the caller then falls back to
 * {@link etaFromThroughput}).
 */
export function etaFromHistory(rate: DrillRate, archiveSizeBytes: number, elapsedMs: number): number | undefined {
  const remaining = rate.msPerByte * archiveSizeBytes - elapsedMs;
  return remaining > 0 ? remaining : undefined;
}

/**
 * Remaining time (ms) at the rate so far: `elapsed × (1 − f) / f` for the fraction `f` (0–1) of
 * the step done. Undefined before 1 % or 1 s, where the rate says little.
 */
export function etaFromThroughput(fraction: number, elapsedMs: number): number | undefined {
  if (!(fraction >= 0.01) || elapsedMs < 1000) return undefined;
  if (fraction >= 1) return 0;
  return (elapsedMs * (1 - fraction)) / fraction;
}

/** An ETA as a person reads it: `ETA 40 s`, `ETA 4 min`, `ETA 1 h 5 min` (rounded up to 10 s below a minute, to the minute above). */
export function formatEta(ms: number): string {
  if (ms < 60_000) return `ETA ${Math.max(10, Math.ceil(ms / 10_000) * 10)} s`;
  const minutes = Math.ceil(ms / 60_000);
  if (minutes < 60) return `ETA ${minutes} min`;
  return `ETA ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** What a step reports: its archive bytes and tables, as far as it knows them. All optional. */
export interface ProgressCounts {
  /** Bytes of the archive read so far (the stored object, as downloaded). */
  bytes?: number;
  /** The stored object's size (the manifest's `object.sizeBytes`). */
  totalBytes?: number;
  tablesDone?: number;
  tablesTotal?: number;
  /** The fraction (0–1) of the tables' rows loaded, when row counts are known (weights the percent). */
  tablesFraction?: number;
  /** A short free text after the counts, e.g. `indexes and constraints`; the caller escapes names in it. */
  detail?: string;
}

/** Options of {@link startStepProgress}. */
export interface StepProgressOptions {
  /** What runs, e.g. `drill app` or `restore app`: the line's start. */
  label: string;
  logger: Logger;
  /** The archive's size (the manifest's `archiveSizeBytes`): with `rate`, the ETA of the whole step. */
  archiveSizeBytes?: number;
  /** The database's drill history ({@link drillRate}): the ETA says "from N drills". */
  rate?: DrillRate;
  /** Injected clock (ms) for tests; default Date.now. */
  now?: () => number;
  /** Terminal or log; default: a terminal when the logger can redraw (`progress`) and stderr is a TTY. */
  tty?: boolean;
}

/** A running progress report of one step; see {@link startStepProgress}. */
export interface StepProgress {
  /** Enters a phase (`download`, `restore`): its counts start empty and its percent rule from 10 %. */
  phase(name: string, counts?: ProgressCounts): void;
  /** Updates the current phase's counts; in a log, writes a line when one is due by the 10 % rule. */
  update(counts: ProgressCounts): void;
  /** Adds downloaded bytes to the current phase. */
  addBytes(n: number): void;
  /** Sets the drill history's rate once it is known (it is read while the step already runs). */
  setRate(rate: DrillRate | undefined): void;
  /** The current line (what the terminal shows), for tests and summaries. */
  line(): string;
  /** Stops the reporter (clears the terminal line). Safe to call twice. */
  stop(): void;
  /** Whether it reports at all (false for a quiet logger). */
  readonly enabled: boolean;
}

/** A reporter that does nothing: what a quiet run gets. */
export const NO_PROGRESS: StepProgress = { phase: () => undefined, update: () => undefined, addBytes: () => undefined, setRate: () => undefined, line: () => '', stop: () => undefined, enabled: false };

/** Percent (0–100, whole) of a phase from its counts: bytes first, else the tables' rows, else the tables. */
export function percentOf(c: ProgressCounts): number | undefined {
  let f: number | undefined;
  if (c.totalBytes && c.bytes !== undefined) f = c.bytes / c.totalBytes;
  else if (c.tablesFraction !== undefined) f = c.tablesFraction;
  else if (c.tablesTotal && c.tablesDone !== undefined) f = c.tablesDone / c.tablesTotal;
  if (f === undefined || !Number.isFinite(f)) return undefined;
  return Math.max(0, Math.min(100, Math.floor(f * 100)));
}

/**
 * The progress line of a phase: `drill app: download 45 % (52.1 MB of 115 MB), 10.0 s elapsed,
 * ETA 4 min (from 12 drills)`, `restore app: restore 63 %, 12 of 40 tables, 1 min 5 s elapsed,
 * ETA 30 s (at the rate so far)`. Elapsed counts from the step's start; the ETA from history
 * covers the whole step, the one from the rate so far the current phase.
 */
export function progressLine(o: { label: string; phase: string; counts: ProgressCounts; elapsedMs: number; phaseElapsedMs: number; rate?: DrillRate; archiveSizeBytes?: number }): string {
  const c = o.counts;
  const percent = percentOf(c);
  const parts: string[] = [];
  const head = `${o.label}: ${o.phase}${percent !== undefined ? ` ${percent} %` : ''}`;
  if (c.totalBytes !== undefined && c.bytes !== undefined) parts.push(`${formatBytes(c.bytes)} of ${formatBytes(c.totalBytes)}`);
  else if (c.bytes !== undefined) parts.push(formatBytes(c.bytes));
  if (c.tablesTotal !== undefined) parts.push(`${c.tablesDone ?? 0} of ${c.tablesTotal} table${c.tablesTotal === 1 ? '' : 's'}`);
  if (c.detail) parts.push(c.detail);
  parts.push(`${formatSeconds(o.elapsedMs)} elapsed`);
  const fromHistory = o.rate && o.archiveSizeBytes ? etaFromHistory(o.rate, o.archiveSizeBytes, o.elapsedMs) : undefined;
  if (fromHistory !== undefined) parts.push(`${formatEta(fromHistory)} (from ${o.rate!.drills} drill${o.rate!.drills === 1 ? '' : 's'})`);
  else {
    const f = percent === undefined ? undefined : (c.totalBytes && c.bytes !== undefined ? c.bytes / c.totalBytes : c.tablesFraction ?? (c.tablesTotal ? (c.tablesDone ?? 0) / c.tablesTotal : undefined));
    const eta = f === undefined ? undefined : etaFromThroughput(f, o.phaseElapsedMs);
    if (eta !== undefined && eta > 0) parts.push(`${formatEta(eta)} for the ${o.phase} (at the rate so far)`);
  }
  return `${head}, ${parts.join(', ')}`;
}

/**
 * Starts the progress report of one long step (verify, drill, restore, diff). The step calls
 * {@link StepProgress.phase} as it enters each phase and {@link StepProgress.update} /
 * {@link StepProgress.addBytes} as it goes; the reporter writes:
 * - on a terminal: one line redrawn in place every 0.5 s (`logger.progress`);
 * - in a log: `logger.info` one line every {@link LOG_EVERY_MS} or whenever the phase's percent
 *   crossed another {@link LOG_EVERY_PERCENT}, whichever comes first ({@link ProgressThrottle});
 * - nothing with a quiet logger (`logger.quiet`, the CLI's `--quiet`): {@link NO_PROGRESS}.
 * The line ({@link progressLine}) carries the percent, the counts, the elapsed time and an ETA:
 * from the drill history when `rate` and `archiveSizeBytes` are given ("from 12 drills"), else
 * from the phase's rate so far. Names in `detail` are the caller's to escape; the logger escapes
 * control characters of the whole line (src/log.ts).
 *
 * For `pg-backup diff` and other steps: `const p = startStepProgress({ label: 'diff app', logger });
 * p.phase('restore', { tablesTotal: 1 }); …; p.update({ tablesDone: 1 }); p.stop();`, and
 * `meteredStorage(storage, (n) => p.addBytes(n))` to count a download's bytes.
 */
export function startStepProgress(options: StepProgressOptions): StepProgress {
  if (options.logger.quiet) return NO_PROGRESS;
  const now = options.now ?? Date.now;
  const tty = options.tty ?? (Boolean(options.logger.progress) && process.stderr.isTTY === true);
  const throttle = new ProgressThrottle(now);
  const started = now();
  let phaseStarted = started;
  let phase = '';
  let counts: ProgressCounts = {};
  let stopped = false;
  let rate = options.rate;
  const line = () => progressLine({ label: options.label, phase, counts, elapsedMs: now() - started, phaseElapsedMs: now() - phaseStarted, rate, archiveSizeBytes: options.archiveSizeBytes });
  const write = (byPercentOnly: boolean) => {
    if (stopped || !phase) return;
    if (tty) {
      if (!byPercentOnly) options.logger.progress!(line());
      return;
    }
    const percent = percentOf(counts);
    // Between clock ticks only the percent rule is looked at (cheap: no line is formatted).
    if (byPercentOnly && (percent === undefined || !throttle.due(percent))) return;
    if (!byPercentOnly && !throttle.due(percent)) return;
    options.logger.info(line());
  };
  const timer = setInterval(() => write(false), tty ? REDRAW_MS : CLOCK_TICK_MS);
  timer.unref();
  return {
    enabled: true,
    phase(name, c = {}) {
      phase = name;
      counts = { ...c };
      phaseStarted = now();
      throttle.restart();
    },
    update(c) {
      Object.assign(counts, c);
      write(true);
    },
    addBytes(n) {
      counts.bytes = (counts.bytes ?? 0) + n;
      write(true);
    },
    setRate(r) {
      rate = r;
    },
    line: () => (phase ? line() : ''),
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      if (tty) options.logger.progress!('');
    },
  };
}

/**
 * `storage` whose `get` streams count their bytes into `onBytes` as they are read (one pass-through
 * stage; back-pressure kept). Every other method is the storage's own.
 */
export function meteredStorage(storage: Storage, onBytes: (n: number) => void): Storage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop === 'get') {
        return async (key: string, options?: Parameters<Storage['get']>[1]): Promise<Readable> => {
          const source = await target.get(key, options);
          const counter = new Transform({
            transform(chunk: Buffer, _enc, callback) {
              onBytes(chunk.length);
              callback(null, chunk);
            },
          });
          source.on('error', (err) => counter.destroy(err));
          counter.on('close', () => {
            if (!source.destroyed) source.destroy();
          });
          return source.pipe(counter);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
