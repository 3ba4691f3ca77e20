// How the GitHub Actions runner finds workflow commands in a step's output, ported from
// actions/runner (src/Runner.Sdk/ProcessInvoker.cs: lines split on CR, LF, CRLF;
// src/Runner.Worker/Handlers/OutputManager.cs; src/Runner.Common/ActionCommand.cs: TryParseV2
// trims leading white space and needs `::name …::`, the legacy TryParse finds `##[name …]`
// anywhere in the line; src/Runner.Worker/ActionCommandManager.cs: the registered names).
// Tests use it to read an action's stdout as the runner would.

/** Commands the runner acts on (ActionCommandManager's extensions and stop-commands; matched case-insensitively). */
export const REGISTERED = ['stop-commands', 'set-env', 'set-output', 'save-state', 'add-mask', 'add-path', 'add-matcher', 'remove-matcher', 'debug', 'warning', 'error', 'notice', 'group', 'endgroup', 'echo'];

/** A workflow command found in one line. */
export interface RunnerCommand {
  command: string;
  data: string;
  line: string;
}

/** The lines of a step's output as the runner reads them (StreamReader.ReadLine: CR, LF, CRLF). */
export function runnerLines(output: string): string[] {
  return output.split(/\r\n|\r|\n/);
}

/** .NET `char.IsWhiteSpace`, which `TrimStart()` removes. */
const DOTNET_SPACE = /^[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*/;

function unescapeData(s: string): string {
  return s.replace(/%0D/g, '\r').replace(/%0A/g, '\n').replace(/%25/g, '%');
}

/** The command in one line, as the runner parses it (v2 first, then the legacy `##[` form), or undefined. */
export function parseRunnerCommand(line: string, registered: readonly string[] = REGISTERED): RunnerCommand | undefined {
  const trimmed = line.replace(DOTNET_SPACE, '');
  if (trimmed.startsWith('::')) {
    const end = trimmed.indexOf('::', 2);
    if (end >= 0) {
      const info = trimmed.slice(2, end);
      const name = info.split(' ')[0]!;
      if (registered.includes(name.toLowerCase())) return { command: name.toLowerCase(), data: unescapeData(trimmed.slice(end + 2)), line };
    }
  }
  const prefix = line.indexOf('##[');
  if (prefix >= 0) {
    const rb = line.indexOf(']', prefix);
    if (rb >= 0) {
      const name = line.slice(prefix + 3, rb).split(' ')[0]!;
      if (registered.includes(name.toLowerCase())) return { command: name.toLowerCase(), data: line.slice(rb + 1), line };
    }
  }
  return undefined;
}

/** Every workflow command in a step's output, in order. */
export function runnerCommands(output: string): RunnerCommand[] {
  return runnerLines(output).map((l) => parseRunnerCommand(l)).filter((c): c is RunnerCommand => c !== undefined);
}
