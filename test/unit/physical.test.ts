import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../src/errors.ts';
import { pgbackrestReason, walSegmentName, walSegmentNumber } from '../../src/physical/pgbackrest.ts';
import { throwawaySettings } from '../../src/physical/restored-server.ts';
import { parseTargetTime, pgbackrestTime } from '../../src/physical/target-time.ts';

describe('physical drill pieces', () => {
  it('converts ISO 8601 target times to pgBackRest\'s YYYY-MM-DD HH:MM:SS[.mmm]+00, in UTC', () => {
    const cases: [string, string][] = [
      ['2026-12-02T09:30:00Z', '2026-12-02 09:30:00+00'],
      ['2026-12-02T10:30:00.250+01:00', '2026-12-02 09:30:00.250+00'],
      ['2026-12-02 09:23:02.641969+00', '2026-12-02 09:23:02.641+00'],
      ['2026-12-02T09:30:00+0530', '2026-12-02 04:00:00+00'],
      ['2026-12-31T23:30-02:00', '2027-01-01 01:30:00+00'],
    ];
    for (const [input, expected] of cases) {
      const t = parseTargetTime(input);
      assert.equal(t.type, 'time');
      assert.equal(pgbackrestTime((t as { at: Date }).at), expected, input);
    }
    assert.deepEqual(parseTargetTime(undefined), { type: 'latest' });
    assert.deepEqual(parseTargetTime('latest'), { type: 'latest' });
    for (const bad of ['2026-12-02T09:30:00', '2026-02-31T00:00:00Z', 'yesterday', '2026-12-02T25:00:00Z', '1764667800']) {
      assert.throws(() => parseTargetTime(bad), (e: unknown) => e instanceof UsageError && /is not an ISO 8601 time with a zone/.test(e.message), bad);
    }
  });

  it('takes pgBackRest\'s reason from its ERROR line, in one line, without retry noise', () => {
    const out = 'ERROR: [029]: raised from local-1 protocol: zlib threw error: [-3] data error\n       [FormatError] on retry after 0ms\n       [FormatError] on retry after 15000ms\n';
    assert.equal(pgbackrestReason(out), 'raised from local-1 protocol: zlib threw error: [-3] data error');
    const hint = "2026-12-02 09:23:16.001 P00  ERROR: [029]: automatic backup set selection cannot be performed with provided time 'x'\n       HINT: time format must be YYYY-MM-DD HH:MM:SS\n";
    assert.equal(pgbackrestReason(hint), "automatic backup set selection cannot be performed with provided time 'x' (HINT: time format must be YYYY-MM-DD HH:MM:SS)");
  });

  it('names WAL segments as PostgreSQL does', () => {
    assert.equal(walSegmentNumber('000000010000000000000004'), 4n);
    assert.equal(walSegmentNumber('0000000100000001000000FF'), 256n + 255n);
    assert.equal(walSegmentName(1, 256n + 255n), '0000000100000001000000FF');
    assert.equal(walSegmentName(2, 5n), '000000020000000000000005');
    assert.equal(walSegmentName(1, 4n, 64 * 1024 * 1024), '000000010000000000000004');
  });

  it('the restored server listens on no TCP address and archives nothing, whatever its postgresql.conf says', () => {
    const settings = Object.fromEntries(throwawaySettings('/w/d', '/w/d/data', 5999));
    assert.equal(settings.listen_addresses, '');
    assert.equal(settings.archive_mode, 'off');
    assert.equal(settings.data_directory, '/w/d/data');
    assert.equal(settings.unix_socket_directories, '/w/d/socket');
    assert.equal(settings.primary_conninfo, '');
    assert.equal(settings.recovery_end_command, '');
  });
});
