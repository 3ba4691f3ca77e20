import { spawn, type ChildProcess } from 'node:child_process';
import type { Producer } from '../backup/upload-stream.ts';
import type { PgBinary } from './binaries.ts';
import { libpqEnv, type DatabaseConnection } from './connection.ts';
import { describeFailure } from './processes.ts';

/**
 * `pg_dump … | zstd -LEVEL -T0` joined by an operating-system pipe: the uncompressed archive
 * never passes through this process (it would cost a CPU core's worth of copying on the
 * largest stream), and zstd compresses on its own threads in parallel with pg_dump. The
 * producer's stream is zstd's output; it is done when both exited 0; `rawBytes` comes from
 * zstd's own byte count (`-vv`). Secrets stay out of argv (the password is in `PGPASSWORD`).
 */
export function pgDumpThroughZstd(pgDump: PgBinary, args: string[], conn: DatabaseConnection, level: number, signal: AbortSignal): Producer {
  const env = { ...process.env, ...libpqEnv(conn), PGAPPNAME: 'pg-backup' };
  const dump = spawn(pgDump.path, [...args, `--dbname=${conn.url}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // zstd reads pg_dump's pipe directly: its file descriptor is handed to the child.
  const zstd = spawn('zstd', [`-${level}`, '-T0', '-vv', '-c'], { stdio: [dump.stdout, 'pipe', 'pipe'] });
  dump.stdout.destroy(); // our copy of the read end: only zstd reads it
  let raw: number | undefined;
  const watch = (child: ChildProcess, program: string) =>
    new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-64 * 1024);
      });
      child.once('error', (err) => reject(new Error(`${program} could not be started: ${err.message}`)));
      child.once('close', (exitCode, sig) => {
        if (program === 'zstd') {
          // e.g. "/*stdin*\ : 4.42%   (   500 B =>     22 B, /*stdout*\)" (numbers are padded).
          const m = /\(\s*(\d+) B =>\s*(\d+) B/.exec(stderr);
          if (m) raw = Number(m[1]);
        }
        if (exitCode === 0) resolve();
        else reject(new Error(describeFailure(program, { exitCode: exitCode ?? undefined, signal: sig ?? undefined, stderr: program === 'zstd' ? stderr.split('\n').filter((l) => !/^\s*(\/\*stdin|Note:|\*\*\*|Decompression|\S+ : Completed)/.test(l)).join('\n') : stderr })));
      });
    });
  const dumpDone = watch(dump, pgDump.program);
  const zstdDone = watch(zstd, 'zstd');
  const kill = () => {
    for (const child of [dump, zstd]) {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
    }
  };
  if (signal.aborted) kill();
  signal.addEventListener('abort', kill, { once: true });
  // pg_dump's failure is the telling one: report it before zstd's (which then only saw a short input).
  const done = Promise.allSettled([dumpDone, zstdDone]).then(([d, z]) => {
    signal.removeEventListener('abort', kill);
    if (d.status === 'rejected') throw d.reason;
    if (z.status === 'rejected') throw z.reason;
  });
  done.catch(() => undefined);
  return { stream: zstd.stdout!, done, compressed: true, rawBytes: () => raw };
}
