// The status page opened in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core): rows, stale and failed markers, sorting, the three charts drawn, no console
// error, no request beyond the file itself, names from the bucket shown as text, light and dark
// schemes at 1280 px and a phone viewport with no sideways scrolling; time axes labelled by
// span (hours within a day, days, months); one colour per database whatever else the page
// shows. Screenshots go to test/.artifacts/ (git-ignored) for review.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core';
import { openStorage } from '../../src/storage/index.ts';
import { cli, fileLocation, root, s3Env } from '../helpers.ts';
import { writeSeries, type Series } from './status-chart-fixture.ts';
import { HOSTILE, buildFixture } from './status-fixture.ts';

Object.assign(process.env, s3Env());
/** Debian's chromium (scripts/setup.sh test), else Google Chrome as GitHub's Ubuntu images have it; PGB_CHROMIUM overrides. */
const CHROMIUM = process.env.PGB_CHROMIUM || ['/usr/bin/chromium', '/usr/bin/google-chrome'].find((p) => existsSync(p)) || '/usr/bin/chromium';
const ARTIFACTS = path.join(root, 'test', '.artifacts');

/** Opens the page in a fresh context and collects everything that must not happen. */
async function open(browser: Browser, url: string, options: BrowserContextOptions) {
  const context = await browser.newContext(options);
  const trouble: string[] = [];
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith('file:')) return route.continue();
    trouble.push(`network request: ${u}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.on('request', (r) => {
    if (!r.url().startsWith('file:')) trouble.push(`request: ${r.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') trouble.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => trouble.push(`page error: ${e.message}`));
  page.on('dialog', (d) => {
    trouble.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(url);
  await page.waitForSelector('html[data-charts="3"]', { timeout: 20_000 });
  return { context, page, trouble };
}

/** Per canvas: its id and how many of its pixels are not transparent (browser code as text: the project's types have no DOM). */
function paintedPixels(page: Page): Promise<{ id: string; painted: number; width: number; height: number }[]> {
  return page.evaluate(`[...document.querySelectorAll('canvas')].map((c) => {
    const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
    return { id: c.id, painted, width: c.width, height: c.height };
  })`);
}

/**
 * The page's scroll width (`document.documentElement.scrollWidth`, at most the viewport's when
 * nothing sticks out) and whether the table fits its box ('fits') or scrolls inside it (by how many px).
 */
function widths(page: Page): Promise<{ page: number; table: string }> {
  return page.evaluate(`(() => {
    const wrap = document.querySelector('.table-wrap');
    const over = wrap ? wrap.scrollWidth - wrap.clientWidth : 0;
    return { page: document.documentElement.scrollWidth, table: over > 0 ? over + 'px too wide' : 'fits' };
  })()`);
}

/** The x-axis tick labels Chart.js shows on each time chart (after skipping those that would overlap). */
function timeLabels(page: Page): Promise<{ size: string[]; rto: string[] }> {
  return page.evaluate(`({
    size: Chart.getChart('chart-size').scales.x.ticks.map((t) => t.label),
    rto: Chart.getChart('chart-rto').scales.x.ticks.map((t) => t.label),
  })`);
}

/** Per chart, each dataset's label and line colour. */
function seriesColours(page: Page): Promise<{ size: Record<string, string>; rto: Record<string, string> }> {
  return page.evaluate(`(() => {
    const of = (id) => Object.fromEntries(Chart.getChart(id).data.datasets.map((d) => [d.label, d.borderColor]));
    return { size: of('chart-size'), rto: of('chart-rto') };
  })()`);
}

const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/** A computed style property of the first element matching `selector`. */
function styleOf(page: Page, selector: string, property: string): Promise<string> {
  return page.evaluate(`getComputedStyle(document.querySelector(${JSON.stringify(selector)}))[${JSON.stringify(property)}]`);
}

describe('status page in headless Chromium', () => {
  it('shows every database with its markers, sorts, draws three charts, requests nothing, light and dark, phone', { timeout: 180_000 }, async () => {
    const location = await fileLocation();
    const out = await mkdtemp(path.join(os.tmpdir(), 'pgb-status-page-'));
    let browser: Browser | undefined;
    try {
      const fixture = await buildFixture(openStorage(location), location, new Date(), false);
      const file = path.join(out, 'status.html');
      const r = await cli(['status', '--from', location, '--html', file, '--rto-budget', '1m']);
      assert.equal(r.code, 1, r.stderr);
      await mkdir(ARTIFACTS, { recursive: true });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
      const url = pathToFileURL(file).href;
      const backgrounds: string[] = [];

      for (const colorScheme of ['light', 'dark'] as const) {
        const { context, page, trouble } = await open(browser, url, { colorScheme, viewport: { width: 1280, height: 900 } });
        assert.deepEqual(await widths(page), { page: 1280, table: 'fits' }, 'no sideways scrolling at 1280 px');
        // Rows, in order, with their markers.
        const rows = await page.$$eval('#fleet tbody tr', (trs) =>
          trs.map((tr) => ({ name: tr.querySelector('.name')!.textContent, state: tr.getAttribute('data-state'), badges: [...tr.querySelectorAll('.badge')].map((b) => b.textContent) })),
        );
        assert.deepEqual(rows.map((x) => [x.name, x.state]), fixture.rows.map((x) => [x.name, x.state]));
        assert.deepEqual(rows.find((x) => x.name === 'shop/staging/app')!.badges, ['STALE']);
        assert.deepEqual(rows.find((x) => x.name === 'shop/dev/app')!.badges, ['DRILL FAILED']);
        assert.deepEqual(rows.find((x) => x.name === 'shop/production/app')!.badges, ['OK']);
        assert.equal(await page.$$eval('#fleet img, #fleet script', (e) => e.length), 0, 'the hostile name made no element');
        assert.match((await page.textContent('#verdict'))!, /5 databases: 3 ok, 1 stale, 1 with a failed drill/);
        const staleColor = await styleOf(page, 'tr[data-state="stale"]', 'borderLeftColor');
        const okColor = await styleOf(page, 'tr[data-state="ok"]', 'borderLeftColor');
        assert.notEqual(staleColor, okColor, 'status colours');

        // The charts: three canvases with a chart each, and paint on them.
        const canvases = await paintedPixels(page);
        assert.deepEqual(canvases.map((c) => c.id), ['chart-size', 'chart-rto', 'chart-age']);
        for (const c of canvases) assert.ok(c.painted > 2_000, `${c.id}: ${c.painted} painted pixels of ${c.width}x${c.height}`);
        const charts = await page.evaluate<{ label: string; points: number }[][]>(
          `['chart-size', 'chart-rto', 'chart-age'].map((id) => Chart.getChart(id).data.datasets.map((d) => ({ label: d.label, points: d.data.length })))`,
        );
        assert.deepEqual(charts[0]!.map((d) => d.label), fixture.rows.filter((x) => x.complete !== null).map((x) => x.name));
        assert.deepEqual(charts[1]!.map((d) => d.label), ['shop/dev/app', 'shop/production/app', 'shop/production/main', 'shop/staging/app', 'RTO budget 1 min 0 s', 'RTO budget 2 min 0 s', 'RTO budget 3 min 0 s']);
        assert.equal(charts[2]![0]!.points, 4, 'age bars: the logical databases');
        // 30 days of daily backups: the x axes say days ("Nov 9"), all different.
        for (const labels of Object.values(await timeLabels(page))) {
          assert.ok(labels.length >= 3, labels.join(' | '));
          for (const l of labels) assert.match(l, /^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}$/, labels.join(' | '));
          assert.equal(new Set(labels).size, labels.length, labels.join(' | '));
        }

        // Sorting: Age ascending puts the freshest first and the physical stanza (no age) last; again, the stale one first.
        await page.click('th:nth-child(4) button');
        let order = await page.$$eval('#fleet tbody tr .name', (n) => n.map((e) => e.textContent));
        assert.equal(order.at(-1), 'shop/production/main');
        assert.equal(await page.getAttribute('th:nth-child(4)', 'aria-sort'), 'ascending');
        await page.click('th:nth-child(4) button');
        order = await page.$$eval('#fleet tbody tr .name', (n) => n.map((e) => e.textContent));
        assert.equal(order[0], 'shop/staging/app');
        await page.click('th:nth-child(2) button');
        order = await page.$$eval('#fleet tbody tr .name', (n) => n.map((e) => e.textContent));
        assert.deepEqual(order, fixture.rows.map((x) => x.name), 'by name');
        assert.ok(order.includes(`shop/production/${HOSTILE}`), 'the hostile name shown as text');

        backgrounds.push(await styleOf(page, 'body', 'backgroundColor'));
        await page.screenshot({ path: path.join(ARTIFACTS, `status-${colorScheme}.png`), fullPage: true });
        assert.deepEqual(trouble, []);
        await context.close();
      }
      assert.notEqual(backgrounds[0], backgrounds[1], 'light and dark schemes differ');

      // A phone: no sideways scrolling, the rows become cards, the charts still drawn.
      const phone = await open(browser, url, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
      assert.deepEqual(await widths(phone.page), { page: 390, table: 'fits' }, 'no sideways scrolling on a phone');
      assert.equal(await styleOf(phone.page, '#fleet tbody tr', 'display'), 'block');
      for (const c of await paintedPixels(phone.page)) assert.ok(c.painted > 2_000, `${c.id} on a phone: ${c.painted}`);
      await phone.page.screenshot({ path: path.join(ARTIFACTS, 'status-phone.png'), fullPage: true });
      assert.deepEqual(phone.trouble, []);
      await phone.context.close();
    } finally {
      await browser?.close();
      await rm(out, { recursive: true, force: true });
      await rm(fileURLToPath(location), { recursive: true, force: true });
    }
  });
});

describe('status page charts and layout in headless Chromium', () => {
  const HOUR = 3_600_000;
  const DAY = 24 * HOUR;
  let browser: Browser;
  let out: string;
  const locations: string[] = [];
  before(async () => {
    out = await mkdtemp(path.join(os.tmpdir(), 'pgb-status-charts-'));
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
    await rm(out, { recursive: true, force: true });
    for (const l of locations) await rm(fileURLToPath(l), { recursive: true, force: true });
  });

  /** A bucket holding `series`, rendered by `pg-backup status --html`; returns the page's file URL. */
  async function render(label: string, series: Series[]): Promise<string> {
    const location = await fileLocation();
    locations.push(location);
    await writeSeries(openStorage(location), series);
    const file = path.join(out, `${label}.html`);
    const r = await cli(['status', '--from', location, '--html', file]);
    assert.ok(r.code === 0 || r.code === 1, r.stderr);
    return pathToFileURL(file).href;
  }

  it('labels a time axis by its span: hours within a day, months across half a year', { timeout: 120_000 }, async () => {
    // One day, 03:00–21:00 UTC (far from midnight, whatever the time the test runs).
    const day = Date.UTC(2026, 2, 10);
    const hours = (from: number, to: number, step: number) => Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => day + (from + i * step) * HOUR);
    const url = await render('within-a-day', [
      { name: 'shop/production/app', backups: hours(3, 21, 2), drilled: [day + 5 * HOUR, day + 13 * HOUR, day + 19 * HOUR] },
      { name: 'shop/staging/app', backups: hours(4, 20, 4), drilled: [day + 8 * HOUR] },
    ]);
    const { context, page, trouble } = await open(browser, url, { viewport: { width: 1280, height: 900 } });
    const labels = await timeLabels(page);
    for (const [chart, list] of Object.entries(labels)) {
      assert.ok(list.length >= 3, `${chart}: ${list.join(' | ')}`);
      for (const l of list) assert.match(l, /^\d\d:\d\d$/, `${chart}: ${list.join(' | ')}`);
      assert.equal(new Set(list).size, list.length, `${chart}: every label differs: ${list.join(' | ')}`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, 'status-within-a-day.png'), fullPage: true });
    assert.deepEqual(trouble, []);
    await context.close();

    // Weekly backups from January to August: months with their year.
    const weekly = Array.from({ length: 34 }, (_, i) => Date.UTC(2026, 0, 5) + 2 * HOUR + i * 7 * DAY);
    const months = await open(browser, await render('months', [{ name: 'shop/production/app', backups: weekly, drilled: weekly.filter((_, i) => i % 4 === 0) }]), { viewport: { width: 1280, height: 900 } });
    for (const [chart, list] of Object.entries(await timeLabels(months.page))) {
      assert.ok(list.length >= 3, `${chart}: ${list.join(' | ')}`);
      for (const l of list) assert.match(l, /^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep) 2026$/, `${chart}: ${list.join(' | ')}`);
    }
    assert.deepEqual(months.trouble, []);
    await months.context.close();
  });

  it('gives a database the same colour in every chart and in pages that show other databases in other places', { timeout: 120_000 }, async () => {
    const t0 = Date.UTC(2026, 2, 1, 2);
    const daily = Array.from({ length: 10 }, (_, i) => t0 + i * DAY);
    const s = (name: string): Series => ({ name, backups: daily, drilled: [daily[2]!, daily[7]!] });
    // gamma is second of two here, third of four there (an index-based palette would change its colour).
    const one = await open(browser, await render('colours-1', [s('shop/production/gamma'), s('shop/production/delta')]), { viewport: { width: 1280, height: 900 } });
    const two = await open(browser, await render('colours-2', [s('shop/production/alpha'), s('shop/production/beta'), s('shop/production/gamma'), s('shop/staging/gamma')]), { viewport: { width: 1280, height: 900 } });
    const a = await seriesColours(one.page);
    const b = await seriesColours(two.page);
    const palette = await one.page.evaluate<string[]>(`Array.from({ length: 10 }, (_, i) => getComputedStyle(document.documentElement).getPropertyValue('--series-' + i).trim())`);
    for (const chart of ['size', 'rto'] as const) {
      assert.equal(a[chart]['shop/production/gamma'], b[chart]['shop/production/gamma'], `${chart}: gamma keeps its colour`);
      assert.equal(a[chart]['shop/production/gamma'], a.size['shop/production/gamma'], 'the same colour in both charts');
      assert.equal(b[chart]['shop/production/alpha'], b.size['shop/production/alpha'], 'the same colour in both charts');
      for (const colour of [...Object.values(a[chart]), ...Object.values(b[chart])].filter((c) => !/^#cf222e$/i.test(c))) assert.ok(palette.includes(colour), `${colour} is from the palette`);
    }
    // Drawn again in the dark scheme (a scheme change redraws the charts): the same place in its palette.
    const first = b.size['shop/production/alpha']!;
    await two.page.emulateMedia({ colorScheme: 'dark' });
    // A function, not a string: the page's CSP forbids eval, which a string predicate needs.
    await two.page.waitForFunction((light) => (globalThis as unknown as { Chart: { getChart(id: string): { data: { datasets: { borderColor: string }[] } } } }).Chart.getChart('chart-size').data.datasets[0]!.borderColor !== light, first);
    const dark = await seriesColours(two.page);
    const darkPalette = await two.page.evaluate<string[]>(`Array.from({ length: 10 }, (_, i) => getComputedStyle(document.documentElement).getPropertyValue('--series-' + i).trim())`);
    assert.notDeepEqual(darkPalette, palette);
    for (const [name, colour] of Object.entries(b.size)) assert.equal(darkPalette.indexOf(dark.size[name]!), palette.indexOf(colour), name);
    assert.deepEqual([...one.trouble, ...two.trouble], []);
    await one.context.close();
    await two.context.close();
  });

  it('fits 1280 px and a 390 px phone without sideways scrolling, with a 63-character database name', { timeout: 120_000 }, async () => {
    const t0 = Date.UTC(2026, 2, 1, 2);
    const daily = Array.from({ length: 5 }, (_, i) => t0 + i * DAY);
    const long = 'a_database_name_of_sixty_three_characters_without_a_break_xxxxx';
    assert.equal(long.length, 63);
    const url = await render('long-name', [
      { name: `a-service-with-a-long-name/production-eu-west-1/${long}`, backups: daily, drilled: [daily[1]!] },
      { name: 'shop/production/app', backups: daily },
    ]);
    for (const [width, options] of [
      [1280, { viewport: { width: 1280, height: 900 } }],
      [390, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }],
    ] as const) {
      const { context, page, trouble } = await open(browser, url, options);
      assert.deepEqual(await widths(page), { page: width, table: 'fits' }, `at ${width} px`);
      await page.screenshot({ path: path.join(ARTIFACTS, `status-long-name-${width}.png`), fullPage: true });
      assert.deepEqual(trouble, []);
      await context.close();
    }
  });
});
