import * as core from '@actions/core';

/** What {@link cancelOnSignals} gives an action: the signal to pass down, and the exit code a signal asks for. */
export interface Cancellation {
  /** Aborted on the first SIGINT or SIGTERM; its reason is an Error `cancelled by SIGTERM`. */
  signal: AbortSignal;
  /** 130 after SIGINT, 143 after SIGTERM; undefined when no signal came. */
  exitCode(): number | undefined;
  /** Removes the handlers. */
  dispose(): void;
}

/**
 * SIGINT/SIGTERM handling for an action, as the CLI does it (src/cli/main.ts): the first signal
 * aborts `signal`, so the command stops its processes, removes its throwaway cluster and temp
 * directories, and still reports; a second one exits at once. The runner cancels a job (or ends
 * one over its `timeout-minutes`) with SIGINT, then SIGTERM 7.5 s later, then SIGKILL.
 */
export function cancelOnSignals(): Cancellation {
  const controller = new AbortController();
  let code: number | undefined;
  const onSignal = (name: NodeJS.Signals) => {
    const exit = name === 'SIGINT' ? 130 : 143;
    if (code !== undefined) process.exit(exit);
    code = exit;
    core.warning(`received ${name}: cancelling and cleaning up`);
    controller.abort(new Error(`cancelled by ${name}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    exitCode: () => code,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
