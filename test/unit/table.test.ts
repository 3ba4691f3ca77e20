import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { displayWidth, renderTable } from '../../src/cli/table.ts';
import { parseManifestKey, validateLabel } from '../../src/backup/keys.ts';
import { parseBackupObjectKey } from '../../src/backup/retention.ts';
import { archiveBytes } from '../../src/backup/parts.ts';
import { planSafetyDumps, safetyDumpLocation } from '../../src/backup/safety.ts';
import { formatBytes } from '../../src/format.ts';

describe('aligned tables (src/cli/table.ts)', () => {
  it('pads every column to its widest cell, right-aligns sizes, prints heading lines as is, no trailing spaces', () => {
    const lines = renderTable([{ header: 'NAME' }, { header: 'SIZE', align: 'right' }, { header: 'NOTE' }], [['a', '1.4 kB', 'x'], { line: 'group two' }, ['longer-name', '120 MB', '']]);
    assert.deepEqual(lines, ['NAME           SIZE  NOTE', 'a            1.4 kB  x', 'group two', 'longer-name  120 MB']);
  });

  it('measures display columns: CJK and emoji take two, combining marks and zero-width characters none', () => {
    assert.equal(displayWidth('abc'), 3);
    assert.equal(displayWidth('数据库'), 6);
    assert.equal(displayWidth('👍🏽'), 2);
    assert.equal(displayWidth('🇫🇷'), 2);
    assert.equal(displayWidth('e\u0301'), 1);
    assert.equal(displayWidth('a\u200bb'), 2);
    assert.equal(displayWidth('ｱ'), 1, 'halfwidth katakana');
    const lines = renderTable([{ header: 'DB' }, { header: 'KEY' }], [['数据库', 'k1'], ['app', 'k2']]);
    assert.deepEqual(lines, ['DB      KEY', '数据库  k1', 'app     k2']);
  });

  it('refuses a row with another number of cells (a bug)', () => {
    assert.throws(() => renderTable([{ header: 'A' }, { header: 'B' }], [['only one']]), /1 cells, expected 2/);
  });
});

describe('one size for a backup', () => {
  it('is its archive: the dump object, or the files of a directory archive; not the manifest, sidecars or verify record', () => {
    const stem = 'api/prod/app/2026/12/07/app-20261207T100000Z-abcdef';
    const objects = new Map([[`${stem}.dump.zst`, 3_349_000], [`${stem}.manifest.json`, 1_200], [`${stem}.dump.zst.md5`, 60], [`${stem}.verify.json`, 300], [`${stem}x.dump.zst`, 5]]);
    assert.equal(archiveBytes(stem, objects), 3_349_000);
    assert.equal(formatBytes(archiveBytes(stem, objects)!), '3.3 MB');
    assert.equal(archiveBytes(stem, new Map([[`${stem}.dir/toc.dat.zst`, 10], [`${stem}.dir/3001.dat.zst`, 990], [`${stem}.manifest.json`, 1]])), 1000);
    assert.equal(archiveBytes(stem, new Map([[`${stem}.manifest.json`, 1]])), undefined);
  });
});

describe('safety dumps (src/backup/safety.ts)', () => {
  it('are recognised under safety-dumps/ and in the older pre-restore layout, and nowhere else', () => {
    const key = 'safety-dumps/api/prod/app_live/2026/12/07/app_live-20261207T100000Z-abcdef.manifest.json';
    assert.deepEqual({ ...parseManifestKey(key), startedAt: undefined }, {
      service: 'api', environment: 'prod', database: 'app_live', id: 'app_live-20261207T100000Z-abcdef', startedAt: undefined,
      manifestKey: key, stem: key.slice(0, -'.manifest.json'.length), safetyDump: true,
    });
    assert.equal(parseManifestKey('api/pre-restore/app_live/2026/12/07/app_live-20261207T100000Z-abcdef.manifest.json')?.safetyDump, true);
    assert.equal(parseManifestKey('api/prod/app/2026/12/07/app-20261207T100000Z-abcdef.manifest.json')?.safetyDump, undefined);
    const object = parseBackupObjectKey('safety-dumps/api/prod/app_live/2026/12/07/app_live-20261207T100000Z-abcdef.dump.zst');
    assert.equal(object?.stem, 'safety-dumps/api/prod/app_live/2026/12/07/app_live-20261207T100000Z-abcdef');
    assert.equal(object?.safetyDump, true);
    assert.equal(parseBackupObjectKey('api/prod/app/2026/12/07/app-20261207T100000Z-abcdef.dump.zst')?.safetyDump, undefined);
    assert.throws(() => validateLabel('service', 'safety-dumps'), /reserved/);
    assert.equal(safetyDumpLocation('s3://b/pg/'), 's3://b/pg/safety-dumps');
  });

  it('are kept by age alone: deleted once older than the limit, incomplete ones after the grace period', () => {
    const now = new Date('2026-12-07T12:00:00Z');
    const at = (h: number) => new Date(now.getTime() - h * 3_600_000);
    const plan = planSafetyDumps([
      { startedAt: at(15 * 24), complete: true, lastModified: at(15 * 24) },
      { startedAt: at(13 * 24), complete: true, lastModified: at(13 * 24) },
      { startedAt: at(30), complete: false, lastModified: at(30) },
      { startedAt: at(2), complete: false, lastModified: at(2) },
    ], 14 * 86_400_000, 86_400_000, now, '14d');
    assert.deepEqual(plan.map((p) => p.action), ['delete', 'keep', 'delete', 'keep']);
    assert.match(plan[0]!.reasons[0]!, /older than --keep-safety-dumps 14d/);
  });
});
