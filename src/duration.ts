import { UsageError } from './errors.ts';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * Parses a duration such as `90s`, `10m`, `30h`, `7d`, `1h30m` into milliseconds.
 * @throws UsageError naming the option and the accepted form.
 */
export function parseDuration(text: string, option: string): number {
  const trimmed = text.trim();
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (!trimmed || parts.map((p) => p[0]).join('') !== trimmed) {
    throw new UsageError(`${option} ${JSON.stringify(text)} is not a duration: use a number with a unit, e.g. 90s, 10m, 30h, 7d or 1h30m`);
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0);
}
