import { redact } from './errors.ts';
import { terminalText } from './text/sinks.ts';

/**
 * Where commands report progress. The CLI prints to stderr (stdout is kept for `--json`); the
 * GitHub action adapter maps it onto `@actions/core` (log groups, warnings).
 * Every message passes through {@link redact} before it is printed, and through the sink's own
 * escaping (src/text/sinks.ts) as it is written: a message may carry names and fields read from a
 * bucket or a database, so a logger never prints a control character or starts a line (or, in
 * the runner log, a workflow command) because of one. A message is one line: a line break in it
 * is shown as `\n`.
 */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  /**
   * Detail meant for the tool's developers and for debugging (snapshot ids, TOC offsets, socket
   * paths): the CLI shows it only with `--verbose`, the action as `::debug::`, the drill log
   * always records it. Optional: a logger without it drops such lines.
   */
  debug?(message: string): void;
  /** Runs `fn` inside a named phase (a collapsible group in Actions logs). */
  group<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Redraws a one-line progress bar in place (terminals only); an empty line clears it. */
  progress?(line: string): void;
  /** The run asked for no progress lines (`--quiet`): progress reporters (src/backup/progress-eta.ts) then do nothing. */
  quiet?: boolean;
}

let verbose = false;
/** A progress line is on the terminal (drawn without its line break): the next line clears it first. */
let progressShown = false;

/** Writes one line to stderr, first clearing a progress line that {@link stderrLogger}'s `progress` drew (it is drawn again at its next update). */
function writeLine(text: string): void {
  process.stderr.write(`${progressShown ? '\r\x1b[K' : ''}${text}\n`);
  progressShown = false;
}

/** Turns the CLI's `--verbose` on or off for this process: {@link stderrLogger}'s `debug` lines are printed only when on. */
export function setVerbose(on: boolean): void {
  verbose = on;
}

/** A logger that writes timestamp-free lines to stderr, the CLI default; control characters in a message are shown escaped ({@link terminalText}); `debug` lines only with {@link setVerbose}. */
export function stderrLogger(quiet = false): Logger {
  return {
    quiet,
    debug(message) {
      if (verbose && !quiet) writeLine(terminalText(redact(message)));
    },
    info(message) {
      if (!quiet) writeLine(terminalText(redact(message)));
    },
    warn(message) {
      writeLine(`warning: ${terminalText(redact(message))}`);
    },
    async group(name, fn) {
      if (!quiet) writeLine(terminalText(redact(name)));
      return fn();
    },
    progress(line) {
      if (quiet || !process.stderr.isTTY) return;
      process.stderr.write(`\r\x1b[K${terminalText(redact(line))}`);
      progressShown = line !== '';
    },
  };
}

/** A logger that records lines in memory (used for drill logs and tests) and forwards them; recorded lines are escaped as for a terminal, so the archived drill log is safe to `cat`. */
export function recordingLogger(forward: Logger): Logger & { lines: string[]; debug(message: string): void } {
  const lines: string[] = [];
  const stamp = () => new Date().toISOString();
  return {
    lines,
    info(message) {
      lines.push(`${stamp()} ${terminalText(redact(message))}`);
      forward.info(message);
    },
    warn(message) {
      lines.push(`${stamp()} WARNING ${terminalText(redact(message))}`);
      forward.warn(message);
    },
    debug(message) {
      lines.push(`${stamp()} ${terminalText(redact(message))}`);
      forward.debug?.(message);
    },
    async group(name, fn) {
      lines.push(`${stamp()} == ${terminalText(redact(name))}`);
      return forward.group(name, fn);
    },
  };
}
