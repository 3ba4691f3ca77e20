import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

/**
 * Chart.js (MIT, https://www.chartjs.org), inlined into the status page so that opening it makes
 * no network request. The bundles (`dist/cli.js`, `actions/*\/dist`) carry the library's text:
 * scripts/build.ts defines `__PGB_CHART_JS__` as the contents of `chart.js/dist/chart.umd.min.js`.
 * Run from the sources, it is read from node_modules.
 */
declare const __PGB_CHART_JS__: string | undefined;

/** The chart library: its name and version, and its minified UMD source (defines `window.Chart`). */
export interface ChartLibrary {
  name: string;
  version: string;
  source: string;
}

/** The path of the minified UMD build in the installed `chart.js` package (its `exports` hide `dist/`). */
export function chartLibraryPath(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('chart.js')), 'chart.umd.min.js');
}

let cached: ChartLibrary | undefined;

/**
 * Loads the chart library's source, ready to sit inside a `<script>` element: its source-map
 * comment removed (the page must not ask for a `.map` file) and any `</script` escaped.
 * @throws Error when run from the sources without `chart.js` installed (`npm ci`).
 */
export async function chartLibrary(): Promise<ChartLibrary> {
  if (cached) return cached;
  const raw = typeof __PGB_CHART_JS__ === 'string' ? __PGB_CHART_JS__ : await readFile(chartLibraryPath(), 'utf8');
  const version = /Chart\.js v(\d+\.\d+\.\d+)/.exec(raw)?.[1] ?? 'unknown';
  const source = raw.replace(/\n?\/\/# sourceMappingURL=\S*\s*$/, '\n').replace(/<\/script/gi, '<\\/script');
  cached = { name: 'Chart.js', version, source };
  return cached;
}
