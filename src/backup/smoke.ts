import { readFile } from 'node:fs/promises';
import type pg from 'pg';
import { UsageError, messageOf } from '../errors.ts';

/**
 * Smoke checks: a SQL file in which every query is preceded by the expectation it must meet.
 *
 * ```sql
 * -- expect: rows >= 1
 * SELECT * FROM users WHERE email = 'admin@example.com';
 *
 * -- expect: value = t
 * SELECT ST_GeomFromText('POINT(2.349 48.864)', 4326) IS NOT NULL;
 *
 * -- expect: value >= 1000
 * SELECT count(*) FROM orders;
 *
 * -- expect: ok
 * SELECT pg_catalog.set_config('search_path', 'app', false);
 * ```
 *
 * `rows OP N` compares the number of rows returned; `value OP X` compares the first column of
 * the first row (as numbers when both sides are numeric, else as text; NULL is `null`);
 * `ok` only requires the query to succeed. OP is one of `= != < <= > >=`.
 */
export interface SmokeCheck {
  /** 1-based line of the `-- expect:` comment. */
  line: number;
  expectation: string;
  sql: string;
}

/** One smoke check's outcome. */
export interface SmokeResult extends SmokeCheck {
  ok: boolean;
  /** What the query returned or how it failed. */
  actual: string;
}

const EXPECT = /^\s*--\s*expect:\s*(.*?)\s*$/i;
const FORM = /^(?:ok|(rows|value)\s*(=|!=|<=|>=|<|>)\s*(.+))$/i;

/**
 * Parses smoke checks from the text of a file.
 * @throws UsageError for SQL before the first expectation, an expectation without SQL, or one of an unknown form.
 */
export function parseSmokeChecks(text: string, file: string): SmokeCheck[] {
  const checks: SmokeCheck[] = [];
  let current: SmokeCheck | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const m = EXPECT.exec(raw);
    if (m) {
      if (current && !current.sql.trim()) throw new UsageError(`${file}:${current.line}: "-- expect: ${current.expectation}" has no query after it`);
      if (!FORM.test(m[1]!)) throw new UsageError(`${file}:${i + 1}: unknown expectation "${m[1]}": use "rows OP N", "value OP X" or "ok" (OP: = != < <= > >=)`);
      current = { line: i + 1, expectation: m[1]!, sql: '' };
      checks.push(current);
      return;
    }
    const isContent = raw.trim() && !/^\s*--/.test(raw);
    if (!current) {
      if (isContent) throw new UsageError(`${file}:${i + 1}: a query without an expectation: put "-- expect: …" before each query`);
      return;
    }
    if (isContent || current.sql) current.sql += `${raw}\n`;
  });
  if (current && !current.sql.trim()) throw new UsageError(`${file}:${current.line}: "-- expect: ${current.expectation}" has no query after it`);
  if (checks.length === 0) throw new UsageError(`${file} has no smoke checks: write "-- expect: …" before each query`);
  for (const c of checks) c.sql = c.sql.trim();
  return checks;
}

/**
 * Reads and parses a smoke SQL file.
 * @throws UsageError when the file cannot be read or is malformed.
 */
export async function readSmokeChecks(file: string): Promise<SmokeCheck[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read the smoke SQL file ${file}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`);
  }
  return parseSmokeChecks(text, file);
}

function compare(actual: string, op: string, expected: string): boolean {
  const a = Number(actual);
  const e = Number(expected);
  const numeric = actual.trim() !== '' && expected.trim() !== '' && Number.isFinite(a) && Number.isFinite(e);
  const cmp = numeric ? Math.sign(a - e) : actual < expected ? -1 : actual > expected ? 1 : 0;
  switch (op) {
    case '=':
      return cmp === 0;
    case '!=':
      return cmp !== 0;
    case '<':
      return cmp < 0;
    case '<=':
      return cmp <= 0;
    case '>':
      return cmp > 0;
    default:
      return cmp >= 0;
  }
}

function display(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return value ? 't' : 'f';
  if (value instanceof Date) return value.toISOString();
  return String(value);
}

/** Runs each check on `client` (each in its own statement; a failure does not stop the rest). */
export async function runSmokeChecks(client: pg.Client, checks: SmokeCheck[]): Promise<SmokeResult[]> {
  const results: SmokeResult[] = [];
  for (const check of checks) {
    const form = FORM.exec(check.expectation)!;
    try {
      const r = await client.query({ text: check.sql, rowMode: 'array' });
      const rows = (Array.isArray(r) ? r.at(-1) : r) as pg.QueryArrayResult;
      if (!form[1]) {
        results.push({ ...check, ok: true, actual: 'ok' });
      } else if (form[1].toLowerCase() === 'rows') {
        const n = rows.rows.length;
        results.push({ ...check, ok: compare(String(n), form[2]!, form[3]!.trim()), actual: `${n} rows` });
      } else {
        const value = display(rows.rows[0]?.[0]);
        const expected = form[3]!.trim().replace(/^'(.*)'$/, '$1');
        results.push({ ...check, ok: rows.rows.length > 0 && compare(value, form[2]!, expected), actual: rows.rows.length ? value : 'no rows' });
      }
    } catch (err) {
      results.push({ ...check, ok: false, actual: `error: ${messageOf(err)}` });
    }
  }
  return results;
}
