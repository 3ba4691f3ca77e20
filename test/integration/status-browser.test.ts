// The status page opened in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core): rows, stale and failed markers, sorting, the three charts drawn, no console
// error, no request beyond the file itself, names from the bucket shown as text, light and dark
// schemes, a phone viewport. Screenshots go to test/.artifacts/ (git-ignored) for review.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core';
import { openStorage } from '../../src/storage/index.ts';
import { cli, fileLocation, root, s3Env } from '../helpers.ts';
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
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      });
      const url = pathToFileURL(file).href;
      const backgrounds: string[] = [];

      for (const colorScheme of ['light', 'dark'] as const) {
        const { context, page, trouble } = await open(browser, url, { colorScheme, viewport: { width: 1360, height: 900 } });
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
      const overflow = await phone.page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
      assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
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
