import { Command, CommanderError } from 'commander';
import { UsageError, exitCodeOf, messageOf } from '../errors.ts';
import { addStatusCommand } from '../status/cli.ts';
import { terminalText } from '../text/sinks.ts';
import { TOOL } from '../version.ts';
import { setVerbose } from '../log.ts';
import { EXIT } from './common.ts';
import { installConfigFile } from './config.ts';
import { addDemoCommand } from './commands/demo.ts';
import { addDiffCommand } from './commands/diff.ts';
import { addDrillCommand } from './commands/drill.ts';
import { addDumpCommand } from './commands/dump.ts';
import { addEvidenceCommand } from './commands/evidence.ts';
import { addLifecycleCommand } from './commands/lifecycle.ts';
import { addListCommand } from './commands/list.ts';
import { addMirrorCommand } from './commands/mirror.ts';
import { addPruneCommand } from './commands/prune.ts';
import { addRestoreCommand } from './commands/restore.ts';
import { addVerifyCommand } from './commands/verify.ts';

// The program's wiring: global options, the commands in `--help` order, error → exit code,
// signals and closed output. Each command's options, help text and call into src/commands live
// in src/cli/commands/<command>.ts (status: src/status/cli.ts); shared option groups in common.ts.

export { EXIT } from './common.ts';

/**
 * Builds the `pg-backup` program. `signal` aborts the running command (SIGINT / SIGTERM);
 * `setExitCode` receives the command's exit code.
 */
export function buildProgram(signal: AbortSignal, setExitCode: (code: number) => void): Command {
  const program = new Command('pg-backup')
    .description('PostgreSQL backups that are proven to restore: dump, list, verify, drill and restore against any S3-compatible bucket.')
    .version(TOOL.version)
    .showHelpAfterError('(run with --help for usage)')
    .option('--verbose', 'also print internals on stderr (snapshot ids, TOC offsets, socket paths), before or after the command')
    .exitOverride();
  // --verbose turns on the loggers' debug lines (src/log.ts) for the command about to run.
  program.hook('preAction', (_program, action) => setVerbose(Boolean(action.optsWithGlobals().verbose)));

  const context = { signal, setExitCode };
  addDumpCommand(program, context);
  addListCommand(program, context);
  addVerifyCommand(program, context);
  addDrillCommand(program, context);
  addRestoreCommand(program, context);
  addDiffCommand(program, context);
  addPruneCommand(program, context);
  addLifecycleCommand(program, context);
  addMirrorCommand(program, context);
  addStatusCommand(program, setExitCode);
  addEvidenceCommand(program, context);
  addDemoCommand(program, context);
  installConfigFile(program); // pg-backup.yml: --config on each command, `config check`

  return program;
}

/** Exit code of a run whose output (stdout or stderr) was closed by its reader: 128 + SIGPIPE, as a shell reports a program SIGPIPE killed. */
export const EXIT_OUTPUT_CLOSED = 141;

/**
 * Runs the CLI with `argv` (as `process.argv`) and returns the exit code. User mistakes print
 * one line and return 2; failed checks return 1. SIGINT/SIGTERM, and a closed stdout or stderr
 * (EPIPE, e.g. `pg-backup drill … 2>&1 | head -2`), abort the one AbortController whose signal
 * every command honours: its upload is aborted, its processes are ended, its throwaway cluster
 * and temp directories are removed, and the run returns 130 (SIGINT), 143 (SIGTERM) or 141
 * (closed output) once that cleanup finished. A second signal exits at once.
 */
export async function main(argv: string[]): Promise<number> {
  const controller = new AbortController();
  let exitCode: number = EXIT.ok;
  let signalled = false;
  const onSignal = (name: NodeJS.Signals) => {
    if (signalled) process.exit(name === 'SIGINT' ? 130 : 143);
    signalled = true;
    process.stderr.write(`received ${name}: cancelling and cleaning up\n`);
    exitCode = name === 'SIGINT' ? 130 : 143;
    controller.abort(new UsageError(`cancelled by ${name}`));
  };
  // A reader that closed our output (EPIPE) ends the run like a signal: without a listener the
  // 'error' event would kill the process on the spot, leaving a drill's cluster behind. This
  // run's listeners go in `finally`; one silent listener per stream stays for the life of the
  // process, so later writes to a broken stream fail quietly (and repeated runs in one process,
  // as in the tests, add nothing).
  guardOutputStreams();
  const onOutputError = (which: string) => (err: NodeJS.ErrnoException) => {
    if (signalled) return;
    signalled = true;
    exitCode = EXIT_OUTPUT_CLOSED;
    controller.abort(new UsageError(`${which} was closed (${err.code ?? err.message}): cancelled`));
  };
  const onStdoutError = onOutputError('stdout');
  const onStderrError = onOutputError('stderr');
  process.stdout.on('error', onStdoutError);
  process.stderr.on('error', onStderrError);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const program = buildProgram(controller.signal, (code) => {
    if (!signalled) exitCode = code; // an interrupted run exits 130/143 whatever its verdict
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage; // commander already printed the one-line error
    }
    if (signalled) return exitCode;
    process.stderr.write(`pg-backup: ${terminalText(messageOf(err))}\n`);
    if (exitCodeOf(err) !== EXIT.usage && process.env.PG_BACKUP_DEBUG && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
    return exitCodeOf(err);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdout.off('error', onStdoutError);
    process.stderr.off('error', onStderrError);
  }
  return exitCode;
}

let outputGuarded = false;

/** Installs, once per process, a listener that swallows write errors on stdout and stderr. */
function guardOutputStreams(): void {
  if (outputGuarded) return;
  outputGuarded = true;
  const ignore = () => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
}
