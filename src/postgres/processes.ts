import type { Readable, Writable } from 'node:stream';
import { execa } from 'execa';
import { redact } from '../errors.ts';
import type { PgBinary } from './binaries.ts';
import { libpqEnv, type DatabaseConnection } from './connection.ts';

/** A PostgreSQL program running as a child process. */
export interface RunningProgram {
  stdout: Readable;
  stdin: Writable;
  /** Resolves on exit code 0; rejects with {@link describeFailure}'s one-line reason otherwise. */
  done: Promise<void>;
}

/**
 * Runs a PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`) without a shell: the
 * connection goes in `--dbname` (password removed) and the password in `PGPASSWORD`.
 * stdout is streamed, never buffered; stderr is kept for the error message.
 */
export function runPgProgram(
  bin: PgBinary,
  args: string[],
  options: { connection?: DatabaseConnection; signal?: AbortSignal; stdin?: 'pipe' | 'ignore'; stdout?: 'pipe' | 'ignore' },
): RunningProgram {
  const dbname = options.connection ? [`--dbname=${options.connection.url}`] : [];
  const child = execa(bin.path, [...args, ...dbname], {
    env: { ...(options.connection ? libpqEnv(options.connection) : {}), PGAPPNAME: 'pg-backup' },
    stdin: options.stdin ?? 'ignore',
    stdout: options.stdout ?? 'pipe',
    stderr: 'pipe',
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
  return { stdout: child.stdout!, stdin: child.stdin!, done };
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
