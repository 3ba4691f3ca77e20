#!/usr/bin/env -S MALLOC_ARENA_MAX=2 PGB_MALLOC_ARENA=1 node --max-semi-space-size=1
// pg-backup CLI launcher. Runs dist/cli.js, the CLI bundled by `npm run build` (also run by
// `npm ci`), when it is present and fresh (every source file it was built from unchanged);
// otherwise the TypeScript sources directly with Node's type stripping (Node 22.18+/23.6+; the
// project targets Node 24, which `npm ci` installs as node_modules/.bin/node and `npx pg-backup`
// puts first on the PATH). The bundle starts in about half the time and memory. The npm package
// (`npm i -g pg-backup-actions`, `npx pg-backup-actions@1`) ships the bundle without the
// sources: then the bundle is what runs.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18) || (major === 23 && minor < 6)) {
  process.stderr.write(`pg-backup: needs Node.js 24 (this is ${process.versions.node}): install Node.js 24, or in a clone of the repository run "npm ci", then "npx pg-backup …"\n`);
  process.exit(2);
}

// Memory, two settings that only work from the start of the process:
// - V8 grows the young generation up to 16 MiB per semi-space (x3 in use while scavenging) under
//   the stream of 64 KiB chunks a dump pushes through; capped at 1 MiB, peak RSS drops by ~30 MiB
//   at no measurable cost in time (docs/performance.md).
// - glibc gives each thread that calls malloc an arena of its own (up to 8 per core); V8's
//   background threads free the 64 KiB chunk buffers into them, and a 10 GB dump's peak RSS was
//   128–129 MiB; with MALLOC_ARENA_MAX=2, 123–124 MiB (3 alternating pairs, same time;
//   docs/performance.md). Other C libraries
//   ignore the variable. It is meant for this process only: it is taken out of the environment
//   that pg_dump, zstd and PostgreSQL inherit (PGB_MALLOC_ARENA=1 marks it as ours).
// The shebang line passes both (`env -S`, GNU coreutils 8.30+, BSD/macOS), so `npx pg-backup`
// and `./bin/pg-backup.js` start once; started any other way (`node bin/pg-backup.js`), the
// launcher replaces itself (same pid, stdio and signals) once with them, a second Node start of
// ~40 ms, unless the caller already chose a semi-space size (then neither is added). A
// MALLOC_ARENA_MAX of the caller's own is kept there; the shebang line sets 2 regardless.
// PGB_HEAP_CAP=0 turns both off.
const SEMI = '--max-semi-space-size';
const CAP = `${SEMI}=1`;
const trace = process.env.PGB_TRACE_LAUNCHER === '1';
const arenaIsOurs = process.env.PGB_MALLOC_ARENA === '1';
if (arenaIsOurs) {
  delete process.env.MALLOC_ARENA_MAX;
  delete process.env.PGB_MALLOC_ARENA;
}
const wantCap = process.env.PGB_HEAP_CAP !== '0' && !(process.env.NODE_OPTIONS ?? '').includes(SEMI);
const flags = process.execArgv;
// Started without the cap (and without a size of the caller's): add it. Started by the shebang
// with it while PGB_HEAP_CAP=0 or NODE_OPTIONS chose a size: take it out.
const restartWith =
  wantCap && !flags.some((a) => a.startsWith(SEMI)) ? [CAP, ...flags] : !wantCap && flags.includes(CAP) ? flags.filter((a) => a !== CAP) : undefined;
if (restartWith && typeof process.execve === 'function') {
  const env = wantCap && process.env.MALLOC_ARENA_MAX === undefined ? { ...process.env, MALLOC_ARENA_MAX: '2', PGB_MALLOC_ARENA: '1' } : process.env;
  try {
    if (trace) process.stderr.write(`pg-backup: restarting node with ${restartWith.join(' ') || 'no node flags'}${env === process.env ? '' : ' and MALLOC_ARENA_MAX=2'}\n`);
    process.execve(process.execPath, [process.execPath, ...restartWith, ...process.argv.slice(1)], env);
  } catch {
    // Not supported here (Windows) or refused: run as we are.
  }
}

/**
 * True when dist/cli.js exists and either the sources are not there (the npm package ships the
 * bundle alone) or every file recorded in dist/cli.inputs.json still has its recorded SHA-256.
 */
function bundleIsFresh() {
  if (process.env.PGB_CLI_SOURCES === '1') return false;
  try {
    // Plain paths, not a URL per file: 141 URL parses cost more than the hashing (~3 ms).
    const root = fileURLToPath(new URL('../', import.meta.url));
    if (!existsSync(`${root}dist/cli.js`)) return false;
    if (!existsSync(`${root}src/cli/main.ts`)) return true;
    const { files } = JSON.parse(readFileSync(`${root}dist/cli.inputs.json`, 'utf8'));
    for (const [file, sha256] of Object.entries(files)) {
      if (createHash('sha256').update(readFileSync(`${root}${file}`)).digest('hex') !== sha256) return false;
    }
    return Object.keys(files).length > 0;
  } catch {
    return false;
  }
}

// V8's compile cache, beside the bundle in dist/ (not the temp dir, which a run leaves as it
// found it): a start skips compiling the bundle, 0.11 s and ~17 MiB less peak RSS (measured on a
// `list`: 0.20 s / 82 MiB against 0.31 s / 99 MiB). `dump` promises to write no local file at all
// (test/integration/local-disk.test.ts), and a cache miss writes an entry; so dump reads the
// cache only when the build warmed it for this very bundle and this Node (warm.json, written by
// `PGB_WARM_COMPILE_CACHE=1`, which scripts/build.ts runs after writing the bundle): then every
// lookup hits, and Node's one mkdir of the existing cache directory fails with EEXIST.
const CACHE_ROOT = new URL('../dist/compile-cache/', import.meta.url).pathname;
const WARM_MARK = new URL('../dist/compile-cache/warm.json', import.meta.url);

/** The SHA-256 (hex) of dist/cli.js, or undefined when it cannot be read. */
function bundleSha256() {
  try {
    return createHash('sha256').update(readFileSync(new URL('../dist/cli.js', import.meta.url))).digest('hex');
  } catch {
    return undefined;
  }
}

/** True when warm.json says the cache holds this bundle compiled by this Node, in a directory that exists. */
function cacheIsWarm() {
  try {
    const mark = JSON.parse(readFileSync(WARM_MARK, 'utf8'));
    // The bundle is hashed (2 MB, ~3 ms) only here, for dump, and only once the rest matched.
    return mark.node === process.version && mark.arch === process.arch && mark.v8 === process.versions.v8 && existsSync(mark.cacheDir) && mark.bundleSha256 === bundleSha256();
  } catch {
    return false;
  }
}

const fresh = bundleIsFresh();
const warming = process.env.PGB_WARM_COMPILE_CACHE === '1';
if (warming || process.argv[2] !== 'dump' || (fresh && cacheIsWarm())) module.enableCompileCache?.(CACHE_ROOT);
const entry = fresh ? '../dist/cli.js' : '../src/cli/main.ts';
if (warming) {
  // Compiles the bundle's top level into the cache, then records for which bundle and Node.
  if (!fresh || typeof module.flushCompileCache !== 'function') process.exit(0);
  await import(entry);
  module.flushCompileCache();
  const mark = { node: process.version, arch: process.arch, v8: process.versions.v8, bundleSha256: bundleSha256(), cacheDir: module.getCompileCacheDir() };
  writeFileSync(WARM_MARK, `${JSON.stringify(mark)}\n`);
  process.exit(0);
}
if (trace) process.stderr.write(`pg-backup: running ${entry.slice(3)} (${process.execArgv.join(' ') || 'no node flags'}${arenaIsOurs ? ', MALLOC_ARENA_MAX=2' : ''})\n`);
const { main } = await import(entry);
const code = await main(process.argv);
process.stdout.write('', () => process.exit(code));
