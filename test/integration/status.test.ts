import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { status } from '../../src/commands/status.ts';
import { UsageError } from '../../src/errors.ts';
import { backupKeys, drillFolder, utcStamp } from '../../src/backup/keys.ts';
import { verifyRecordKey } from '../../src/backup/proof.ts';
import { openStorage } from '../../src/storage/index.ts';
import { renderMarkdown } from '../../src/status/markdown.ts';
import { markdownText } from '../../src/text/sinks.ts';
import { esc } from '../../src/status/html.ts';
import { formatTable } from '../../src/status/text.ts';
import type { FleetStatus } from '../../src/status/model.ts';
import { cli, fileLocation, run, s3Env, s3Get, s3Location } from '../helpers.ts';
import { HOSTILE, buildFixture } from './status-fixture.ts';

Object.assign(process.env, s3Env());

const quiet = { info: () => undefined, warn: () => undefined, group: <T>(_n: string, fn: () => Promise<T>) => fn() };
const rowOf = (fleet: FleetStatus, name: string) => fleet.databases.find((d) => `${d.service}/${d.environment}/${d.database}` === name);

describe('pg-backup status over a fixture bucket (3 environments, 30 days)', () => {
  it('file://: table, JSON, exit codes, Markdown and HTML files', { timeout: 120_000 }, async () => {
    const location = await fileLocation();
    const root = fileURLToPath(location);
    const out = await mkdtemp(path.join(os.tmpdir(), 'pgb-status-out-'));
    try {
      const fixture = await buildFixture(openStorage(location), location, new Date(), true);

      // The terminal table: one row per database, the stale and failed markers, exit 1; Markdown and HTML files beside.
      const md = path.join(out, 'status.md');
      const html = path.join(out, 'status.html');
      const table = await cli(['status', '--from', location, '--markdown', md, '--html', html, '--rto-budget', '1m']);
      assert.equal(table.code, 1, table.stderr);
      assert.match(table.stderr, new RegExp(`wrote ${html}`));
      const lines = table.stdout.split('\n');
      assert.match(lines[0]!, /^STATE\s+SERVICE\/ENVIRONMENT\/DATABASE\s+NEWEST BACKUP\s+AGE\s+SIZE\s+TREND\s+COMPLETE\s+PROVEN\s+LAST VERIFY\s+LAST DRILL\s+RTO$/);
      const rowLines = lines.slice(1, 1 + fixture.rows.length);
      assert.deepEqual(rowLines.map((l) => l.split(/\s{2,}/)[1]), fixture.rows.map((r) => r.name));
      const line = (name: string) => rowLines.find((l) => l.includes(` ${name} `))!;
      assert.match(line('shop/staging/app'), /^STALE /);
      assert.match(line('shop/dev/app'), /^DRILL FAILED .* FAILED \d{4}-\d\d-\d\d \d\d:\d\d/);
      assert.match(line('shop/production/app'), /^OK .* OK \d{4}-\d\d-\d\d \d\d:\d\d \(archive\) +OK /);
      assert.match(line(`shop/production/${HOSTILE}`), /^OK .* OK .*\(checksum\) +never/);
      assert.match(line('shop/production/main'), /^OK +shop\/production\/main +physical/);
      // The fixture's backups are at 02:00 of their days: the age reads "2 d 3 h" or, just after
      // midnight, "70 h 1 min" (under 72 h), depending on the hour the test runs.
      assert.match(table.stdout, /shop\/staging\/app: stale: the newest complete backup is (\d+ d \d+ h|\d+ h \d+ min) old \(max 30 h 0 min\)/);
      assert.match(table.stdout, /shop\/dev\/app: last drill failed \(.*\): row count of public\.orders is 10, the manifest says 12/);
      assert.match(table.stdout, /warning: ignoring the drill report file:\/\/.*-drill-\d{8}T\d{6}Z\.json: .*JSON/);
      assert.match(table.stdout, /5 databases: 3 ok, 1 stale, 1 with a failed drill/);

      // JSON for scripts.
      const json = await cli(['status', '--from', location, '--json']);
      assert.equal(json.code, 1, json.stderr);
      const fleet = JSON.parse(json.stdout) as FleetStatus;
      assert.equal(fleet.ok, false);
      assert.deepEqual(fleet.counts, { databases: 5, ok: 3, warning: 0, untrusted: 0, stale: 1, failed: 1 });
      assert.deepEqual(
        fleet.databases.map((d) => ({ name: `${d.service}/${d.environment}/${d.database}`, state: d.state, complete: d.kind === 'physical' ? null : d.backups.complete, proven: d.kind === 'physical' ? null : d.backups.proven })),
        fixture.rows,
      );
      const staging = rowOf(fleet, 'shop/staging/app')!;
      assert.equal(staging.stale, true);
      assert.ok(staging.newest!.ageMs > 2 * 86_400_000, String(staging.newest!.ageMs));
      const dev = rowOf(fleet, 'shop/dev/app')!;
      assert.equal(dev.drillFailed, true);
      assert.equal(dev.stale, false);
      assert.equal(dev.lastDrill!.ok, false);
      const prod = rowOf(fleet, 'shop/production/app')!;
      assert.equal(prod.rtoBudgetMs, 120_000, 'the budget recorded in the drill reports');
      assert.equal(prod.lastDrill!.rtoMs, 40_000 + (prod.history.drills.length - 1) * 6_000);
      assert.ok(prod.rtoTrendPercent! > 0, 'RTO creeping up');
      assert.ok(prod.sizeTrendPercent! > 0 && prod.sizeTrendPercent! < 5, String(prod.sizeTrendPercent));
      assert.equal(prod.history.sizes.length, prod.backups.complete);
      assert.equal(prod.lastVerify!.level, 'archive');
      const real = rowOf(fleet, `shop/production/${HOSTILE}`)!;
      assert.equal(real.newest!.key.endsWith('.dump.zst'), true);
      assert.equal(real.lastVerify!.ok, true);
      assert.equal(rowOf(fleet, 'shop/production/main')!.kind, 'physical');
      assert.equal(rowOf(fleet, 'shop/production/main')!.lastDrill!.maxRtoMs, 180_000);
      assert.equal(rowOf(fleet, 'shop/production/main')!.lastDrill!.rpoMs, 240_000);
      assert.equal(rowOf(fleet, 'shop/production/main')!.stale, false, 'no dumps to date a physical stanza by');
      assert.equal(fleet.warnings.length, 1);

      // --max-age moves the line; a narrower scope that is all fresh and drilled exits 0.
      const lenient = (await status({ from: location, maxAge: '5d', logger: quiet })).fleet;
      assert.equal(rowOf(lenient, 'shop/staging/app')!.stale, false);
      assert.equal(lenient.ok, false, 'the failed drill still fails it');
      const prodOnly = await cli(['status', '--from', location, '--service', 'shop', '--environment', 'production']);
      assert.equal(prodOnly.code, 0, prodOnly.stdout + prodOnly.stderr);
      assert.match(prodOnly.stdout, /3 databases: 3 ok/);

      // The Markdown and HTML files, written whole; values from the bucket escaped.
      const mdText = await readFile(md, 'utf8');
      assert.match(mdText, /^## Backup status: action needed/);
      assert.match(mdText, /\| 🟠 STALE \| shop/);
      assert.match(mdText, /\| 🔴 DRILL FAILED \| shop/);
      assert.ok(mdText.includes(`shop/production/${markdownText(HOSTILE)}`), 'hostile name escaped in the table');
      assert.ok(!mdText.includes('<img'), 'no raw HTML from the bucket');
      assert.match(mdText, /```mermaid\nxychart-beta\n {4}title "RTO of the last drill \(minutes\), line: budget"\n {4}x-axis \["shop\/dev\/app", "shop\/production\/app", "shop\/production\/main", "shop\/staging\/app"\]\n {4}y-axis "RTO \(min\)" 0 --> \d+(\.\d+)?\n {4}bar \[[\d., ]+\]\n {4}line \[1, 2, 3, 1\]\n```/);
      const page = await readFile(html, 'utf8');
      assert.ok(page.includes(esc(HOSTILE)) && !page.includes(HOSTILE), 'hostile name escaped in the page');
      assert.match(page, /Chart\.js v4\.\d+\.\d+/);
      assert.match(page, /<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; script-src &#39;sha256-/);
      assert.doesNotMatch(page, /sourceMappingURL|https?:\/\/(?!www\.chartjs\.org)[^"' ]*\.(js|css)/);
      assert.deepEqual((await readdir(out)).sort(), ['status.html', 'status.md'], 'no temporary file left');
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(out, { recursive: true, force: true });
    }
  });

  it('s3:// on Ceph RGW: the same verdicts, and --publish puts status/index.html that no listing mistakes for a backup', { timeout: 120_000 }, async () => {
    const location = s3Location('status');
    const fixture = await buildFixture(openStorage(location), location, new Date(), false);
    const first = await cli(['status', '--from', location, '--json', '--publish']);
    assert.equal(first.code, 1, first.stderr);
    const fleet = JSON.parse(first.stdout) as FleetStatus;
    assert.deepEqual(fleet.databases.map((d) => [`${d.service}/${d.environment}/${d.database}`, d.state]), fixture.rows.map((r) => [r.name, r.state]));
    const published = (await s3Get(location, 'status/index.html')).toString();
    assert.match(published, /^<!doctype html>/);
    assert.match(published, /<tr class="state-stale" data-state="stale"/);
    const again = JSON.parse((await cli(['status', '--from', location, '--json'])).stdout) as FleetStatus;
    assert.deepEqual(again.databases.map((d) => d.database), fleet.databases.map((d) => d.database), 'the page is not a database');
    const listed = await cli(['list', '--from', location, '--json']);
    assert.ok(!listed.stdout.includes('status/index.html'));
  });

  it('warnings: a later failed verify unproves a drilled backup, a missing dump object, a size collapse, an RTO over budget', { timeout: 60_000 }, async () => {
    const location = await fileLocation();
    try {
      const storage = openStorage(location);
      const labels = { service: 'api', environment: 'prod', database: 'app' };
      const now = new Date();
      const at = (hoursAgo: number) => new Date(now.getTime() - hoursAgo * 3_600_000);
      const put = async (hoursAgo: number, bytes: number | undefined) => {
        const keys = backupKeys(labels, at(hoursAgo), '.dump.zst', `${hoursAgo.toString(16).padStart(6, '0')}`);
        if (bytes !== undefined) await storage.put(keys.objectKey, new Uint8Array(bytes));
        await storage.put(keys.manifestKey, '{}');
        return keys;
      };
      const old = await put(72, 10_000);
      await put(48, 10_000);
      await put(36, undefined); // manifest without its dump object
      const newest = await put(2, 4_000); // 60 % smaller than the ones before
      const record = (id: string, manifestKey: string, ok: boolean, hoursAgo: number) =>
        storage.put(verifyRecordKey(manifestKey), JSON.stringify({ recordVersion: 1, tool: { name: 't', version: '1' }, backupId: id, level: 'archive', ok, ...(ok ? {} : { reason: 'sha256 mismatch' }), verifiedAt: at(hoursAgo).toISOString(), durationMs: 5 }));
      const drilled = at(60);
      await storage.put(`${drillFolder(labels, drilled)}${old.id}-drill-${utcStamp(drilled)}.json`, JSON.stringify({ ok: true, startedAt: drilled.toISOString(), rtoMs: 90_000, backupId: old.id }));
      await record(old.id, old.manifestKey, false, 50); // after the drill: no longer proven
      await record(newest.id, newest.manifestKey, false, 1);
      const { fleet } = await status({ from: location, rtoBudget: '1m', logger: quiet });
      const [d] = fleet.databases;
      assert.equal(d!.state, 'warning');
      assert.equal(fleet.ok, true, 'warnings do not fail the check');
      assert.deepEqual(d!.backups, { complete: 3, proven: 0, missingObject: 1 });
      assert.equal(d!.sizeTrendPercent, -60);
      assert.deepEqual(d!.warnings, [
        'last verify failed (' + at(1).toISOString() + ', archive): sha256 mismatch',
        '1 manifest has no dump object: damaged or deleted by hand',
        'the newest backup is 60% smaller than the ones before it',
        "last drill's RTO 1 min 30 s is over the budget 1 min 0 s",
      ]);
      const cli1 = await cli(['status', '--from', location]);
      assert.equal(cli1.code, 0, cli1.stderr);
      assert.match(cli1.stdout, /^WARNING +api\/prod\/app /m);
    } finally {
      await rm(fileURLToPath(location), { recursive: true, force: true });
    }
  });

  it('bad input: one line, exit 2, nothing written', { timeout: 60_000 }, async () => {
    const empty = await fileLocation();
    const fixtureLoc = await fileLocation();
    try {
      const none = await cli(['status', '--from', empty]);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /^pg-backup: no backups and no drill reports under file:\/\/.*: check --from/);
      assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
      await buildFixture(openStorage(fixtureLoc), fixtureLoc, new Date(), false);
      const banana = await cli(['status', '--from', fixtureLoc, '--max-age', 'banana', '--html', path.join(fileURLToPath(fixtureLoc), 'x.html')]);
      assert.equal(banana.code, 2);
      assert.match(banana.stderr, /^pg-backup: --max-age "banana" is not a duration: use a number with a unit/);
      assert.equal(banana.stderr.trim().split('\n').length, 1, banana.stderr);
      assert.equal(banana.stdout, '');
      for (const [options, rx] of [
        [{ maxAge: '0h' }, /--max-age "0h" must be longer than 0/],
        [{ rtoBudget: '30' }, /--rto-budget "30" is not a duration/],
        [{ htmlFile: '/nonexistent-dir/x/status.html' }, /cannot write \/nonexistent-dir\/x\/status\.html: .*writable directory/],
        [{ markdownFile: ' ' }, /an output file name is empty/],
      ] as const) {
        await assert.rejects(status({ from: fixtureLoc, logger: quiet, ...options }), (err: Error) => err instanceof UsageError && rx.test(err.message));
      }
      assert.deepEqual((await readdir(fileURLToPath(fixtureLoc))).sort(), ['drills', 'shop'], 'nothing written beside the backups');
    } finally {
      await rm(fileURLToPath(empty), { recursive: true, force: true });
      await rm(fileURLToPath(fixtureLoc), { recursive: true, force: true });
    }
  });

  it('the CLI bundle carries Chart.js inline: run with read access to its own folder and the bucket only, it writes the page', { timeout: 120_000 }, async () => {
    const { cliBundle } = await import('../../scripts/build.ts');
    const { text } = await cliBundle();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-status-bundle-'));
    const location = await fileLocation();
    try {
      await buildFixture(openStorage(location), location, new Date(), false);
      await writeFile(path.join(dir, 'cli.mjs'), text);
      await writeFile(path.join(dir, 'run.mjs'), "const { main } = await import('./cli.mjs');\nprocess.exitCode = await main(process.argv);\n");
      const html = path.join(dir, 'page.html');
      // Node's permission model: reading node_modules (or anything but these folders) throws ERR_ACCESS_DENIED.
      const r = await run(process.execPath, ['--permission', `--allow-fs-read=${dir}`, `--allow-fs-read=${fileURLToPath(location)}`, `--allow-fs-write=${dir}`, path.join(dir, 'run.mjs'), 'status', '--from', location, '--html', html]);
      assert.equal(r.code, 1, r.stderr);
      const page = await readFile(html, 'utf8');
      const library = await readFile(path.join(path.dirname(fileURLToPath(import.meta.resolve('chart.js'))), 'chart.umd.min.js'), 'utf8');
      assert.ok(page.includes(library.slice(0, 2000)), 'the library is inline');
      assert.ok((await stat(html)).size > library.length);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(fileURLToPath(location), { recursive: true, force: true });
    }
  });
});

describe('status views (unit)', () => {
  it('escape names from the bucket in Markdown, Mermaid and the terminal', () => {
    const fleet: FleetStatus = {
      ok: true, generatedAt: '2026-12-01T06:00:00.000Z', from: 'file:///b', maxAgeMs: 108_000_000, rtoBudgetMs: null, warnings: [],
      counts: { databases: 1, ok: 1, warning: 0, untrusted: 0, stale: 0, failed: 0 },
      databases: [{
        service: 'svc|x', environment: 'env\u001b[31m', database: 'db"]\n<script>', kind: 'logical', state: 'ok', stale: false, drillFailed: false, untrusted: [], problems: [], warnings: [],
        newest: { id: 'x', startedAt: '2026-12-01T02:00:00Z', ageMs: 14_400_000, sizeBytes: 1234, key: 'k' }, sizeTrendPercent: 2.5,
        backups: { complete: 1, proven: 0, missingObject: 0 }, lastVerify: null,
        lastDrill: { at: '2026-12-01T03:00:00.000Z', ok: true, rtoMs: 61_000, reportKey: 'r' }, rtoTrendPercent: null, rtoBudgetMs: null,
        history: { sizes: [], drills: [] },
      }],
    };
    const md = renderMarkdown(fleet);
    assert.ok(md.includes('svc\\|x/env\\\\x1b\\[31m/db"\\]\\\\n&lt;script&gt;'), md);
    assert.match(md, /x-axis \["svc_x\/env__31m\/db____script_"\]/);
    assert.doesNotMatch(md, /line \[/, 'no budget, no line');
    const table = formatTable(fleet);
    assert.ok(!table.includes('\u001b'), 'no terminal escape from a name');
    assert.match(table, /svc\|x\/env\\x1b\[31m\/db"\]\\n<script>/, 'control characters shown escaped');
  });
});
