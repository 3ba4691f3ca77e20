import { UsageError } from '../errors.ts';

/** A recovery target: the end of the WAL archive, or a moment in time. */
export type RecoveryTarget = { type: 'latest' } | { type: 'time'; at: Date; iso: string };

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$/i;

/**
 * Parses `--target-time`: an ISO 8601 date and time with a time zone, e.g.
 * `2026-12-02T09:30:00Z`, `2026-12-02T10:30:00.250+01:00` or `2026-12-02 09:30:00+00`. A time
 * without a zone is refused (PostgreSQL would read it in the restored server's `TimeZone`, and
 * pgBackRest in the local one: two readings of one moment). Fractions beyond milliseconds are
 * truncated. Absent or `latest`: the end of the archive.
 * @throws UsageError naming the accepted form.
 */
export function parseTargetTime(text: string | undefined): RecoveryTarget {
  if (text === undefined || text.trim() === '' || text.trim().toLowerCase() === 'latest') return { type: 'latest' };
  const m = ISO_8601.exec(text.trim());
  const usage = `--target-time ${JSON.stringify(text)} is not an ISO 8601 time with a zone: use e.g. 2026-12-02T09:30:00Z or 2026-12-02T10:30:00.250+01:00 (or latest)`;
  if (!m) throw new UsageError(usage);
  const [, y, mo, d, h, mi, s = '00', frac = '', zone] = m as unknown as string[];
  const ms = (frac + '000').slice(0, 3);
  const offset = zone!.toUpperCase() === 'Z' ? 'Z' : zone!.length === 3 ? `${zone}:00` : `${zone!.slice(0, 3)}:${zone!.slice(-2)}`;
  const at = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}.${ms}${offset}`);
  const calendarDay = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d))).getUTCDate(); // 2026-02-31 rolls over to 3
  if (Number.isNaN(at.getTime()) || calendarDay !== Number(d) || Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) throw new UsageError(usage);
  return { type: 'time', at, iso: at.toISOString() };
}

/**
 * The form pgBackRest's `restore --type=time --target=` accepts and uses to pick the backup set:
 * `YYYY-MM-DD HH:MM:SS[.mmm]±TZ` (a `T` separator is refused: "automatic backup set selection
 * cannot be performed with provided time"). Always written in UTC (`+00`), milliseconds only
 * when not zero. PostgreSQL reads the same text as `recovery_target_time`.
 * Source: pgBackRest user guide, "Point-in-Time Recovery"; command reference, restore `--target`.
 */
export function pgbackrestTime(at: Date): string {
  const iso = at.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const ms = iso.slice(20, 23);
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${ms === '000' ? '' : `.${ms}`}+00`;
}
