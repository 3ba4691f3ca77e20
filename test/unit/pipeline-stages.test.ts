// The process stages of a read-back pipeline (src/postgres/processes.ts), with real child
// processes: a sink killed before its input closes never sees a clean end (so it cannot commit a
// cut stream), a sink that stops reading fails with its own exit status instead of EPIPE, and a
// codec whose process fails never ends its output cleanly. The end-to-end behaviour with
// PostgreSQL, zstd and damaged multi-MB objects is in test/integration/corruption.test.ts.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { childDuplex, childInput, type ChildStage } from '../../src/postgres/processes.ts';

/** `sh -c script` as a pipeline stage; `done` rejects with "sh exited with code N". */
function shStage(script: string): ChildStage & { stdout: Readable } {
  const child = execa('sh', ['-c', script], { stdin: 'pipe', stdout: 'pipe', stderr: 'ignore', buffer: false });
  const done = child.then(
    () => undefined,
    (err: { exitCode?: number; signal?: string }) => {
      throw new Error(err.signal ? `sh was killed by ${err.signal}` : `sh exited with code ${err.exitCode}`);
    },
  );
  done.catch(() => undefined);
  return { stdin: child.stdin, stdout: child.stdout, done, kill: () => void child.kill('SIGTERM'), program: 'sh' };
}

/** 8 MiB in 64 KiB chunks (far more than a pipe buffer), then `end` or an error. */
function source(ending: 'end' | 'error'): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= 128) return void (ending === 'end' ? this.push(null) : this.destroy(new Error('the download broke off')));
      sent++;
      this.push(Buffer.alloc(64 * 1024, 7));
    },
  });
}

describe('pipeline stages over child processes', () => {
  it('a sink whose input breaks off is killed before its stdin closes: it never sees a clean end', { timeout: 20_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-stage-'));
    const committed = path.join(dir, 'committed');
    // Like psql --single-transaction: reads to EOF, then "commits".
    const sink = shStage(`cat > /dev/null && touch ${committed}`);
    await assert.rejects(pipeline(source('error'), childInput(sink)), /the download broke off/);
    await assert.rejects(sink.done, /killed by SIGTERM/);
    assert.equal(existsSync(committed), false, 'the sink did not take the cut input for a complete one');
    await rm(dir, { recursive: true, force: true });
  });

  it('a complete input reaches the sink, and the pipeline resolves only once the sink exited 0', { timeout: 20_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-stage-'));
    const committed = path.join(dir, 'committed');
    const sink = shStage(`cat > /dev/null && sleep 0.3 && touch ${committed}`);
    await pipeline(source('end'), childInput(sink));
    assert.equal(existsSync(committed), true);
    await rm(dir, { recursive: true, force: true });
  });

  it('a sink that stops reading fails the pipeline with its own exit status, not EPIPE', { timeout: 20_000 }, async () => {
    const sink = shStage('head -c 1000 > /dev/null; exit 3');
    await assert.rejects(pipeline(source('end'), childInput(sink)), (err: Error) => {
      assert.equal(err.message, 'sh exited with code 3');
      return true;
    });
  });

  it('a sink that exits 0 without reading its input fails too', { timeout: 20_000 }, async () => {
    const sink = shStage('exit 0');
    await assert.rejects(pipeline(source('end'), childInput(sink)), /sh exited before reading all of its input/);
  });

  it('a sink allowed to stop reading (pg_restore --schema-only) succeeds when it exits 0 early; the rest is discarded', { timeout: 20_000 }, async () => {
    const sink = shStage('head -c 1000 > /dev/null; exit 0');
    await pipeline(source('end'), childInput(sink, { mayStopReading: true }));
    const failing = shStage('head -c 1000 > /dev/null; exit 4');
    await assert.rejects(pipeline(source('end'), childInput(failing, { mayStopReading: true })), /sh exited with code 4/);
  });

  it('a codec process that fails mid-stream never ends its output cleanly: downstream gets its reason', { timeout: 20_000 }, async () => {
    // Passes 1 MiB through, then fails, like zstd -d on corrupt input.
    const codec = childDuplex(shStage('head -c 1048576; exit 1'));
    let received = 0;
    let endedCleanly = false;
    const sink = new Writable({
      write(chunk: Buffer, _enc, callback) {
        received += chunk.length;
        callback();
      },
      final(callback) {
        endedCleanly = true;
        callback();
      },
    });
    await assert.rejects(pipeline(source('end'), codec, sink), /sh exited with code 1/);
    assert.equal(endedCleanly, false, 'the sink never saw the end of a failed codec\'s output');
    assert.ok(received <= 1048576, `${received} bytes`);
  });

  it('a codec process that succeeds passes every byte through, back-pressure included', { timeout: 20_000 }, async () => {
    const codec = childDuplex(shStage('cat'));
    let received = 0;
    const slow = new PassThrough({ highWaterMark: 1024 });
    const counted = new Writable({
      write(chunk: Buffer, _enc, callback) {
        received += chunk.length;
        setImmediate(callback);
      },
    });
    await pipeline(source('end'), codec, slow, counted);
    assert.equal(received, 128 * 64 * 1024);
  });
});
