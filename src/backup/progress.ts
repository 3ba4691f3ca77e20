import { formatBytes } from '../commands/format.ts';
import type { Logger } from '../log.ts';

/** Byte counters a progress reporter reads. */
export interface ProgressSource {
  /** Bytes produced so far (e.g. pg_dump's output). */
  rawBytes(): number;
  /** Bytes stored so far (after compression). */
  storedBytes(): number;
}

/** Options of {@link startProgress}. */
export interface ProgressOptions {
  label: string;
  logger: Logger;
  /** How often to report, in ms. Default: 500 on a TTY (a bar redrawn in place), 10 000 elsewhere (log lines, as in Actions logs). */
  intervalMs?: number;
  /** Fail when no byte moved for this long, in ms (a stalled pg_dump or upload). 0 disables. */
  stallTimeoutMs?: number;
  onStall?: (message: string) => void;
}

/**
 * Reports bytes done and MB/s while a dump runs — a line redrawn in place on a TTY, a plain log
 * line every 10 s elsewhere — and acts as the stall watchdog: when neither counter moved for
 * `stallTimeoutMs`, calls `onStall` once. Returns a function that stops it.
 */
export function startProgress(source: ProgressSource, options: ProgressOptions): () => void {
  const tty = Boolean(options.logger.progress) && process.stderr.isTTY === true;
  const interval = options.intervalMs ?? (tty ? 500 : 10_000);
  const started = Date.now();
  let lastMoved = Date.now();
  let lastRaw = 0;
  let lastStored = 0;
  let stalled = false;
  let lastLogged = started;
  const tick = () => {
    const raw = source.rawBytes();
    const stored = source.storedBytes();
    if (raw !== lastRaw || stored !== lastStored) lastMoved = Date.now();
    lastRaw = raw;
    lastStored = stored;
    const seconds = (Date.now() - started) / 1000;
    // When pg_dump feeds the compressor directly, only the stored bytes are seen here.
    const rate = seconds > 0 ? (raw || stored) / seconds / 1e6 : 0;
    const line = `${options.label}: ${raw ? `${formatBytes(raw)} dumped, ` : ''}${formatBytes(stored)} stored, ${rate.toFixed(1)} MB/s${raw ? '' : ' (compressed)'}`;
    if (tty) options.logger.progress!(line);
    else if (Date.now() - lastLogged >= interval) {
      lastLogged = Date.now();
      options.logger.info(line);
    }
    if (!stalled && options.stallTimeoutMs && Date.now() - lastMoved > options.stallTimeoutMs) {
      stalled = true;
      options.onStall?.(`no progress for ${Math.round(options.stallTimeoutMs / 1000)} s (${formatBytes(raw)} dumped, ${formatBytes(stored)} stored): pg_dump or the upload is stalled`);
    }
  };
  const timer = setInterval(tick, options.stallTimeoutMs ? Math.min(interval, Math.max(100, options.stallTimeoutMs / 4)) : interval);
  timer.unref();
  return () => {
    clearInterval(timer);
    if (tty) options.logger.progress!('');
  };
}
