// The parts of src/postgres/standby.ts a real standby cannot show deterministically: pg_dump's own
// COPY cancelled by a recovery conflict (its stderr, as describeFailure reports it), the
// pre-14 state function, a pause that is never reached, and a grant for an odd role name.
// Each behaviour is also exercised on a real streaming standby (test/integration/standby.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import type { Logger } from '../../src/log.ts';
import { parseDatabaseUrl } from '../../src/postgres/connection.ts';
import { describeFailure } from '../../src/postgres/processes.ts';
import { RecoveryConflictError, Standby, isRecoveryConflict, pauseGrants } from '../../src/postgres/standby.ts';

const conn = parseDatabaseUrl('postgresql://backup@replica.internal:5432/app');
const silent: Logger = { info: () => undefined, warn: () => undefined, group: (_name, fn) => fn() };

/** A client that answers the queries Standby sends, and records them. */
function fakeClient(answers: { may: boolean; states: string[]; streaming?: string; feedback?: string; pauseFails?: string }) {
  const sent: string[] = [];
  const states = [...answers.states];
  const client = {
    on: () => client,
    async query(text: string) {
      sent.push(text);
      if (/pg_is_in_recovery/.test(text)) return { rows: [{ standby: true }] };
      if (/current_user AS role/.test(text)) return { rows: [{ role: 'back"up', streaming: answers.streaming ?? '30s', archive: '30s', feedback: answers.feedback ?? 'off', may: answers.may }] };
      if (answers.pauseFails && text === 'SELECT pg_catalog.pg_wal_replay_pause()') throw new Error(answers.pauseFails);
      if (/AS state/.test(text)) return { rows: [{ state: states.length > 1 ? states.shift() : states[0] }] };
      return { rows: [{}] };
    },
  };
  return { client: client as unknown as pg.Client, sent };
}

describe('hot standby', () => {
  it("recognises pg_dump's own cancelled COPY, and explains it in one line with the server's DETAIL and the three fixes", async () => {
    const stderr = [
      'pg_dump: error: Dumping the contents of table "t" failed: PQgetCopyData() failed.',
      'pg_dump: detail: Error message from server: ERROR:  canceling statement due to conflict with recovery',
      'DETAIL:  User was holding a relation lock for too long.',
      'pg_dump: detail: Command was: COPY public.t (id, v) TO stdout;',
    ].join('\n');
    const failure = new Error(describeFailure('pg_dump', { exitCode: 1, stderr }));
    assert.equal(isRecoveryConflict(failure), true);
    const warnings: string[] = [];
    const { client } = fakeClient({ may: false, states: ['not paused'] });
    const standby = (await Standby.open(client, conn, 15, { logger: { ...silent, warn: (m: string) => warnings.push(m) }, label: 'app' }))!;
    assert.equal(warnings.length, 1);
    const err = standby.explain(failure) as Error;
    assert.ok(err instanceof RecoveryConflictError);
    assert.ok(!err.message.includes('\n'));
    assert.match(err.message, /SQLSTATE 40001: User was holding a relation lock for too long\.\)/);
    assert.match(err.message, /\(1\) .*\(2\) .*\(3\) /);
    const other = new Error('pg_dump exited with code 1: could not open file');
    assert.equal(standby.explain(other), other, 'anything else is left as it is');
  });

  it('is not fooled by another SQLSTATE that mentions recovery', () => {
    assert.equal(isRecoveryConflict(Object.assign(new Error('terminating connection due to conflict with recovery'), { code: '57P04' })), false);
    assert.equal(isRecoveryConflict(Object.assign(new Error('terminating connection due to conflict with recovery'), { code: '40001' })), true);
  });

  it('quotes the role in the GRANT', () => {
    assert.equal(pauseGrants('back"up'), 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_wal_replay_pause(), pg_catalog.pg_wal_replay_resume() TO "back""up";');
  });

  it('PostgreSQL 13: asks pg_is_wal_replay_paused, and takes true for paused', async () => {
    const { client, sent } = fakeClient({ may: true, states: ['false', 'true'] });
    const standby = (await Standby.open(client, conn, 13, { logger: silent, label: 'app' }))!;
    assert.equal(standby.pausedBy, 'pg-backup');
    assert.ok(sent.some((q) => q.includes('pg_catalog.pg_is_wal_replay_paused()::text AS state')));
    assert.ok(!sent.some((q) => q.includes('pg_get_wal_replay_pause_state')));
  });

  it('a server that grants the pause but refuses it: dumped unpaused with the warning, and no resume of a replay never paused', async () => {
    const warnings: string[] = [];
    const { client, sent } = fakeClient({ may: true, states: ['not paused'], pauseFails: 'function pg_wal_replay_pause() is not supported' });
    const standby = (await Standby.open(client, conn, 15, { logger: { ...silent, warn: (m: string) => warnings.push(m) }, label: 'app' }))!;
    assert.equal(standby.pausedBy, undefined);
    assert.equal(standby.record().replayPaused, false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /pausing WAL replay failed \(function pg_wal_replay_pause\(\) is not supported\)/);
    assert.ok(!warnings[0]!.includes('GRANT'), 'no grant advice for a role that has the grants');
    await standby.resume();
    assert.equal(sent.filter((q) => q === 'SELECT pg_catalog.pg_wal_replay_resume()').length, 0);
  });

  it('a pause never reached fails in one line within the bound, and resumes the replay it asked to pause', async () => {
    const { client, sent } = fakeClient({ may: true, states: ['not paused', 'pause requested'] });
    await assert.rejects(Standby.open(client, conn, 15, { logger: silent, label: 'app', pauseTimeoutMs: 200 }), (err: Error) => /did not pause within 0\.2 s \(state: pause requested\).*replay was resumed and nothing was dumped/.test(err.message) && !err.message.includes('\n'));
    assert.equal(sent.filter((q) => q === 'SELECT pg_catalog.pg_wal_replay_resume()').length, 1);
  });
});
