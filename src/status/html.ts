import { createHash } from 'node:crypto';
import { formatSeconds } from '../format.ts';
import { TOOL } from '../version.ts';
import type { ChartLibrary } from './chart-library.ts';
import type { DatabaseState, FleetStatus } from './model.ts';
import { PAGE_SCRIPT } from './page-client.ts';
import { STATE_LABEL, databaseName, globalsLine, rowCells, timeMarkers, verdictLine } from './text.ts';

/**
 * The fleet status as one self-contained HTML page: the table (status colours and words,
 * sortable by its headers), and three charts drawn by the inlined chart library — backup size
 * over time, RTO per drill with the budget line, age of the newest backup per database. It makes
 * no request when opened: everything is inline, and a Content-Security-Policy (`default-src
 * 'none'`, scripts and the style allowed by their SHA-256 only) forbids anything else. Readable
 * without sideways scrolling at 1280 px (cells wrap) and on a phone (the table becomes cards
 * under 960 px), light and dark (`prefers-color-scheme`).
 * Every value from the bucket is HTML-escaped, or reaches the page as JSON with `<`, `>` and `&`
 * escaped and is then used only as text.
 */
export function renderHtml(fleet: FleetStatus, chart: ChartLibrary): string {
  const data = {
    maxAgeMs: fleet.maxAgeMs,
    databases: fleet.databases.map((d) => ({
      name: databaseName(d),
      state: d.state,
      kind: d.kind,
      ageMs: d.newest ? d.newest.ageMs : null,
      rtoBudgetMs: d.rtoBudgetMs,
      sizes: d.history.sizes.map((s) => [Date.parse(s.at), s.sizeBytes]),
      drills: d.history.drills.map((r) => [Date.parse(r.at), r.rtoMs, r.ok]),
    })),
  };
  const json = JSON.stringify(data).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
  const scripts = [chart.source, PAGE_SCRIPT];
  const csp = [
    "default-src 'none'",
    `script-src ${scripts.map(cspHash).join(' ')}`,
    `style-src ${cspHash(PAGE_STYLE)}`,
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
  const hasSizes = data.databases.some((d) => d.sizes.length);
  const hasDrills = data.databases.some((d) => d.drills.length);
  const hasAges = data.databases.some((d) => d.ageMs !== null);
  const generated = `${fleet.generatedAt.slice(0, 16).replace('T', ' ')} UTC`;
  const overall: DatabaseState = fleet.counts.failed ? 'failed' : fleet.counts.stale ? 'stale' : fleet.counts.untrusted ? 'untrusted' : fleet.counts.warning ? 'warning' : 'ok';

  const headers: [string, 'text' | 'number'][] = [
    ['State', 'number'],
    ['Database', 'text'],
    ['Newest backup (UTC)', 'text'],
    ['Age', 'number'],
    ['Size', 'number'],
    ['Trend', 'number'],
    ['Complete', 'number'],
    ['Proven', 'number'],
    ['Last verify (UTC)', 'text'],
    ['Last drill (UTC)', 'text'],
    ['RTO', 'number'],
  ];
  const rank: Record<DatabaseState, number> = { failed: 0, stale: 1, untrusted: 2, warning: 3, ok: 4 };
  const rows = fleet.databases.map((d) => {
    const c = rowCells(d);
    const badges = [d.drillFailed ? `<span class="badge badge-failed">${STATE_LABEL.failed}</span>` : '', d.stale ? `<span class="badge badge-stale">${STATE_LABEL.stale}</span>` : '', ...timeMarkers(d).map((m) => `<span class="badge badge-untrusted">${m}</span>`)].filter(Boolean);
    if (!badges.length) badges.push(`<span class="badge badge-${d.state}">${STATE_LABEL[d.state]}</span>`);
    const notes = [...d.problems, ...d.warnings];
    const cell = (label: string, sort: string | number | null, html: string, cls = '') =>
      `<td data-label="${esc(label)}" data-sort="${sort === null ? '' : esc(String(sort))}"${cls ? ` class="${cls}"` : ''}><div>${html}</div></td>`;
    const drillCls = d.lastDrill ? (d.lastDrill.ok ? 'good' : 'bad') : '';
    const verifyCls = d.lastVerify ? (d.lastVerify.ok ? 'good' : 'bad') : '';
    return [
      `<tr class="state-${d.state}" data-state="${d.state}" data-stale="${d.stale}" data-drill-failed="${d.drillFailed}">`,
      cell('State', rank[d.state], badges.join(' ')),
      cell('Database', databaseName(d), `<span class="name">${esc(c.database).replace(/\//g, '/<wbr>')}</span>${d.kind === 'physical' ? ' <span class="kind">physical</span>' : ''}${notes.length ? `<ul class="notes">${notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : ''}`),
      cell('Newest backup', d.newest?.startedAt ?? null, esc(c.newest)),
      cell('Age', d.newest?.ageMs ?? null, esc(c.age), d.stale ? 'bad' : ''),
      cell('Size', d.newest?.sizeBytes ?? null, esc(c.size), 'nowrap'),
      cell('Trend', d.sizeTrendPercent, esc(c.trend), 'nowrap'),
      cell('Complete', d.kind === 'physical' ? null : d.backups.complete, esc(c.complete)),
      cell('Proven', d.kind === 'physical' ? null : d.backups.proven, esc(c.proven)),
      cell('Last verify', d.lastVerify?.at ?? null, esc(c.verify), verifyCls),
      cell('Last drill', d.lastDrill?.at ?? null, esc(c.drill), drillCls),
      cell('RTO', d.lastDrill?.rtoMs ?? null, esc(c.rto), d.lastDrill && d.rtoBudgetMs !== null && d.lastDrill.rtoMs > d.rtoBudgetMs ? 'bad' : ''),
      '</tr>',
    ].join('');
  });
  // A run's globals (roles, tablespaces), per service/environment: whether a whole-server restore brings the roles back, with their passwords.
  const globals = (fleet.globals ?? []).length ? `<ul class="globals">${(fleet.globals ?? []).map((g) => `<li>${esc(globalsLine(g))}</li>`).join('')}</ul>` : '';
  const skipped = fleet.warnings.length
    ? `<details class="skipped"><summary>${fleet.warnings.length} record${fleet.warnings.length > 1 ? 's' : ''} skipped</summary><ul>${fleet.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul></details>`
    : '';
  const figure = (id: string, title: string, has: boolean, empty: string, label: string) =>
    `<figure><figcaption>${esc(title)}</figcaption>${has ? `<div class="chart"><canvas id="${id}" role="img" aria-label="${esc(label)}"></canvas></div>` : `<p class="empty">${esc(empty)}</p>`}</figure>`;
  const budgetNote = fleet.rtoBudgetMs !== null ? ` — ${formatSeconds(fleet.rtoBudgetMs)} where a drill recorded none` : '';

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta http-equiv="Content-Security-Policy" content="${esc(csp)}">
<meta name="generator" content="${esc(`${TOOL.name} ${TOOL.version}`)}">
<title>Backup status: ${esc(verdictLine(fleet))}</title>
<style>${PAGE_STYLE}</style>
</head>
<body>
<header>
<h1>Backup status</h1>
<p class="verdict state-${overall}" id="verdict">${esc(verdictLine(fleet))}</p>
<p class="meta">${esc(fleet.from)} · generated ${esc(generated)} · stale after ${esc(formatSeconds(fleet.maxAgeMs))}</p>
</header>
<main>
<section aria-labelledby="fleet-title">
<h2 id="fleet-title">Databases</h2>
${fleet.databases.length ? `<div class="table-wrap"><table id="fleet">
<thead><tr>${headers.map(([title, type]) => `<th scope="col" data-type="${type}"><button type="button">${esc(title)}</button></th>`).join('')}</tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table></div>` : '<p class="empty">No backups or drill reports under this location.</p>'}
${globals}${skipped}
</section>
<section class="charts" aria-label="Charts">
${figure('chart-size', 'Backup size over time (stored bytes)', hasSizes, 'No backups to chart.', 'Line chart of the stored size of each backup over time, one line per database')}
${figure('chart-rto', `RTO per drill (✕: failed; dashed: budget${budgetNote})`, hasDrills, 'No drill reports under this location.', 'Line chart of the recovery time of each drill, one line per database, with the RTO budget')}
${figure('chart-age', 'Age of the newest complete backup (dashed: max age)', hasAges, 'No complete backups.', 'Bar chart of the age of each database\'s newest complete backup against the max age')}
</section>
</main>
<footer>${esc(`${TOOL.name} ${TOOL.version}`)} · charts by ${esc(`${chart.name} ${chart.version}`)} (MIT), inlined: this page makes no network request</footer>
<script type="application/json" id="fleet-data">${json}</script>
<script>${chart.source}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}

/** Escapes text for HTML content and double- or single-quoted attribute values. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A CSP source expression allowing exactly this inline script or style: `'sha256-<base64>'` (CSP Level 3, "hash-source"). */
function cspHash(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

const PAGE_STYLE = `
:root {
  color-scheme: light dark;
  --font: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
  --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --grid: rgba(0,0,0,0.08); --card: #f6f8fa;
  --ok: #1a7f37; --warning: #9a6700; --stale: #bc4c00; --failed: #cf222e;
  --ok-bg: #dafbe1; --warning-bg: #fff8c5; --stale-bg: #fff1e5; --failed-bg: #ffebe9;
  --series-0: #0072b2; --series-1: #e69f00; --series-2: #009e73; --series-3: #cc79a7; --series-4: #56b4e9;
  --series-5: #d55e00; --series-6: #7a5195; --series-7: #555555; --series-8: #8c6d1f; --series-9: #118a9c;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --border: #3d444d; --grid: rgba(255,255,255,0.1); --card: #151b23;
    --ok: #3fb950; --warning: #d29922; --stale: #f0883e; --failed: #f85149;
    --ok-bg: rgba(46,160,67,0.15); --warning-bg: rgba(187,128,9,0.15); --stale-bg: rgba(219,109,40,0.18); --failed-bg: rgba(248,81,73,0.18);
    --series-0: #56b4e9; --series-1: #e69f00; --series-2: #3fb950; --series-3: #f778ba; --series-4: #a5d6ff;
    --series-5: #ff7b72; --series-6: #d2a8ff; --series-7: #c9d1d9; --series-8: #d4a72c; --series-9: #39c5cf;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0 auto; max-width: 1400px; padding: 16px; background: var(--bg); color: var(--fg); font: 15px/1.45 var(--font); }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 24px 0 8px; }
.meta, footer { color: var(--muted); font-size: 0.85rem; overflow-wrap: anywhere; }
footer { margin: 32px 0 8px; }
.verdict { display: inline-block; margin: 4px 0; padding: 4px 10px; border-radius: 6px; font-weight: 600; border-left: 6px solid; }
.verdict.state-ok { background: var(--ok-bg); border-color: var(--ok); }
.verdict.state-warning { background: var(--warning-bg); border-color: var(--warning); }
.verdict.state-stale { background: var(--stale-bg); border-color: var(--stale); }
.verdict.state-failed, .verdict.state-untrusted { background: var(--failed-bg); border-color: var(--failed); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
/* Fits 1280 px without sideways scrolling: cells wrap at spaces (a date above its time, a
   header over two lines), long names anywhere; the wrapper scrolls the table alone if a
   value is still too wide, never the page. */
.table-wrap { overflow-x: auto; }
th, td { text-align: left; padding: 6px 7px; border-bottom: 1px solid var(--border); vertical-align: top; }
th { vertical-align: bottom; font-size: 0.85rem; }
th button { all: unset; cursor: pointer; font-weight: 600; color: var(--fg); }
th button:focus-visible { outline: 2px solid var(--series-0); outline-offset: 2px; }
th[aria-sort="ascending"] button::after { content: " ▲"; font-size: 0.7em; }
th[aria-sort="descending"] button::after { content: " ▼"; font-size: 0.7em; }
tbody tr { border-left: 6px solid transparent; }
tbody tr.state-ok { border-left-color: var(--ok); }
tbody tr.state-warning { border-left-color: var(--warning); background: var(--warning-bg); }
tbody tr.state-stale { border-left-color: var(--stale); background: var(--stale-bg); }
tbody tr.state-failed, tbody tr.state-untrusted { border-left-color: var(--failed); background: var(--failed-bg); }
td.bad { color: var(--failed); font-weight: 600; }
td.good { color: var(--ok); }
td.nowrap { white-space: nowrap; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 0.75rem; font-weight: 700; letter-spacing: 0.02em; color: #fff; white-space: nowrap; }
.badge-ok { background: var(--ok); }
.badge-warning { background: var(--warning); }
.badge-stale { background: var(--stale); }
.badge-failed, .badge-untrusted { background: var(--failed); }
@media (prefers-color-scheme: dark) { .badge { color: #0d1117; } }
.name { font-weight: 600; overflow-wrap: anywhere; }
ul.notes li { overflow-wrap: anywhere; }
.kind { color: var(--muted); font-size: 0.8rem; }
ul.notes { margin: 4px 0 0; padding-left: 18px; color: var(--muted); font-size: 0.85rem; }
.skipped { margin-top: 8px; color: var(--muted); font-size: 0.85rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 440px), 1fr)); gap: 16px; margin-top: 24px; }
figure { margin: 0; padding: 12px; background: var(--card); border: 1px solid var(--border); border-radius: 8px; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 8px; }
.chart { position: relative; height: 300px; }
.empty { color: var(--muted); }
@media (max-width: 960px) {
  body { padding: 10px; font-size: 14px; }
  table, tbody, tr, td { display: block; width: 100%; }
  thead tr { display: flex; flex-wrap: wrap; gap: 4px 12px; padding-bottom: 6px; }
  thead tr::before { content: "Sort by"; color: var(--muted); font-size: 0.8rem; padding: 2px 0; }
  thead th { border: 0; padding: 2px 0; font-size: 0.8rem; }
  tbody tr { margin: 0 0 10px; border: 1px solid var(--border); border-left-width: 6px; border-radius: 8px; padding: 4px 0; }
  td { display: grid; grid-template-columns: 9.5em 1fr; gap: 8px; border: 0; padding: 3px 10px; }
  td::before { content: attr(data-label); color: var(--muted); font-size: 0.85rem; font-weight: normal; }
  td.nowrap { white-space: normal; }
  .chart { height: 260px; }
}
`;
