import { formatBytes, formatSeconds } from '../format.ts';
import { terminalText } from '../text/sinks.ts';
import type { DatabaseState, DatabaseStatus, FleetStatus, GlobalsStatus } from './model.ts';

/** Shared wording of the status views (terminal, Markdown, HTML). */

/** The marker shown for a state: words, not colours alone. */
export const STATE_LABEL: Record<DatabaseState, string> = { failed: 'DRILL FAILED', stale: 'STALE', untrusted: 'UNTRUSTED TIME', warning: 'WARNING', ok: 'OK' };

/** The markers of a database's records whose time is not believed: `FUTURE`, `MISDATED` (each once). */
export function timeMarkers(d: Pick<DatabaseStatus, 'untrusted'>): string[] {
  return [...new Set(d.untrusted.map((u) => (u.time === 'future' ? 'FUTURE' : 'MISDATED')))];
}

/** `service/environment/database`. */
export function databaseName(d: Pick<DatabaseStatus, 'service' | 'environment' | 'database'>): string {
  return `${d.service}/${d.environment}/${d.database}`;
}

/** `+12.5%`, `-3%`, or an empty string for no trend. */
export function formatTrend(percent: number | null): string {
  if (percent === null) return '';
  return `${percent > 0 ? '+' : percent < 0 ? '−' : '±'}${Math.abs(percent)}%`;
}

/** `2026-12-01 06:00` (UTC, to the minute) from an ISO 8601 instant. */
export function shortTime(iso: string): string {
  return iso.slice(0, 16).replace('T', ' ');
}

/** The cells of one database's row, as plain text (escape before putting them into markup). */
export function rowCells(d: DatabaseStatus): Record<'state' | 'database' | 'kind' | 'newest' | 'age' | 'size' | 'trend' | 'complete' | 'proven' | 'verify' | 'drill' | 'rto', string> {
  const markers = [d.drillFailed ? STATE_LABEL.failed : '', d.stale ? STATE_LABEL.stale : '', ...timeMarkers(d)].filter(Boolean);
  return {
    state: markers.length ? markers.join(', ') : STATE_LABEL[d.state],
    database: databaseName(d),
    kind: d.kind,
    newest: d.newest ? shortTime(d.newest.startedAt) : d.kind === 'physical' ? 'physical' : 'none',
    age: d.newest ? formatSeconds(d.newest.ageMs) : '—',
    size: d.newest ? formatBytes(d.newest.sizeBytes) : '—',
    trend: formatTrend(d.sizeTrendPercent),
    complete: d.kind === 'physical' ? '—' : String(d.backups.complete),
    proven: d.kind === 'physical' ? '—' : String(d.backups.proven),
    verify: d.lastVerify ? `${d.lastVerify.ok ? 'OK' : 'FAILED'} ${shortTime(d.lastVerify.at)} (${d.lastVerify.level})` : 'never',
    drill: d.lastDrill ? `${d.lastDrill.ok ? 'OK' : 'FAILED'} ${shortTime(d.lastDrill.at)}` : 'never',
    rto: d.lastDrill ? `${formatSeconds(d.lastDrill.rtoMs)}${d.rtoTrendPercent !== null ? ` (${formatTrend(d.rtoTrendPercent)})` : ''}` : '—',
  };
}

/**
 * One line on a service/environment's globals: `api/production globals: newest 2026-12-01 06:00
 * (5 h old, run-…), 12 roles, 1 tablespace, role passwords included`.
 */
export function globalsLine(g: GlobalsStatus): string {
  const n = g.newest;
  if (!n) return `${g.service}/${g.environment} globals: none complete`;
  const passwords = n.rolePasswords === null ? 'manifest not read' : n.rolePasswords ? 'role passwords included' : 'role passwords NOT included (dumped without pg_authid access)';
  const held = n.roles === null ? '' : `, ${n.roles} role${n.roles === 1 ? '' : 's'}, ${n.tablespaces} tablespace${n.tablespaces === 1 ? '' : 's'}`;
  return `${g.service}/${g.environment} globals: newest ${shortTime(n.startedAt)} (${formatSeconds(n.ageMs)} old${n.runId ? `, ${n.runId}` : ''})${held}, ${passwords}`;
}

/** The one-line verdict: `3 databases: 1 ok, 1 stale, 1 with a failed drill`. */
export function verdictLine(fleet: FleetStatus): string {
  const c = fleet.counts;
  const parts = [`${c.ok} ok`];
  if (c.warning) parts.push(`${c.warning} with warnings`);
  if (c.untrusted) parts.push(`${c.untrusted} with records stamped in the future or misdated`);
  if (c.stale) parts.push(`${c.stale} stale`);
  if (c.failed) parts.push(`${c.failed} with a failed drill`);
  return `${c.databases} database${c.databases === 1 ? '' : 's'}: ${parts.join(', ')}`;
}

/** A cell or line for the terminal: control characters (escape sequences in a name from the bucket) shown escaped ({@link terminalText}). */
export const printable = terminalText;

const COLUMNS = [
  ['state', 'STATE'],
  ['database', 'SERVICE/ENVIRONMENT/DATABASE'],
  ['newest', 'NEWEST BACKUP'],
  ['age', 'AGE'],
  ['size', 'SIZE'],
  ['trend', 'TREND'],
  ['complete', 'COMPLETE'],
  ['proven', 'PROVEN'],
  ['verify', 'LAST VERIFY'],
  ['drill', 'LAST DRILL'],
  ['rto', 'RTO'],
] as const;

const ANSI: Record<DatabaseState, string> = { failed: '\x1b[31m', stale: '\x1b[31m', untrusted: '\x1b[31m', warning: '\x1b[33m', ok: '\x1b[32m' };

/**
 * The fleet as a terminal table (UTC times), then one line per problem or warning, then the
 * verdict. `color` wraps each state in ANSI colours (a TTY without `NO_COLOR`).
 */
export function formatTable(fleet: FleetStatus, color = false): string {
  const rows = fleet.databases.map((d) => ({ d, cells: rowCells(d) }));
  const width = (key: (typeof COLUMNS)[number][0], title: string) => Math.max(title.length, ...rows.map((r) => printable(r.cells[key]).length));
  const widths = COLUMNS.map(([key, title]) => width(key, title));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [line(COLUMNS.map(([, title]) => title))];
  for (const { d, cells } of rows) {
    const text = line(COLUMNS.map(([key]) => printable(cells[key])));
    out.push(color ? text.replace(cells.state, `${ANSI[d.state]}${cells.state}\x1b[0m`) : text);
  }
  out.push('');
  for (const d of fleet.databases) {
    for (const p of d.problems) out.push(`${printable(databaseName(d))}: ${printable(p)}`);
    for (const w of d.warnings) out.push(`${printable(databaseName(d))}: warning: ${printable(w)}`);
  }
  for (const g of fleet.globals ?? []) out.push(printable(globalsLine(g)));
  for (const w of fleet.warnings) out.push(`warning: ${printable(w)}`);
  out.push(`${verdictLine(fleet)} (max age ${formatSeconds(fleet.maxAgeMs)}; ${fleet.generatedAt.replace(/\.\d{3}Z$/, 'Z')})`);
  return `${out.join('\n')}\n`;
}
