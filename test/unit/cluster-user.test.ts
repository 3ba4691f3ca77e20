import assert from 'node:assert/strict';
import { execa } from 'execa';
import { describe, it } from 'node:test';
import { lastTransactionInLog } from '../../src/physical/drill.ts';
import { throwawaySettings } from '../../src/physical/restored-server.ts';
import { serverOptionArg } from '../../src/postgres/cluster.ts';
import { scrubbedEnv } from '../../src/postgres/cluster-user.ts';

describe('the throwaway server\'s environment and settings', () => {
  it('scrubbedEnv keeps PATH, TZ, LANG and the test marker, sets the locale and PGTZ, and drops everything else', () => {
    const saved = { ...process.env };
    try {
      Object.assign(process.env, { AWS_SECRET_ACCESS_KEY: 'k', GITHUB_TOKEN: 't', PG_BACKUP_AGE_IDENTITY: 'AGE-SECRET-KEY-1X', DATABASE_URL: 'postgresql://u:p@h/d', PGPASSWORD: 'p', TZ: 'Europe/Paris', PATH: '/usr/bin:/bin', PGB_LEFTOVER_MARK: 'm' });
      const env = scrubbedEnv({ PGBACKREST_ARCHIVE_ASYNC: 'n' });
      assert.deepEqual(Object.keys(env).sort(), ['LANG', 'LC_ALL', 'PATH', 'PGBACKREST_ARCHIVE_ASYNC', 'PGB_LEFTOVER_MARK', 'PGTZ', 'TZ'].filter((k) => k !== 'LANG' || process.env.LANG).sort());
      assert.equal(env.LC_ALL, 'C.UTF-8');
      assert.equal(env.PGTZ, 'UTC');
      assert.equal(env.TZ, 'Europe/Paris');
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });

  it('serverOptionArg survives /bin/sh: quotes, spaces and $ reach the server as written', async () => {
    const value = `/tmp/a b/it's $HOME "x"`;
    const r = await execa('sh', ['-c', `printf '%s\\n' ${serverOptionArg(['unix_socket_directories', value])}`]);
    assert.deepEqual(r.stdout.split('\n'), ['-c', `unix_socket_directories=${value}`]);
  });

  it('the restored server logs in UTC and takes its socket directory', () => {
    const settings = Object.fromEntries(throwawaySettings('/w/d', '/w/d/data', 5999, '/w/d/socket-checks'));
    assert.equal(settings.log_timezone, 'UTC');
    assert.equal(settings.unix_socket_directories, '/w/d/socket-checks');
    assert.equal(settings.hot_standby, 'off', 'nobody connects during recovery');
  });

  it('lastTransactionInLog reads the end-of-recovery line, with any zone offset', () => {
    const log = [
      '2026-12-07 16:06:20.000 UTC [1] LOG:  redo done at 0/3000148',
      '2026-12-07 16:06:20.001 UTC [1] LOG:  last completed transaction was at log time 2026-12-07 16:06:19.069012+00',
    ].join('\n');
    assert.equal(lastTransactionInLog(log)?.toISOString(), '2026-12-07T16:06:19.069Z');
    assert.equal(lastTransactionInLog('LOG:  last completed transaction was at log time 2026-12-07 17:06:19+01')?.toISOString(), '2026-12-07T16:06:19.000Z');
    assert.equal(lastTransactionInLog('LOG:  last completed transaction was at log time 2026-12-07 21:36:19.5+05:30')?.toISOString(), '2026-12-07T16:06:19.500Z');
    assert.equal(lastTransactionInLog('LOG:  redo done'), undefined);
  });

});
