import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeFailure } from '../../src/postgres/processes.ts';

describe('describeFailure', () => {
  it('keeps a libpq message continued on indented lines whole, so its first line is not cut off', () => {
    // pg_dump's stderr when the server stops under it (pg_ctl stop -m immediate).
    const stderr = [
      'pg_dump: error: Dumping the contents of table "big" failed: PQgetCopyData() failed.',
      'pg_dump: detail: Error message from server: server closed the connection unexpectedly',
      '\tThis probably means the server terminated abnormally',
      '\tbefore or while processing the request.',
      'pg_dump: detail: Command was: COPY public.big (id, payload) TO stdout;',
      '',
    ].join('\n');
    assert.equal(
      describeFailure('pg_dump', { exitCode: 1, stderr }),
      'pg_dump exited with code 1: pg_dump: error: Dumping the contents of table "big" failed: PQgetCopyData() failed. | pg_dump: detail: Error message from server: server closed the connection unexpectedly This probably means the server terminated abnormally before or while processing the request. | pg_dump: detail: Command was: COPY public.big (id, payload) TO stdout;',
    );
  });

  it('keeps the last three messages, drops empty detail lines, and names a signal', () => {
    assert.equal(describeFailure('pg_dump', { exitCode: 1, stderr: 'a\nb\npg_dump: detail: \nc\nd\n' }), 'pg_dump exited with code 1: b | c | d');
    assert.equal(describeFailure('zstd', { signal: 'SIGKILL', stderr: '' }), 'zstd was killed by SIGKILL');
  });
});
