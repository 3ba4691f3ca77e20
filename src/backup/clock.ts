import { parseDuration } from '../duration.ts';
import { UsageError } from '../errors.ts';
import { formatSeconds } from '../format.ts';

/**
 * Judging a record's time: the one place that decides whether the time a backup, a drill report
 * or a verify record claims can be believed.
 *
 * A record's time comes from the clock of whoever wrote it (a runner, a laptop, anyone who can
 * write to the bucket), and every decision the tool takes on time — which backup is `latest`,
 * which ones retention keeps, whether backups are fresh, which drill is the last one, whether a
 * backup is proven — trusts the newest. One record stamped ahead would win all of them for ever.
 * So:
 * - `future`: a record stamped later than now + the tolerance (`--max-clock-skew`, default
 *   {@link DEFAULT_MAX_CLOCK_SKEW_MS}). Nothing written by a working clock can be there.
 * - `misdated`: a record whose two stamps disagree: a backup's key stamp
 *   (`<db>-<YYYYMMDDTHHMMSSZ>-<hex>`, made from the manifest's `startedAt` truncated to the
 *   second, see keys.ts `backupKeys`) and its manifest's `startedAt`; a drill report's key stamp
 *   (`-drill-<stamp>.json`, made from the report's `startedAt`) and its `startedAt`; a manifest
 *   whose `finishedAt` is before its `startedAt`. The tool never writes such a record: one of
 *   the two was changed.
 *
 * Such a record is listed and named (status exits 1), never `latest`, never a keeper and never
 * deleted because of its time (kept for inspection), never fresh, never proof, never the last
 * drill. A record in the past is not judged: a clock that was behind cannot make a record win.
 */

/** Default tolerance for a record stamped ahead of this machine's clock: 10 min (ms). */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 10 * 60_000;

/**
 * How far a record's two stamps may differ before it is `misdated` (ms): a backup's key stamp is
 * its `startedAt` truncated to the second (so `startedAt` is 0–999 ms after it); 2 s leaves room
 * for that and nothing a working clock could produce beyond it.
 */
export const STAMP_MARGIN_MS = 2_000;

/** The help text of `--max-clock-skew` on the commands that judge time. */
export const MAX_CLOCK_SKEW_HELP = 'a backup, drill report or verify record stamped later than now plus this is FUTURE: never latest, never fresh, never proof, never a keeper nor deleted by prune (e.g. 10m)';

/** `future` or `misdated` (see above): a record whose time is not believed. */
export type UntrustedTime = 'future' | 'misdated';

/** The clock records are judged against: now (UTC) and the tolerance for records ahead of it. */
export interface ClockCheck {
  now: Date;
  /** Records stamped later than `now` + this are `future` (ms, ≥ 0). */
  maxSkewMs: number;
}

/** Why a record's time is not believed. */
export interface TimeProblem {
  time: UntrustedTime;
  /** One line: which stamp, how far ahead or apart, what to check. */
  problem: string;
}

/** The times of one record, as it states them. Strings are ISO 8601 as stored; an unparsable one is ignored (the record's schema rejects it). */
export interface RecordTimes {
  /** What it is, for the message: `backup`, `drill report`, `verify record`. */
  kind: string;
  /** The stamp in its key (backup id, drill report name), if it has one. */
  keyStamp?: Date;
  /** When it says it started (a manifest's or a drill report's `startedAt`, a verify record's `verifiedAt`). */
  at?: string | Date;
  /** A manifest's `finishedAt`. */
  finishedAt?: string | Date;
}

/** The default clock check: this machine's clock now, the tolerance given or the default. */
export function clockCheck(now: Date = new Date(), maxSkewMs: number = DEFAULT_MAX_CLOCK_SKEW_MS): ClockCheck {
  return { now, maxSkewMs };
}

/**
 * Parses `--max-clock-skew` (`10m`, `90s`, `1h`).
 * @returns the tolerance in ms; {@link DEFAULT_MAX_CLOCK_SKEW_MS} when not given.
 * @throws UsageError for text that is not a duration longer than 0.
 */
export function parseMaxClockSkew(text: string | undefined, option = '--max-clock-skew'): number {
  if (text === undefined || text.trim() === '') return DEFAULT_MAX_CLOCK_SKEW_MS;
  const ms = parseDuration(text, option);
  if (!(ms > 0)) throw new UsageError(`${option} ${JSON.stringify(text)} must be longer than 0 (e.g. 10m)`);
  return ms;
}

const toDate = (d: string | Date | undefined): Date | undefined => {
  if (d === undefined) return undefined;
  const date = d instanceof Date ? d : new Date(d);
  return Number.isNaN(date.getTime()) ? undefined : date;
};

const iso = (d: Date) => d.toISOString().replace('.000Z', 'Z');

/**
 * Whether `at` is later than the clock allows (now + tolerance).
 */
export function isFuture(clock: ClockCheck, at: Date): boolean {
  return at.getTime() > clock.now.getTime() + clock.maxSkewMs;
}

/**
 * Judges a record's times against `clock` (see the rules above): `future` first (any stamp
 * later than now + tolerance), then `misdated` (key stamp and `at` more than
 * {@link STAMP_MARGIN_MS} apart, or `finishedAt` before `at`).
 * @returns undefined when the times can be believed, else the verdict and one line saying why.
 */
export function judgeTimes(clock: ClockCheck, record: RecordTimes): TimeProblem | undefined {
  const at = toDate(record.at);
  const finished = toDate(record.finishedAt);
  const stamps: [string, Date | undefined][] = [
    ['its key', record.keyStamp],
    [record.kind === 'verify record' ? 'verifiedAt' : 'startedAt', at],
    ['finishedAt', finished],
  ];
  // The first stamp ahead, in the order a reader meets them: the key, then the record's own.
  const ahead = stamps.find((s): s is [string, Date] => s[1] !== undefined && isFuture(clock, s[1]));
  if (ahead) {
    const by = ahead[1].getTime() - clock.now.getTime();
    return {
      time: 'future',
      problem: `stamped in the future: ${ahead[0]} says ${iso(ahead[1])}, ${formatSeconds(by)} ahead of this clock (${iso(clock.now)}; tolerance ${formatSeconds(clock.maxSkewMs)}, --max-clock-skew): a clock is wrong or the ${record.kind} was forged; it is not trusted`,
    };
  }
  if (record.keyStamp && at) {
    const apart = at.getTime() - record.keyStamp.getTime();
    if (Math.abs(apart) > STAMP_MARGIN_MS) {
      return {
        time: 'misdated',
        problem: `misdated: its key is stamped ${iso(record.keyStamp)}, its ${stamps[1]![0]} says ${iso(at)} (${formatSeconds(Math.abs(apart))} apart; the key is made from ${stamps[1]![0]}): one of them was changed; it is not trusted`,
      };
    }
  }
  if (at && finished && finished.getTime() < at.getTime() - STAMP_MARGIN_MS) {
    return { time: 'misdated', problem: `misdated: finishedAt ${iso(finished)} is before startedAt ${iso(at)}: it is not trusted` };
  }
  return undefined;
}

/**
 * Parses a key stamp: `YYYYMMDDTHHMMSSZ` (backups) or `YYYYMMDDTHHMMSS.mmmZ` (drill reports).
 * @returns the UTC instant, or undefined for any other text.
 */
export function parseKeyStamp(stamp: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d{3}))?Z$/.exec(stamp);
  if (!m) return undefined;
  const d = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, m[7] ? +m[7] : 0));
  return Number.isNaN(d.getTime()) ? undefined : d;
}
