import { createHash } from 'node:crypto';
import { formatSeconds } from '../format.ts';
import { esc } from '../status/html.ts';
import { markdownText } from '../text/sinks.ts';
import { TOOL } from '../version.ts';
import type { DatabaseEvidence, DrillEvidence, FailureWindow, QuarterlyEvidence } from './quarterly.ts';

// The quarterly evidence report as Markdown and as one self-contained HTML page. Every value
// from the bucket (names, reasons, keys, recipients) is escaped for its sink: HTML with the
// status page's esc(), Markdown with its markdownText().

const name = (d: DatabaseEvidence) => `${d.service}/${d.environment}/${d.database}`;
const day = (iso: string) => `${iso.slice(0, 16).replace('T', ' ')} UTC`;
const rto = (d: DrillEvidence) => `${formatSeconds(d.rtoMs)}${d.rtoBudgetMs === null ? '' : ` / ${formatSeconds(d.rtoBudgetMs)} ${d.withinBudget ? 'within' : 'OVER'}`}`;
const rpo = (d: DrillEvidence) => (d.rpoMs === null ? '—' : formatSeconds(d.rpoMs));
const failureSpan = (f: FailureWindow) => `${formatSeconds(f.openMs)}${f.closedAt ? '' : ' (still open)'}`;

/** The report as GitHub-flavoured Markdown (tables), e.g. for a release note or a job summary. */
export function renderQuarterlyMarkdown(r: QuarterlyEvidence): string {
  const out: string[] = [];
  out.push(`# Backup and recovery evidence, ${markdownText(r.quarter)}`, '');
  out.push(`Location ${markdownText(r.from)}, ${day(r.start)} to ${day(r.end)} (exclusive); generated ${day(r.generatedAt)} by ${markdownText(TOOL.name)} ${markdownText(TOOL.version)}. Drill signatures: ${markdownText(r.signatureCheck)}.`, '');
  out.push('## Controls', '', '| Framework | Control | What it asks (summary) | Evidence in this report | State |', '|---|---|---|---|---|');
  for (const c of r.controls) out.push(`| ${markdownText(c.framework)} | ${markdownText(c.control)} | ${markdownText(c.asks)} | ${markdownText(c.evidence)} | ${c.state === 'met' ? 'met' : '**gaps**'} |`);
  out.push('');
  if (r.databases.length === 0) out.push('No backup, verify record or drill report in this quarter.', '');
  for (const d of r.databases) {
    out.push(`## ${markdownText(name(d))}`, '');
    out.push(`Backups taken: ${d.backups}. Verify runs: ${d.verifies.ok} passed, ${d.verifies.failed} failed. Drills: ${d.drills.length}.`, '');
    if (d.drills.length) {
      out.push('| Drill (UTC) | Result | RTO / budget | RPO | Signature | Backup | Opened by |', '|---|---|---|---|---|---|---|');
      for (const x of d.drills) out.push(`| ${day(x.at)} | ${x.ok ? 'OK' : `**FAILED**: ${markdownText(x.reason ?? '')}`} | ${rto(x)} | ${rpo(x)} | ${markdownText(x.signature)} | ${markdownText(x.backupId)} | ${x.openedBy ? markdownText(x.openedBy) : '—'} |`);
      out.push('');
    }
    if (d.failures.length) {
      out.push('| Failure | Opened (UTC) | Closed (UTC) | Open for | Reason |', '|---|---|---|---|---|');
      for (const f of d.failures) out.push(`| ${f.kind} | ${day(f.openedAt)} | ${f.closedAt ? day(f.closedAt) : '—'} | ${failureSpan(f)} | ${markdownText(f.reason)} |`);
      out.push('');
    }
  }
  if (r.warnings.length) out.push('## Records skipped', '', ...r.warnings.map((w) => `- ${markdownText(w)}`), '');
  return `${out.join('\n')}\n`;
}

const STYLE = `
:root { color-scheme: light dark; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body { margin: 2rem auto; max-width: 72rem; padding: 0 1rem; line-height: 1.45; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; font-size: .92rem; }
th, td { border: 1px solid #8884; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #8881; }
.met { color: #1a7f37; font-weight: 600; } .gaps, .bad { color: #cf222e; font-weight: 600; }
.muted { opacity: .75; } code { overflow-wrap: anywhere; }
@media print { body { margin: 0; max-width: none; } }
`;

/**
 * The report as one HTML page with nothing to fetch: inline style only, allowed by its SHA-256
 * in a Content-Security-Policy (`default-src 'none'`, no script at all). Prints well (an
 * auditor's PDF). Every bucket value is HTML-escaped.
 */
export function renderQuarterlyHtml(r: QuarterlyEvidence): string {
  const csp = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(STYLE, 'utf8').digest('base64')}'; base-uri 'none'; form-action 'none'`;
  const rows: string[] = [];
  for (const d of r.databases) {
    rows.push(`<section><h2>${esc(name(d))}</h2>`);
    rows.push(`<p>Backups taken: <b>${d.backups}</b>. Verify runs: ${d.verifies.ok} passed, <span class="${d.verifies.failed ? 'bad' : ''}">${d.verifies.failed} failed</span>. Drills: ${d.drills.length}.</p>`);
    if (d.drills.length) {
      rows.push('<table><thead><tr><th>Drill (UTC)</th><th>Result</th><th>RTO / budget</th><th>RPO</th><th>Signature</th><th>Backup</th><th>Opened by</th></tr></thead><tbody>');
      for (const x of d.drills) {
        rows.push(`<tr><td>${esc(day(x.at))}</td><td class="${x.ok ? 'met' : 'bad'}">${x.ok ? 'OK' : `FAILED: ${esc(x.reason ?? '')}`}</td><td class="${x.withinBudget === false ? 'bad' : ''}">${esc(rto(x))}</td><td>${esc(rpo(x))}</td><td class="${x.signature === 'signed OK' ? 'met' : x.signature.startsWith('signed') ? '' : 'bad'}">${esc(x.signature)}</td><td><code>${esc(x.backupId)}</code></td><td>${x.openedBy ? `<code>${esc(x.openedBy)}</code>` : '—'}</td></tr>`);
      }
      rows.push('</tbody></table>');
    }
    if (d.failures.length) {
      rows.push('<table><thead><tr><th>Failure</th><th>Opened (UTC)</th><th>Closed (UTC)</th><th>Open for</th><th>Reason</th></tr></thead><tbody>');
      for (const f of d.failures) rows.push(`<tr><td>${f.kind}</td><td>${esc(day(f.openedAt))}</td><td>${f.closedAt ? esc(day(f.closedAt)) : '—'}</td><td class="${f.closedAt ? '' : 'bad'}">${esc(failureSpan(f))}</td><td>${esc(f.reason)}</td></tr>`);
      rows.push('</tbody></table>');
    }
    rows.push('</section>');
  }
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Backup and recovery evidence ${esc(r.quarter)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Backup and recovery evidence, ${esc(r.quarter)}</h1>
<p class="muted">Location <code>${esc(r.from)}</code>, ${esc(day(r.start))} to ${esc(day(r.end))} (exclusive); generated ${esc(day(r.generatedAt))} by ${esc(TOOL.name)} ${esc(TOOL.version)}. Drill signatures: ${esc(r.signatureCheck)}.</p>
<h2>Controls</h2>
<table id="controls"><thead><tr><th>Framework</th><th>Control</th><th>What it asks (summary)</th><th>Evidence in this report</th><th>State</th></tr></thead><tbody>
${r.controls.map((c) => `<tr><td>${esc(c.framework)}</td><td>${esc(c.control)}</td><td>${esc(c.asks)}</td><td>${esc(c.evidence)}</td><td class="${c.state}">${c.state}</td></tr>`).join('\n')}
</tbody></table>
${r.databases.length ? rows.join('\n') : '<p>No backup, verify record or drill report in this quarter.</p>'}
${r.warnings.length ? `<h2>Records skipped</h2><ul>${r.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul>` : ''}
</body>
</html>
`;
}
