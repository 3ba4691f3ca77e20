import { createWriteStream } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { Writable, type Duplex, type Readable } from 'node:stream';
import { execa } from 'execa';
import { finished, pipeline } from 'node:stream/promises';
import { messageOf } from '../errors.ts';
import type { GetOptions, Storage } from '../storage/index.ts';
import { childInput } from '../postgres/processes.ts';
import type { ResolvedBackup } from './catalog.ts';
import { mapLimit } from '../map-limit.ts';
import { storedParts, type StoredPart } from './parts.ts';
import { compressionSuffix, requireZstd, startCodec, type Codec, type CompressionSpec } from './compression.ts';
import { AGE_SUFFIX, startDecrypt, type CryptoStage } from './encryption.ts';
import type { Manifest } from './manifest.ts';
import { Meter } from './meter.ts';

/** The local name of a downloaded archive: `<id>.dump`, `<id>.sql`, or the directory `<id>.dir`. */
export function localArchiveName(m: Manifest): string {
  return `${m.id}.${m.format === 'plain' ? 'sql' : m.format === 'directory' ? 'dir' : 'dump'}`;
}

/** A backup downloaded, checked and decompressed to local disk. */
export interface LocalArchive {
  /** The archive file, or directory for the directory format. */
  path: string;
  /** Size and checksum problems (empty when every part matches the manifest). */
  problems: string[];
  /** Bytes downloaded. */
  sizeBytes: number;
}

/**
 * Downloads a backup into `scratch`, checking every part's size and SHA-256 against the manifest
 * and decompressing it: one file for custom and plain, a directory of files for the directory
 * format (4 at a time). Needs the manifest's `archiveSizeBytes` of free space. The first part
 * that fails stops the others (their downloads are cancelled); its problems are the ones
 * reported.
 * @throws `signal.reason` when `signal` aborted (after every part stopped).
 */
export async function downloadArchive(storage: Storage, backup: ResolvedBackup, scratch: string, signal?: AbortSignal, identities?: string[]): Promise<LocalArchive> {
  const target = path.join(scratch, localArchiveName(backup.manifest));
  const parts = storedParts(backup);
  if (backup.manifest.format === 'directory') await mkdir(target, { recursive: true });
  const problems: string[] = [];
  let sizeBytes = 0;
  // One owner for all parts: the first part with a problem cancels the others.
  const siblings = new AbortController();
  const stopSiblings = () => siblings.abort(new Error('stopped: another part of the archive failed'));
  const onAbort = () => siblings.abort(signal!.reason);
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await mapLimit(parts, 4, async (part) => {
      if (siblings.signal.aborted) return;
      const file = part.label ? path.join(target, part.label) : target;
      let outcome: ReadbackOutcome;
      try {
        outcome = await streamBackup(storage, part, { kind: 'file', path: file }, siblings.signal, identities);
      } catch (err) {
        if (siblings.signal.aborted && !signal?.aborted) return; // stopped because a sibling failed
        throw err;
      }
      sizeBytes += outcome.sizeBytes;
      const found = readbackProblems(outcome, part).map((p) => p.replace(/archive unreadable: /, 'writing the archive failed: '));
      if (found.length && !problems.length) {
        problems.push(...found);
        stopSiblings();
      }
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  signal?.throwIfAborted();
  return { path: target, problems, sizeBytes };
}

/**
 * Downloads one stored part as it is stored (compressed, and encrypted if it is) into `file`,
 * checking its size and SHA-256 against the manifest on the way in: for a restore that
 * decompresses it later straight into pg_restore, so the work dir holds the object, not the
 * (several times larger) archive.
 * @returns the part's problems, as {@link downloadArchive} says them (empty when it matches).
 * @throws `signal.reason` when `signal` aborted.
 */
export async function downloadObject(storage: Storage, part: StoredPart, file: string, signal?: AbortSignal): Promise<string[]> {
  // Stored bytes in, the same bytes out: no decryption, no decompression.
  const outcome = await streamBackup(storage, { ...part, compression: { algorithm: 'none' }, encrypted: false }, { kind: 'file', path: file }, signal);
  return readbackProblems(outcome, part).map((p) => p.replace(/archive unreadable: /, 'writing the object failed: '));
}

/** A sink that writes a local file; running out of space is named as such. */
function fileSink(file: string): ArchiveSink {
  const stream = createWriteStream(file);
  const done = finished(stream).catch((err: NodeJS.ErrnoException) => {
    throw new Error(err.code === 'ENOSPC' ? `${path.dirname(file)} ran out of space (ENOSPC): free space or choose another --work-dir` : messageOf(err));
  });
  done.catch(() => undefined);
  return { stream, done };
}


/**
 * What reading a backup back found. After the first failure only that failure is reported (the
 * failures it caused downstream, such as a pg_restore killed because its input broke off, are
 * not); the checksum verdict is given too when the download could still be hashed to its end.
 */
export interface ReadbackOutcome {
  /** Bytes downloaded. */
  sizeBytes: number;
  /** SHA-256 of the downloaded bytes (hex); undefined if the download failed or was stopped before its end. */
  sha256: string | undefined;
  downloadError?: string;
  /** age decryption failed (no identity matched, or the ciphertext was altered). */
  decryptError?: string;
  /** The part is encrypted and no identity was given: only the download was hashed. */
  decryptSkipped?: boolean;
  decompressError?: string;
  restoreError?: string;
  /**
   * Why the download was not hashed to its end (a later stage failed first and the rest of the
   * object could not be read within {@link HASH_GRACE_MS}): size and SHA-256 are then unknown.
   */
  checksumSkipped?: string;
}

/**
 * Where a read-back's decompressed archive goes: a writable and when it is done with it.
 * `stream` fails with the sink's own reason (a program's exit status and stderr, never "EPIPE");
 * its `finish` comes only after the sink succeeded (a program exited 0, a file was flushed);
 * destroying it before its end stops the sink without letting it take the cut input for a
 * complete one (a program is killed before its stdin is closed).
 */
export interface ArchiveSink {
  stream: Writable;
  /** Settles when the sink finished (a process exited, a file was flushed). */
  done: Promise<void>;
}

/**
 * A running program that reads the decompressed archive straight from zstd's output (an
 * operating-system pipe): `done` settles when it exited; `kill` stops it at once.
 */
export interface ProgramSink {
  done: Promise<void>;
  kill(): void;
}

/**
 * A sink that can take the decompressed archive straight from `zstd -d`, so that the largest
 * stream of a read-back (the decompressed archive, several times the object) never passes
 * through this process: zstd writes the file itself (`file`), into /dev/null (`discard`: the
 * archive is only decompressed, to check it), or into a program's stdin (`program`, e.g.
 * `pg_restore --file=/dev/null`). The same order of events as the streamed path: zstd's input
 * ends only after the object matched the manifest, so the program sees the end of its input
 * only then; on a failure the program is killed before zstd. An object that is not zstd (gzip
 * and none decompress in this process) goes to the streamed equivalent: a file written here,
 * nothing, or the program's `fallback`. Measured on a 115 MB object (732 MB archive): the
 * streamed path spent about 0.25 CPU-s in this process writing the archive to pg_restore.
 */
export type DirectSink =
  | { kind: 'file'; path: string }
  | { kind: 'discard' }
  | { kind: 'program'; start: (input: Readable) => ProgramSink; fallback: () => ArchiveSink };

/** The streamed sink of a {@link DirectSink}, for objects that are not zstd. */
function fallbackSink(direct: DirectSink): ArchiveSink {
  if (direct.kind === 'file') return fileSink(direct.path);
  if (direct.kind === 'program') return direct.fallback();
  return { stream: new Writable({ write: (_c, _e, cb) => cb() }), done: Promise.resolve() };
}

/** What running out of space looks like in zstd's message. */
const NO_SPACE = /No space left on device/i;

/**
 * `zstd -d` writing into a {@link DirectSink}: its input as a Writable (`childInput`: the end
 * closes stdin and finishes once zstd exited 0), its exit, and the program it feeds.
 */
async function startDirectZstd(direct: DirectSink, signal?: AbortSignal): Promise<{ input: Writable; done: Promise<void>; sink?: ProgramSink }> {
  await requireZstd();
  const file = direct.kind === 'file' ? await open(direct.path, 'w') : undefined;
  let child;
  try {
    child = execa('zstd', ['-d', '-q', '-c'], {
      stdin: 'pipe',
      // A descriptor or a pipe handed to zstd itself: the decompressed bytes skip this process.
      stdout: (file ? file.fd : direct.kind === 'discard' ? 'ignore' : 'pipe') as 'pipe',
      stderr: 'pipe',
      buffer: { stdout: false, stderr: true },
      cancelSignal: signal,
      forceKillAfterDelay: 2_000,
    });
  } finally {
    await file?.close(); // zstd has its own copy of the descriptor
  }
  const done = child.then(
    () => undefined,
    (err: { exitCode?: number; signal?: string; stderr?: string }) => {
      const why = err.stderr?.trim().split('\n').pop() || (err.signal ? `killed by ${err.signal}` : `exit code ${err.exitCode}`);
      if (direct.kind === 'file' && NO_SPACE.test(why)) throw new Error(`${path.dirname(direct.path)} ran out of space (ENOSPC): free space or choose another --work-dir`);
      throw new Error(`zstd -d failed: ${why}`);
    },
  );
  done.catch(() => undefined);
  let sink: ProgramSink | undefined;
  if (direct.kind === 'program') {
    try {
      sink = direct.start(child.stdout);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    } finally {
      child.stdout.destroy(); // our copy of the pipe's read end: only the program reads it
    }
  }
  const input = childInput({ stdin: child.stdin, done, kill: () => void child.kill('SIGKILL'), program: 'zstd' });
  return { input, done, sink };
}

/**
 * One sink that writes into several (verify's archive read and schema replay share one
 * download). A part that fails fails the whole sink (the others are stopped); `done` rejects
 * with the first part's failure in time.
 */
export function teeSinks(parts: ArchiveSink[]): ArchiveSink {
  if (parts.length === 1) return parts[0]!;
  const stream: Writable = new Writable({
    write(chunk, _enc, callback) {
      let pending = parts.length;
      for (const p of parts) p.stream.write(chunk, () => --pending === 0 && callback());
    },
    final(callback) {
      for (const p of parts) p.stream.end();
      Promise.all(parts.map((p) => finished(p.stream))).then(() => callback(), callback);
    },
    destroy(err, callback) {
      for (const p of parts) p.stream.destroy();
      callback(err);
    },
  });
  for (const p of parts) p.stream.on('error', (err) => stream.destroy(err));
  const done = Promise.all(parts.map((p) => p.done)).then(() => undefined);
  done.catch(() => undefined);
  return { stream, done };
}

/**
 * How long the download goes on being read and hashed after a later stage (decryption,
 * decompression, the sink) failed, so that the checksum verdict can still be given: 5 s. After
 * that the download is cancelled and the first failure is reported alone.
 */
export const HASH_GRACE_MS = 5_000;

/** How long a torn-down pipeline may take to stop (processes killed, streams closed) before the read-back gives up waiting: 30 s. */
const SETTLE_LIMIT_MS = 30_000;

type Stage = 'download' | 'checksum' | 'decrypt' | 'decompress' | 'sink' | 'cancelled';

/**
 * Streams a backup out of storage into `sink`: GET → SHA-256 → age decryption → decompression →
 * sink. One owner, modelled on `stream/promises` `pipeline()`: the first failure of any stage
 * tears every stage down at once — child processes are killed (a database sink before its input
 * closes, so nothing cut off is committed), streams destroyed, every promise settled — and it is
 * the one reported; what it caused downstream is not. The sink sees the end of its input only
 * after the whole object was read and matched the manifest's size and SHA-256: a mismatch stops
 * the sink instead. When a later stage fails first, the download is still hashed to its end for
 * up to {@link HASH_GRACE_MS}, so the checksum verdict is usually available too.
 * Sink errors are reported as `restoreError`. `openSink` is a streamed sink, opened once the
 * download answered, or a {@link DirectSink} that zstd writes into itself; `readOptions` are
 * passed to {@link Storage.get} (range size and concurrency of the S3 driver's ranged GETs).
 * @throws `signal.reason` when `signal` aborted (after every stage stopped).
 */
export async function streamBackup(storage: Storage, part: StoredPart, openSink: (() => ArchiveSink) | DirectSink, signal?: AbortSignal, identities?: string[], readOptions: Omit<GetOptions, 'signal'> = {}): Promise<ReadbackOutcome> {
  signal?.throwIfAborted();
  const outcome: ReadbackOutcome = { sizeBytes: 0, sha256: undefined };
  let source: Readable;
  try {
    source = await untilAborted(storage.get(part.key, readOptions), signal, (late) => late.destroy());
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    outcome.downloadError = messageOf(err);
    return outcome;
  }
  const hashOnly = Boolean(part.encrypted && !identities?.length);
  if (hashOnly) outcome.decryptSkipped = true; // without an identity only the stored bytes can be checked

  // The stages after the checksum ("downstream"), in order, and what settles when each is done.
  let decrypt: CryptoStage | undefined;
  let codec: Codec | undefined;
  let sink: ArchiveSink | undefined;
  // A direct sink's program has no stream here (zstd writes into it): `stop` kills it.
  const downstream: { stage: Stage; stream?: Duplex | Writable; done: Promise<void>; stop?: () => void }[] = [];
  const direct = typeof openSink === 'function' ? undefined : openSink;
  try {
    if (!hashOnly) {
      if (part.encrypted) {
        decrypt = startDecrypt(identities!);
        // The decrypter's own promise may wait for a write that nobody reads any more once its
        // stream failed: settle on the stream's failure too.
        const failed = new Promise<never>((_, reject) => decrypt!.stream.once('error', (err) => reject(new Error(`age decryption failed: ${messageOf(err)}`))));
        const decryptDone = Promise.race([decrypt.done, failed]);
        decryptDone.catch(() => undefined);
        downstream.push({ stage: 'decrypt', stream: decrypt.stream, done: decryptDone });
      }
      if (direct && part.compression.algorithm === 'zstd') {
        const z = await startDirectZstd(direct, signal);
        downstream.push({ stage: 'decompress', stream: z.input, done: z.done });
        if (z.sink) downstream.push({ stage: 'sink', done: z.sink.done, stop: z.sink.kill });
      } else {
        codec = await startCodec(part.compression, 'decompress', signal);
        downstream.push({ stage: 'decompress', stream: codec.stream, done: codec.done });
        sink = direct ? fallbackSink(direct) : (openSink as () => ArchiveSink)();
        downstream.push({ stage: 'sink', stream: sink.stream, done: sink.done });
      }
    }
  } catch (err) {
    source.destroy();
    for (const d of downstream) d.stop?.();
    for (const d of downstream) d.stream?.destroy();
    await Promise.allSettled(downstream.map((d) => d.done));
    throw err;
  }

  const meter = new Meter('sha256');
  let first: { stage: Stage; error: unknown } | undefined;
  let downstreamBroken = hashOnly; // no downstream: the download is only hashed
  let unblockFeed: (() => void) | undefined;
  let graceTimer: NodeJS.Timeout | undefined;
  let giveUp: () => void = () => undefined;
  const gaveUp = new Promise<void>((resolve) => (giveUp = resolve));
  let settleTimer: NodeJS.Timeout | undefined;

  const stopDownload = (why: Error) => {
    source.destroy(why);
    meter.destroy(why);
    feed.destroy(why);
  };
  const stopDownstream = (why: Error) => {
    downstreamBroken = true;
    unblockFeed?.();
    // A program fed by zstd's pipe is killed first, before its input can end; then the streams.
    for (const d of downstream) d.stop?.();
    for (const d of downstream) d.stream?.destroy(why);
  };
  /** The first failure wins; every stage is then stopped. */
  const fail = (stage: Stage, error: unknown) => {
    if (first) return;
    first = { stage, error };
    const why = error instanceof Error ? error : new Error(String(error));
    settleTimer = setTimeout(giveUp, SETTLE_LIMIT_MS);
    if (stage === 'decrypt' || stage === 'decompress' || stage === 'sink') {
      // The download keeps being hashed (into the void) for a moment, for the checksum verdict.
      stopDownstream(why);
      graceTimer = setTimeout(() => stopDownload(new Error('stopped: a later stage failed')), HASH_GRACE_MS);
    } else {
      stopDownload(why);
      stopDownstream(why);
    }
  };
  const onAbort = () => fail('cancelled', signal!.reason);
  signal?.addEventListener('abort', onAbort, { once: true });

  // The end of the download: size and SHA-256 are checked before the downstream sees its end.
  const head = downstream[0]?.stream;
  const feed = new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _enc, callback) {
      if (downstreamBroken || !head) return callback();
      if (head.write(chunk)) return callback();
      // Back-pressure from downstream; released early when the downstream is torn down.
      const resume = () => {
        head.off('drain', resume);
        if (unblockFeed === resume) unblockFeed = undefined;
        callback();
      };
      unblockFeed = resume;
      head.on('drain', resume);
    },
    final(callback) {
      outcome.sizeBytes = meter.bytes;
      outcome.sha256 = meter.digest();
      if (outcome.sizeBytes !== part.sizeBytes || outcome.sha256 !== part.sha256) {
        return callback(new Error('the object does not match its manifest'));
      }
      if (!downstreamBroken) head?.end();
      callback();
    },
  });

  source.on('error', (err) => fail('download', err));
  meter.on('error', (err) => fail('download', err));
  feed.on('error', (err) => fail('checksum', err));
  for (const d of downstream) {
    d.stream?.on('error', (err) => fail(d.stage, err));
    d.done.catch((err: unknown) => fail(d.stage, err));
  }
  const upstreamDone = pipeline(source, meter, feed).then(() => clearTimeout(graceTimer));
  upstreamDone.catch(() => undefined);
  const streams = downstream.flatMap((d) => (d.stream ? [d.stream] : []));
  const downstreamDone = streams.length > 1 ? pipeline(streams as [Duplex, ...Duplex[], Writable]) : Promise.resolve();
  downstreamDone.catch(() => undefined);
  const settled = Promise.allSettled([upstreamDone, downstreamDone, ...downstream.map((d) => d.done)]);
  try {
    await Promise.race([settled, gaveUp]);
  } finally {
    clearTimeout(graceTimer);
    clearTimeout(settleTimer);
    signal?.removeEventListener('abort', onAbort);
  }

  if (signal?.aborted) throw signal.reason;
  outcome.sizeBytes = meter.bytes;
  const hashed = await upstreamDone.then(
    () => true,
    () => false,
  );
  if (!hashed && outcome.sha256 === undefined && first?.stage !== 'download') {
    outcome.checksumSkipped = `the download was stopped ${HASH_GRACE_MS / 1000} s after the first failure, before its end`;
  }
  if (!first) return outcome;
  // The reason of the stage that failed first: its own settled status (a program's exit status
  // and stderr, a codec's message) rather than the stream error that announced it.
  const reasonOf = async (stage: Stage): Promise<string> => {
    const d = downstream.find((x) => x.stage === stage);
    const own = d ? await d.done.then(() => undefined, (err: unknown) => err) : undefined;
    return messageOf(own ?? first!.error);
  };
  let stage = first.stage;
  if (stage === 'sink' && direct?.kind === 'program') {
    // zstd feeds the program through a pipe: a zstd that failed on its own (not killed, not cut
    // off by the program's exit) ended the program's input early; zstd is the cause.
    const z = await downstream.find((d) => d.stage === 'decompress')!.done.then(() => undefined, (err: unknown) => messageOf(err));
    if (z && !/killed by SIG|Broken pipe|was cancelled/i.test(z)) stage = 'decompress';
  }
  const decompressReason = stage === 'decompress' ? await reasonOf('decompress') : '';
  if (stage === 'decompress' && direct?.kind === 'file' && /ran out of space \(ENOSPC\)/.test(decompressReason)) stage = 'sink';
  switch (stage) {
    case 'download':
      outcome.downloadError = messageOf(first.error);
      outcome.sha256 = undefined;
      break;
    case 'decrypt':
      outcome.decryptError = await reasonOf('decrypt');
      break;
    case 'decompress':
      outcome.decompressError = decompressReason;
      break;
    case 'sink':
      outcome.restoreError = direct?.kind === 'file' ? decompressReason : await reasonOf('sink');
      break;
    default:
      break; // checksum: size and sha256 tell; cancelled: thrown above
  }
  return outcome;
}

/**
 * Awaits `promise` unless `signal` aborts first (then rejects with its reason at once); a value
 * that arrives after the abort is handed to `discard` (e.g. a download stream to destroy).
 */
async function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, discard: (late: T) => void): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } catch (err) {
    if (signal.aborted) promise.then(discard, () => undefined);
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

/**
 * The reasons a read-back disagrees with its manifest, most telling first: download failure,
 * size, SHA-256, decompression, pg_restore. Empty when the backup is intact.
 */
export function readbackProblems(outcome: ReadbackOutcome, part: StoredPart): string[] {
  const expected = part;
  const problems: string[] = [];
  const of = part.label ? `${part.label}: ` : '';
  if (outcome.downloadError) problems.push(`${of}download failed: ${outcome.downloadError}`);
  else if (!outcome.checksumSkipped) {
    if (outcome.sizeBytes !== expected.sizeBytes) problems.push(`${of}size mismatch: the object has ${outcome.sizeBytes} bytes, the manifest says ${expected.sizeBytes}`);
    if (outcome.sha256 !== expected.sha256) problems.push(`${of}sha256 mismatch: the object hashes to ${outcome.sha256}, the manifest says ${expected.sha256}`);
  }
  if (outcome.decryptError) problems.push(`${of}${outcome.decryptError}`);
  if (outcome.decompressError) problems.push(`${of}decompression failed: ${outcome.decompressError}`);
  if (outcome.restoreError) problems.push(`${of}archive unreadable: ${outcome.restoreError}`);
  return problems;
}
