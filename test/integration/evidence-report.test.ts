// The quarterly evidence report over a hand-built file:// bucket (backups by their manifests,
// drill records written by the drill's own writer, signed or not): the figures per database, a
// failure opened in the previous quarter and one opened and closed inside, RTO against budget,
// the signature states, the control rows and their gaps; Markdown and HTML escape the hostile
// names; the HTML page opened in headless Chromium (Debian's chromium via playwright-core)
// shows it with no script, no request and the hostile name as text.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { backupKeys } from '../../src/backup/keys.ts';
import { verifyRecordKey } from '../../src/backup/proof.ts';
import { drillRecordKeys, writeDrillRecord } from '../../src/commands/drill-report.ts';
import { loadSigningKey } from '../../src/evidence/dsse.ts';
import { failureWindows, parseQuarter } from '../../src/evidence/quarterly.ts';
import { logicalSubject } from '../../src/evidence/statement.ts';
import { openStorage } from '../../src/storage/index.ts';
import { cli, fileLocation, run } from '../helpers.ts';
import { manifestFor } from '../manifest-fixture.ts';

const CHROMIUM = process.env.PGB_CHROMIUM || ['/usr/bin/chromium', '/usr/bin/google-chrome'].find((p) => existsSync(p)) || '/usr/bin/chromium';
const HOSTILE = '<img src=x onerror=alert(1)>|*_`';
const DAY = 86_400_000;

let location: string;
let keys: string;
const app = { service: 'api', environment: 'production', database: 'app' };
const evil = { service: 'api', environment: 'production', database: HOSTILE };

before(async () => {
  location = await fileLocation();
  keys = await mkdtemp(path.join(os.tmpdir(), 'pgb-report-keys-'));
  assert.equal((await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', path.join(keys, 'k.pem')])).code, 0);
  assert.equal((await run('openssl', ['pkey', '-in', path.join(keys, 'k.pem'), '-pubout', '-out', path.join(keys, 'k.pub')])).code, 0);
  const signingKey = loadSigningKey(path.join(keys, 'k.pem'));
  const storage = openStorage(location);
  const backup = async (labels: typeof app, at: string, suffix: string) => {
    const k = backupKeys(labels, new Date(at), '.dump.zst', suffix);
    await storage.put(k.manifestKey, manifestFor(k.manifestKey.replace(/\.manifest\.json$/, ''), { sizeBytes: 4 }));
    await storage.put(k.objectKey, 'data');
    return k;
  };
  const drill = async (labels: typeof app, b: { id: string; objectKey: string }, at: string, fields: object, signed: boolean) => {
    const startedAt = new Date(at);
    await writeDrillRecord(storage, drillRecordKeys(labels, b.id, startedAt), { startedAt: startedAt.toISOString(), backupId: b.id, ...fields }, ['restore drill'], { subject: logicalSubject(b.objectKey, '0'.repeat(64)), signingKey: signed ? signingKey : undefined });
  };
  const sep = await backup(app, '2026-09-19T00:00:00Z', 'aaaaaa');
  const oct = await backup(app, '2026-10-04T00:00:00Z', 'bbbbbb');
  const nov = await backup(app, '2026-11-01T00:00:00Z', 'cccccc');
  const dec = await backup(app, '2026-12-01T00:00:00Z', 'dddddd');
  await backup(evil, '2026-11-15T00:00:00Z', 'eeeeee');
  await drill(app, sep, '2026-09-20T03:00:00Z', { ok: false, reason: 'restore failed: disk full', rtoMs: 1000 }, true);
  await drill(app, oct, '2026-10-05T03:00:00Z', { ok: true, rtoMs: 60_000, rpoMs: 3 * 3_600_000, budgets: { maxRtoMs: 120_000 }, decryption: { identityRecipients: ['age1escrow'], openedBy: 'age1escrow', openedByListed: true } }, true);
  await drill(app, nov, '2026-11-01T03:00:00Z', { ok: false, reason: `row counts differ ${HOSTILE}`, rtoMs: 5000 }, true);
  await drill(app, nov, '2026-11-03T03:00:00Z', { ok: true, rtoMs: 200_000, rpoMs: 51 * 3_600_000, budgets: { maxRtoMs: 120_000 } }, true);
  await drill(app, dec, '2026-12-02T03:00:00Z', { ok: true, rtoMs: 50_000, rpoMs: 27 * 3_600_000 }, false);
  // A drill in the next quarter is not in this one.
  await drill(app, dec, '2027-01-02T03:00:00Z', { ok: true, rtoMs: 50_000 }, true);
  // A drill stamped far ahead of any clock: never evidence, named as not counted.
  await drill(app, dec, '2099-01-01T03:00:00Z', { ok: true, rtoMs: 1 }, true);
  await storage.put(verifyRecordKey(nov.manifestKey), JSON.stringify({ recordVersion: 1, tool: { name: 'pg-backup-actions', version: '0.1.0' }, backupId: nov.id, level: 'archive', ok: false, reason: 'sha256 mismatch', verifiedAt: '2026-11-02T00:00:00.000Z', durationMs: 10 }));
  await storage.put(verifyRecordKey(dec.manifestKey), JSON.stringify({ recordVersion: 1, tool: { name: 'pg-backup-actions', version: '0.1.0' }, backupId: dec.id, level: 'archive', ok: true, verifiedAt: '2026-12-01T01:00:00.000Z', durationMs: 10 }));
}, { timeout: 60_000 });
after(async () => {
  await rm(fileURLToPath(location), { recursive: true, force: true });
  await rm(keys, { recursive: true, force: true });
});

describe('quarterly evidence report', () => {
  it('counts backups, verify runs and drills per database, failures and how long they stayed open, signatures, control gaps', { timeout: 60_000 }, async () => {
    const r = await cli(['evidence', 'report', '--from', location, '--quarter', '2026-Q4', '--json', '--public-key', path.join(keys, 'k.pub')]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.start, '2026-10-01T00:00:00.000Z');
    assert.equal(report.end, '2027-01-01T00:00:00.000Z');
    const a = report.databases.find((d: any) => d.database === 'app');
    const e = report.databases.find((d: any) => d.database === HOSTILE);
    assert.equal(report.databases.length, 2);
    assert.equal(a.database, 'app');
    assert.equal(e.database, HOSTILE);
    assert.equal(a.backups, 3, 'October to December; September is the previous quarter');
    // The drill stamped 2099 is after now: not evidence, and named as such.
    assert.ok(report.warnings.some((w: string) => /^not counted, stamped after this report was made .*-drill-20990101T030000/.test(w)), JSON.stringify(report.warnings));
    assert.deepEqual(a.verifies, { ok: 1, failed: 1 });
    assert.deepEqual(a.drills.map((d: any) => [d.at.slice(0, 10), d.ok, d.signature, d.withinBudget]), [
      ['2026-10-05', true, 'signed OK', true],
      ['2026-11-01', false, 'signed OK', null],
      ['2026-11-03', true, 'signed OK', false],
      ['2026-12-02', true, 'UNSIGNED', null],
    ]);
    assert.equal(a.drills[0].openedBy, 'age1escrow');
    assert.equal(a.drills[0].rpoMs, 3 * 3_600_000);
    assert.deepEqual(a.failures.map((f: any) => [f.kind, f.openedAt.slice(0, 10), f.closedAt?.slice(0, 10), f.openMs]), [
      ['drill', '2026-09-20', '2026-10-05', 15 * DAY],
      ['drill', '2026-11-01', '2026-11-03', 2 * DAY],
      ['verify', '2026-11-02', '2026-12-01', 29 * DAY + 3_600_000],
    ]);
    assert.equal(e.backups, 1);
    assert.deepEqual(e.drills, []);
    const state = Object.fromEntries(report.controls.map((c: any) => [`${c.framework} ${c.control}`, c.state]));
    assert.deepEqual(state, { 'SOC 2 A1.2': 'met', 'SOC 2 A1.3': 'gaps', 'ISO/IEC 27001:2022 A.8.13': 'gaps', 'ISO/IEC 27001:2022 A.5.30': 'gaps' });
    assert.match(report.controls[1].evidence, /^4 restore drills, 1 of 2 databases with a passing drill; 3 of 4 drill results signed and verified$/);
    assert.match(r.stderr, /2026-Q4: 2 database\(s\); gaps in SOC 2 A1\.3/);

    // Without a key: only whether each is signed.
    const plain = JSON.parse((await cli(['evidence', 'report', '--from', location, '--quarter', '2026-Q4', '--json'])).stdout);
    assert.deepEqual(plain.databases.find((d: any) => d.database === 'app').drills.map((d: any) => d.signature), ['signed (not checked)', 'signed (not checked)', 'signed (not checked)', 'UNSIGNED']);
  });

  it('Markdown escapes names and reasons from the bucket; bad input is one line, exit 2, nothing written', { timeout: 60_000 }, async (t) => {
    const md = await cli(['evidence', 'report', '--from', location, '--quarter', '2026-Q4']);
    assert.equal(md.code, 0, md.stderr);
    assert.match(md.stdout, /^# Backup and recovery evidence, 2026-Q4$/m);
    assert.ok(!md.stdout.includes('<img'), 'no raw tag');
    assert.match(md.stdout, /## api\/production\/&lt;img src=x onerror=alert\(1\)&gt;\\\|\\\*\\_\\`/);
    assert.match(md.stdout, /\| SOC 2 \| A1\.3 \| Recovery plan procedures are tested\. \|/);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-report-out-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    for (const args of [['--quarter', '2026-Q5'], ['--quarter', '2026-Q4', '--html', '--json'], ['--quarter', '2026-Q4', '--rto-budget', 'soon'], ['--quarter', '2026-Q4', '--output', path.join(dir, 'no', 'such', 'dir.html')]]) {
      const bad = await cli(['evidence', 'report', '--from', location, ...args]);
      assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
      assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    }
    assert.deepEqual(await readdir(dir), [], 'nothing written');
  });

  it('the HTML page in headless Chromium: controls and drills shown, hostile text inert, no script, no request', { timeout: 120_000 }, async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-report-html-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'evidence-2026-Q4.html');
    const r = await cli(['evidence', 'report', '--from', location, '--quarter', '2026-Q4', '--html', '--output', file, '--public-key', path.join(keys, 'k.pub')]);
    assert.equal(r.code, 0, r.stderr);
    const html = await readFile(file, 'utf8');
    assert.ok(!html.includes('<img'), 'the hostile name is escaped');
    assert.ok(!/<script/i.test(html), 'no script at all');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
    t.after(() => browser.close());
    const context = await browser.newContext();
    const trouble: string[] = [];
    await context.route('**/*', (route) => {
      if (route.request().url().startsWith('file:')) return route.continue();
      trouble.push(`request: ${route.request().url()}`);
      return route.abort();
    });
    const page = await context.newPage();
    page.on('console', (m) => trouble.push(`console ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => trouble.push(`page error: ${e.message}`));
    page.on('dialog', (d) => {
      trouble.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    await page.goto(pathToFileURL(file).href);
    assert.equal(await page.title(), 'Backup and recovery evidence 2026-Q4');
    assert.equal(await page.locator('#controls tbody tr').count(), 4);
    assert.deepEqual(await page.locator('#controls td.gaps').allTextContents(), ['gaps', 'gaps', 'gaps']);
    assert.equal(await page.locator('h2', { hasText: HOSTILE }).count(), 1, 'the hostile database name is shown as text');
    assert.equal(await page.locator('img').count(), 0);
    assert.equal(await page.locator('td.bad', { hasText: 'FAILED: row counts differ' }).count(), 1);
    assert.equal(await page.locator('td', { hasText: '(still open)' }).count(), 0, 'every failure was closed');
    // The failure opened in the previous quarter, with how long it stayed open.
    assert.equal(await page.locator('tr', { hasText: 'disk full' }).locator('td', { hasText: '15 d 0 h' }).count(), 1);
    // The inline style applies (its CSP hash matches): a met control is coloured.
    assert.equal(await page.evaluate("getComputedStyle(document.querySelector('#controls td.met')).fontWeight"), '600');
    await page.emulateMedia({ media: 'print' });
    const pdf = await page.pdf();
    assert.ok(pdf.length > 1000, 'prints to PDF');
    assert.deepEqual(trouble, []);
  });

  it('failure windows: a failure still open runs to the end of the window; runs in any order', () => {
    const q = parseQuarter('2026-Q4');
    const at = (s: string) => Date.parse(s);
    assert.deepEqual(failureWindows('drill', [{ at: at('2026-12-30T00:00:00Z'), ok: false, reason: 'x' }, { at: at('2026-10-01T00:00:00Z'), ok: true }], q, q.end.getTime()), [
      { kind: 'drill', openedAt: '2026-12-30T00:00:00.000Z', openMs: 2 * DAY, reason: 'x' },
    ]);
    // A failure closed before the quarter is not in it.
    assert.deepEqual(failureWindows('drill', [{ at: at('2026-08-01T00:00:00Z'), ok: false }, { at: at('2026-08-02T00:00:00Z'), ok: true }], q, q.end.getTime()), []);
    assert.throws(() => parseQuarter('2026-4'), /give YYYY-Qn/);
  });
});
