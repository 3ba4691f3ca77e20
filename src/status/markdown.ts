import { formatSeconds } from '../format.ts';
import type { FleetStatus } from './model.ts';
import { markdownCode, markdownText } from '../text/sinks.ts';
import { databaseName, globalsLine, rowCells, verdictLine } from './text.ts';

/**
 * The fleet status as GitHub-flavoured Markdown, for a job summary (`GITHUB_STEP_SUMMARY`) or
 * an issue: a verdict line, the table, the problems, and a Mermaid `xychart-beta` of the last
 * drill's RTO per database with the budget as a line (GitHub renders Mermaid blocks; see
 * https://mermaid.js.org/syntax/xyChart.html). Every value from the bucket is escaped for
 * Markdown (src/text/sinks.ts: {@link markdownText} in cells and notes, {@link markdownCode} for
 * the location; Mermaid labels keep letters, digits and `._/-` only).
 */
export function renderMarkdown(fleet: FleetStatus): string {
  const icon = { failed: '🔴', stale: '🟠', untrusted: '🟣', warning: '🟡', ok: '🟢' } as const;
  const out: string[] = [];
  out.push(`## Backup status: ${fleet.ok ? 'all fresh, no failed drill' : 'action needed'}`);
  out.push('');
  out.push(`${markdownText(verdictLine(fleet))} — ${markdownCode(fleet.from)}, max age ${formatSeconds(fleet.maxAgeMs)}, ${fleet.generatedAt.slice(0, 16).replace('T', ' ')} UTC`);
  out.push('');
  if (fleet.databases.length) {
    out.push('| state | database | newest backup (UTC) | age | size | trend | complete | proven | last verify | last drill | RTO |');
    out.push('|---|---|---|---|---|---|---:|---:|---|---|---|');
    for (const d of fleet.databases) {
      const c = rowCells(d);
      const cells = [`${icon[d.state]} ${c.state}`, c.database, c.newest, c.age, c.size, c.trend, c.complete, c.proven, c.verify, c.drill, c.rto];
      out.push(`| ${cells.map(markdownText).join(' | ')} |`);
    }
    out.push('');
  }
  const notes = fleet.databases.flatMap((d) => [...d.problems.map((p) => `**${markdownText(databaseName(d))}**: ${markdownText(p)}`), ...d.warnings.map((w) => `${markdownText(databaseName(d))}: ${markdownText(w)}`)]);
  notes.push(...(fleet.globals ?? []).map((g) => markdownText(globalsLine(g))));
  notes.push(...fleet.warnings.map((w) => `skipped: ${markdownText(w)}`));
  if (notes.length) {
    out.push(...notes.map((n) => `- ${n}`));
    out.push('');
  }
  const drilled = fleet.databases.filter((d) => d.lastDrill);
  if (drilled.length) {
    const minutes = (ms: number) => Math.round((ms / 60_000) * 100) / 100;
    const rtos = drilled.map((d) => minutes(d.lastDrill!.rtoMs));
    const budgets = drilled.map((d) => (d.rtoBudgetMs === null ? null : minutes(d.rtoBudgetMs)));
    const top = Math.max(...rtos, ...budgets.map((b) => b ?? 0));
    out.push('```mermaid');
    out.push('xychart-beta');
    out.push(`    title "RTO of the last drill (minutes)${budgets.some((b) => b !== null) ? ', line: budget' : ''}"`);
    out.push(`    x-axis [${drilled.map((d) => `"${mermaidLabel(databaseName(d))}"`).join(', ')}]`);
    out.push(`    y-axis "RTO (min)" 0 --> ${niceCeiling(top)}`);
    out.push(`    bar [${rtos.join(', ')}]`);
    if (budgets.some((b) => b !== null)) out.push(`    line [${budgets.map((b) => b ?? 0).join(', ')}]`);
    out.push('```');
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

/** A Mermaid axis label: only letters, digits, space and `._/-` survive (quotes and brackets would end it). */
export function mermaidLabel(text: string): string {
  return text.replace(/[^\p{L}\p{N} ._/-]/gu, '_').slice(0, 60);
}

/** A round axis maximum above `value` (at least 1). */
function niceCeiling(value: number): number {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil((value * 1.1) / step) * step;
}
