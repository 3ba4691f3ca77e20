import { Duplex, Writable, type Readable } from 'node:stream';
import { execa } from 'execa';
import { redact } from '../errors.ts';
import type { PgBinary } from './binaries.ts';
import { libpqEnv, type DatabaseConnection } from './connection.ts';

/** A PostgreSQL program running as a child process. */
export interface RunningProgram {
  stdout: Readable;
  /** The child's stdin pipe (`stdin: 'pipe'`); not to be used when `stdin` was given a stream. */
  stdin: Writable;
  /** Resolves on exit code 0; rejects with {@link describeFailure}'s one-line reason otherwise. */
  done: Promise<void>;
  /** Sends SIGTERM now (no-op once it exited); `done` then rejects ("was killed by SIGTERM"). */
  kill(): void;
}

/** A child process as a pipeline stage: its pipes, its exit status, and a way to stop it. */
export interface ChildStage {
  stdin: Writable;
  stdout?: Readable;
  /** Resolves on a clean exit; rejects with the one-line reason of a failed one. */
  done: Promise<void>;
  kill(): void;
  /** The program's name, for "… exited before reading all of its input". */
  program: string;
}

/**
 * Waits for a child that closed its input (EPIPE) to report why: its exit status. A child that
 * exits 0 without reading all its input failed too.
 */
async function whyInputClosed(child: ChildStage): Promise<Error> {
  try {
    await child.done;
    return new Error(`${child.program} exited before reading all of its input`);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Writes `chunk` to `stream` and resolves once it was taken: at once, or when the stream drained
 * or closed. Never rejects: a closed stream's reason is the reader's to tell (a child's exit
 * status), not "EPIPE".
 */
export function writeWithBackpressure(stream: NodeJS.WritableStream & { destroyed: boolean; off(event: string, fn: () => void): unknown }, chunk: Buffer): Promise<void> {
  if (stream.destroyed || stream.write(chunk)) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const go = () => {
      stream.off('drain', go);
      stream.off('close', go);
      resolve();
    };
    stream.on('drain', go);
    stream.on('close', go);
  });
}

/**
 * Writes `chunk` to a child's stdin with back-pressure; calls back with the child's reason when
 * its stdin broke. With `mayStopReading`, a child that exited 0 before the end of its input
 * (`pg_restore --schema-only` needs no data blocks) succeeded: the rest is discarded.
 */
function writeTo(child: ChildStage, chunk: unknown, callback: (err?: Error | null) => void, mayStopReading = false): void {
  const { stdin } = child;
  const stopped = () =>
    void (mayStopReading ? child.done.then(() => callback(), (err: Error) => callback(err)) : whyInputClosed(child).then(callback));
  if (stdin.destroyed || stdin.writableEnded) return stopped();
  if (stdin.write(chunk)) return callback();
  const go = () => {
    stdin.off('drain', go);
    stdin.off('close', go);
    if (stdin.destroyed) stopped();
    else callback();
  };
  stdin.on('drain', go);
  stdin.on('close', go);
}

/**
 * The input of a child process as a Writable for `stream.pipeline()`, the way execa's
 * `subprocess.writable()` works but with a stop that cannot commit anything:
 * - a broken stdin (EPIPE: the child stopped reading) fails the stream with the child's own
 *   reason (its exit status and stderr), never with "EPIPE";
 * - `end()` closes stdin and finishes only once the child exited 0, so a pipeline resolves only
 *   after its last program succeeded;
 * - `destroy()` before the end kills the child FIRST, then closes stdin: a `psql
 *   --single-transaction` or `pg_restore` never sees a clean end of a cut input (which it could
 *   take for the end of the archive and commit).
 * `mayStopReading`: the child may legitimately exit 0 before the end of its input (e.g.
 * `pg_restore --schema-only`, which needs no data blocks); the rest of the input is discarded.
 */
export function childInput(child: ChildStage, options: { mayStopReading?: boolean } = {}): Writable {
  child.stdin.on('error', () => undefined); // EPIPE: the child's exit status tells why
  return new Writable({
    highWaterMark: child.stdin.writableHighWaterMark,
    write(chunk, _encoding, callback) {
      writeTo(child, chunk, callback, options.mayStopReading);
    },
    final(callback) {
      if (!child.stdin.destroyed) child.stdin.end();
      child.done.then(() => callback(), callback);
    },
    destroy(err, callback) {
      if (!this.writableFinished) child.kill();
      child.stdin.destroy();
      callback(err);
    },
  });
}

/**
 * A child process that reads stdin and writes stdout (a compressor) as one Duplex: the readable
 * side ends only after the child exited 0 (a failed child's partial output is never taken for a
 * complete one: the Duplex fails with its reason instead); a broken stdin fails with the child's
 * reason; `destroy()` kills the child and closes both pipes.
 */
export function childDuplex(child: ChildStage & { stdout: Readable }): Duplex {
  const { stdin, stdout } = child;
  stdin.on('error', () => undefined);
  let duplex: Duplex;
  const onData = (chunk: Buffer) => {
    if (!duplex.push(chunk)) stdout.pause();
  };
  duplex = new Duplex({
    readableHighWaterMark: stdout.readableHighWaterMark,
    writableHighWaterMark: stdin.writableHighWaterMark,
    write(chunk, _encoding, callback) {
      writeTo(child, chunk, callback);
    },
    final(callback) {
      stdin.end();
      callback();
    },
    read() {
      stdout.resume();
    },
    destroy(err, callback) {
      stdout.off('data', onData);
      child.kill();
      stdin.destroy();
      stdout.destroy();
      callback(err);
    },
  });
  stdout.on('data', onData);
  stdout.once('end', () => {
    child.done.then(
      () => duplex.push(null),
      (err: Error) => duplex.destroy(err),
    );
  });
  stdout.once('error', () => {
    void whyInputClosed(child).then((err) => duplex.destroy(err));
  });
  return duplex;
}

/**
 * An execa line transform of a program's stderr (e.g. restore-progress.ts `pgRestoreStderrFilter`):
 * `transform` gets each line and yields what stderr keeps; `final` yields what it held back.
 */
export interface StderrLineFilter {
  transform(line: string): Generator<string>;
  final?(): Generator<string>;
}

/**
 * Runs a PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`) without a shell: the
 * connection goes in `--dbname` (password removed) and the password in `PGPASSWORD`.
 * stdout is streamed, never buffered; stderr is kept for the error message. `stdin` may be
 * another process's output stream (e.g. `zstd -d`'s stdout), handed over as the child's stdin
 * so the bytes never pass through this process; `stdin` of the result is then null.
 * `stderrLines` filters stderr line by line before it is kept (--verbose progress lines).
 */
export function runPgProgram(
  bin: PgBinary,
  args: string[],
  options: { connection?: DatabaseConnection; signal?: AbortSignal; stdin?: 'pipe' | 'ignore' | Readable; stdout?: 'pipe' | 'ignore'; stderrLines?: StderrLineFilter },
): RunningProgram {
  const dbname = options.connection ? [`--dbname=${options.connection.url}`] : [];
  const child = execa(bin.path, [...args, ...dbname], {
    env: { ...(options.connection ? libpqEnv(options.connection) : {}), PGAPPNAME: 'pg-backup' },
    stdin: options.stdin ?? 'ignore',
    stdout: options.stdout ?? 'pipe',
    stderr: options.stderrLines ? [options.stderrLines, 'pipe'] : 'pipe',
    buffer: { stdout: false, stderr: true },
    cancelSignal: options.signal,
    forceKillAfterDelay: 5_000,
    maxBuffer: { stderr: 1024 * 1024 },
  });
  const done = child.then(
    () => undefined,
    (err: unknown) => {
      throw new Error(describeFailure(bin.program, err));
    },
  );
  done.catch(() => undefined); // callers await it; avoid an unhandled rejection before they do
  return { stdout: child.stdout!, stdin: child.stdin!, done, kill: () => void child.kill('SIGTERM') };
}

/**
 * One line for a failed program: its last three meaningful stderr messages, or how it was
 * killed. A libpq message continued on indented lines ("server closed the connection
 * unexpectedly / This probably means…") counts as one, so its first line is never cut off.
 * Secrets are redacted.
 */
export function describeFailure(program: string, err: unknown): string {
  const e = err as { exitCode?: number; signal?: string; stderr?: string; isCanceled?: boolean; originalMessage?: string; code?: string };
  if (e.code === 'ENOENT') return `${program} could not be started: not found`;
  const messages: string[] = [];
  for (const line of (e.stderr ?? '').split('\n')) {
    if (/^\s/.test(line) && line.trim() && messages.length) messages[messages.length - 1] += ` ${line.trim()}`;
    else messages.push(line.trim());
  }
  const lines = messages.filter((l) => l && !/^(pg_dump|pg_restore): (detail|hint): *$/i.test(l));
  const tail = lines.slice(-3).join(' | ');
  const how = e.isCanceled ? 'was cancelled' : e.signal ? `was killed by ${e.signal}` : `exited with code ${e.exitCode}`;
  return redact(`${program} ${how}${tail ? `: ${tail}` : ''}`);
}
