import { PassThrough, type Duplex } from 'node:stream';
import zlib from 'node:zlib';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from '../errors.ts';

/** How a dump is compressed on its way to storage, as recorded in the manifest. */
export interface CompressionSpec {
  algorithm: 'zstd' | 'gzip' | 'none';
  /** zstd 1–19 (default 3), gzip 1–9 (default 6); absent for none. */
  level?: number;
}

const LEVELS = { zstd: { min: 1, max: 19, default: 3 }, gzip: { min: 1, max: 9, default: 6 } } as const;

/**
 * Parses `zstd`, `zstd:LEVEL`, `gzip`, `gzip:LEVEL` or `none`.
 * @throws UsageError for an unknown algorithm or a level out of range.
 */
export function parseCompression(text: string | undefined): CompressionSpec {
  const raw = (text ?? 'zstd').trim().toLowerCase() || 'zstd';
  const [name, levelText, ...rest] = raw.split(':');
  if (name === 'none' && levelText === undefined) return { algorithm: 'none' };
  if ((name === 'zstd' || name === 'gzip') && rest.length === 0) {
    const range = LEVELS[name];
    if (levelText === undefined) return { algorithm: name, level: range.default };
    const level = Number(levelText);
    if (Number.isInteger(level) && level >= range.min && level <= range.max) return { algorithm: name, level };
    throw new UsageError(`compression level ${JSON.stringify(levelText)} is out of range for ${name}: use ${range.min}-${range.max}`);
  }
  throw new UsageError(`unknown compression ${JSON.stringify(text)}: use zstd[:1-19], gzip[:1-9] or none`);
}

/** The file-name suffix of a compressed dump: `.zst`, `.gz` or nothing. */
export function compressionSuffix(spec: CompressionSpec): string {
  return spec.algorithm === 'zstd' ? '.zst' : spec.algorithm === 'gzip' ? '.gz' : '';
}

/**
 * A running (de)compressor: write into `stream`, read from it; `done` settles when it exited.
 * `stream` fails with the codec's own reason (zstd's message, zlib's error); its readable side
 * ends only after the codec finished cleanly, so a failed codec's partial output is never taken
 * for a complete one; destroying it stops the codec (the zstd process is killed).
 */
export interface Codec {
  stream: Duplex;
  /** Resolves when the codec finished cleanly; rejects with a one-line reason otherwise. */
  done: Promise<void>;
  /** Stops the codec at once, discarding buffered data (so `done` settles). */
  abort(): void;
}

/** Resolves when a stream ended; rejects when it errored or was destroyed before its end. */
function settleOnEnd(stream: Duplex, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    stream.on('end', resolve);
    stream.on('error', (err) => reject(new Error(`${what} failed: ${err.message}`)));
    stream.on('close', () => reject(new Error(`${what} was stopped before the end`)));
  });
}

const zstdFound = new Map<string, Promise<void>>();

/**
 * Checks that the `zstd` program is installed: an executable `zstd` in a `PATH` directory (a
 * lookup, not a run: `zstd --version` cost a process start, ~30–40 ms, before every verify and
 * drill could start its download; a zstd that is there but broken fails where it runs, with its
 * own message). Cached per `PATH`.
 * @throws UsageError naming the package to install.
 */
export function requireZstd(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const dirs = env.PATH ?? '';
  let found = zstdFound.get(dirs);
  if (!found) {
    found = (async () => {
      for (const dir of dirs.split(path.delimiter).filter(Boolean)) {
        try {
          const file = path.join(dir, 'zstd');
          await access(file, constants.X_OK);
          if ((await stat(file)).isFile()) return;
        } catch {
          // not in this directory
        }
      }
      zstdFound.delete(dirs);
      throw new UsageError('zstd is not installed: install it (apt-get install zstd, brew install zstd) or choose --compression gzip');
    })();
    zstdFound.set(dirs, found);
  }
  return found;
}

/** What a zstd codec runs with: execa and the child-process stream (loaded together with execa). */
type ProcessModules = [typeof import('execa'), typeof import('../postgres/processes.ts')];
let processModules: ProcessModules | undefined;

/**
 * execa and src/postgres/processes.ts, imported on the first zstd codec of the process (about
 * 20 ms of CPU to load, which a command that starts no codec, e.g. `list`, does not pay); later
 * codecs take them as loaded.
 */
async function loadProcessModules(): Promise<ProcessModules> {
  processModules ??= await Promise.all([import('execa'), import('../postgres/processes.ts')]);
  return processModules;
}

/**
 * Starts a compressor or decompressor. zstd runs as its own process (`zstd -T0`, multithreaded),
 * so compression never shares a thread with pg_dump or with this process's event loop;
 * gzip runs on Node's zlib thread pool.
 */
export async function startCodec(spec: CompressionSpec, direction: 'compress' | 'decompress', signal?: AbortSignal): Promise<Codec> {
  if (spec.algorithm === 'none') {
    const stream = new PassThrough();
    return { stream, done: settleOnEnd(stream, 'copy'), abort: () => stream.destroy() };
  }
  if (spec.algorithm === 'gzip') {
    const stream = direction === 'compress' ? zlib.createGzip({ level: spec.level ?? 6 }) : zlib.createGunzip();
    return { stream, done: settleOnEnd(stream, `gzip ${direction}`), abort: () => stream.destroy() };
  }
  await requireZstd();
  const [{ execa }, { childDuplex }] = processModules ?? (await loadProcessModules());
  const args = direction === 'compress' ? [`-${spec.level ?? 3}`, '-T0', '-q', '-c'] : ['-d', '-q', '-c'];
  const child = execa('zstd', args, {
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
    cancelSignal: signal,
    forceKillAfterDelay: 2_000,
  });
  const done = child.then(
    () => undefined,
    (err: { exitCode?: number; signal?: string; stderr?: string; isCanceled?: boolean }) => {
      const why = err.stderr?.trim().split('\n').pop() || (err.signal ? `killed by ${err.signal}` : `exit code ${err.exitCode}`);
      throw new Error(`zstd ${direction === 'compress' ? '' : '-d '}failed: ${why}`);
    },
  );
  done.catch(() => undefined); // its owner awaits it; no unhandled rejection before that
  const abort = () => {
    // execa settles only once the process exited and its pipes closed: close them ourselves.
    child.stdin.destroy();
    child.stdout.destroy();
    child.kill('SIGKILL');
  };
  const stream = childDuplex({ stdin: child.stdin, stdout: child.stdout, done, kill: () => void child.kill('SIGKILL'), program: 'zstd' });
  return { stream, done, abort };
}
