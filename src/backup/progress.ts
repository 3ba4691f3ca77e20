import { formatBytes, formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';

/** Byte counters a progress reporter reads. */
export interface ProgressSource {
  /** Bytes produced so far (e.g. pg_dump's output). */
  rawBytes(): number;
  /**
   * Bytes the store acknowledged so far (after compression): S3 parts whose UploadPart returned,
   * never bytes merely handed to the uploader (see `UploadOptions.onStored`).
   */
  storedBytes(): number;
  /** Bytes handed to the uploader so far (compressed), acknowledged or not. Optional: shown as "in flight" beyond {@link storedBytes}. */
  sentBytes?(): number;
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
 * line every 10 s elsewhere, e.g. `app: 1.2 GB dumped, 310 MB stored, 16 MB in flight, 95.3 MB/s, 12.6 s elapsed`
 * ("stored" counts only what the store acknowledged) — and acts as the stall watchdog: when no
 * counter moved for `stallTimeoutMs`, calls `onStall` once. Returns a function that stops it.
 */
export function startProgress(source: ProgressSource, options: ProgressOptions): () => void {
  const tty = Boolean(options.logger.progress) && process.stderr.isTTY === true;
  const interval = options.intervalMs ?? (tty ? 500 : 10_000);
  const started = Date.now();
  let lastMoved = Date.now();
  let lastRaw = 0;
  let lastStored = 0;
  let lastSent = 0;
  let stalled = false;
  let lastLogged = started;
  const tick = () => {
    const raw = source.rawBytes();
    const stored = source.storedBytes();
    const sent = source.sentBytes?.() ?? stored;
    if (raw !== lastRaw || stored !== lastStored || sent !== lastSent) lastMoved = Date.now();
    lastRaw = raw;
    lastStored = stored;
    lastSent = sent;
    const seconds = (Date.now() - started) / 1000;
    // When pg_dump feeds the compressor directly, only the stored bytes are seen here.
    const rate = seconds > 0 ? (raw || stored) / seconds / 1e6 : 0;
    const inFlight = sent > stored ? `, ${formatBytes(sent - stored)} in flight` : '';
    const line = `${options.label}: ${raw ? `${formatBytes(raw)} dumped, ` : ''}${formatBytes(stored)} stored${inFlight}, ${rate.toFixed(1)} MB/s${raw ? '' : ' (compressed)'}, ${formatSeconds(Date.now() - started)} elapsed`;
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
