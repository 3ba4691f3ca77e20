// Bundles each action into actions/<name>/dist/index.js (one ESM file, committed), and the CLI
// into dist/cli.js (not committed; bin/pg-backup.js runs it when it is fresh, else the sources).
// `node scripts/build.ts --check` rebuilds the actions in memory and exits 1 if a committed bundle is stale.
// `node scripts/build.ts --cli` builds only the CLI bundle (what `npm ci` runs, through `prepare`).
import { createHash } from 'node:crypto';
import { readFile, writeFile, mkdir, rename } from 'node:fs/promises';
import { createRequire, isBuiltin } from 'node:module';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Action name → entry file. */
export const ACTIONS = {
  dump: 'src/github/dump-action.ts',
  verify: 'src/github/verify-action.ts',
  drill: 'src/github/drill-action.ts',
  prune: 'src/github/prune-action.ts',
} as const;

/** The CLI's entry file and its bundle, relative to the repository root. */
export const CLI = { entry: 'src/cli/main.ts', bundle: 'dist/cli.js', inputs: 'dist/cli.inputs.json' } as const;

/**
 * Files outside `src/` whose change makes the CLI bundle stale: the package manifest (name,
 * version) and the lock file (dependency versions bundled in).
 */
const CLI_EXTRA_INPUTS = ['package.json', 'package-lock.json'];

/**
 * Texts the bundles carry inline: Chart.js's minified build, for the self-contained status page
 * (src/status/chart-library.ts reads it from node_modules when run from the sources).
 */
async function inlineTexts(): Promise<Record<string, string>> {
  const chartJs = path.join(path.dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.min.js');
  return { __PGB_CHART_JS__: JSON.stringify(await readFile(chartJs, 'utf8')) };
}

/**
 * An esbuild plugin that loads Node's built-in modules when the module importing them is first
 * evaluated, not when the bundle starts. esbuild keeps `import … from 'node:…'` of an external
 * module as an ES import at the top of the bundle, evaluated before anything else even when the
 * importer is initialised lazily (a command's implementation, the S3 driver); and Node's ES facade
 * of a built-in reads every export, so `node:http`'s loads its WebSocket support (undici): ~15 ms
 * and 4 MiB of RSS for `--version`. Each such import becomes a tiny CommonJS module
 * `module.exports = require('node:…')`, initialised with its importer. Same objects either way: a
 * built-in's ES namespace is its CommonJS exports.
 */
const lazyBuiltins = {
  name: 'lazy-node-builtins',
  setup(build: { onResolve: Function; onLoad: Function }) {
    build.onResolve({ filter: /^(node:)?[a-z0-9_/]+$/ }, (args: { path: string; kind: string; namespace: string }) =>
      args.kind === 'import-statement' && args.namespace !== 'lazy-builtin' && isBuiltin(args.path) ? { path: args.path, namespace: 'lazy-builtin' } : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args: { path: string }) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

async function esbuild(entry: string, metafile = false) {
  const { build } = await import('esbuild');
  const define = await inlineTexts();
  return build({
    entryPoints: [path.join(root, entry)],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    write: false,
    legalComments: 'none',
    minify: true,
    keepNames: true,
    metafile,
    logLevel: 'warning',
    absWorkingDir: root,
    define,
    plugins: [lazyBuiltins],
    // Some CommonJS dependencies call require(); give the ESM bundle one.
    banner: { js: "import { createRequire as __pgbCreateRequire } from 'node:module';\nconst require = __pgbCreateRequire(import.meta.url);" },
  });
}

/** Builds every action bundle in memory: output path → contents. */
export async function bundles(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [name, entry] of Object.entries(ACTIONS)) {
    const result = await esbuild(entry);
    out.set(path.join(root, 'actions', name, 'dist', 'index.js'), result.outputFiles[0]!.text);
  }
  return out;
}

/**
 * Builds the CLI bundle in memory. Returns its text and the freshness record bin/pg-backup.js
 * checks before using it: the SHA-256 (hex) of every project source file bundled in (paths
 * relative to the repository root, `/`-separated) plus package.json and package-lock.json.
 */
export async function cliBundle(): Promise<{ text: string; inputs: { files: Record<string, string> } }> {
  const result = await esbuild(CLI.entry, true);
  const own = Object.keys(result.metafile!.inputs)
    .filter((f) => !f.includes('node_modules/') && !f.startsWith('lazy-builtin:'))
    .map((f) => path.relative(root, path.resolve(root, f)).split(path.sep).join('/'));
  const files: Record<string, string> = {};
  for (const f of new Set([...own.sort(), ...CLI_EXTRA_INPUTS])) files[f] = createHash('sha256').update(await readFile(path.join(root, f))).digest('hex');
  return { text: result.outputFiles[0]!.text, inputs: { files } };
}

/** Writes dist/cli.js, then (last, so a half-written bundle is never taken as fresh) its freshness record. */
export async function writeCliBundle(): Promise<string> {
  const { text, inputs } = await cliBundle();
  const bundle = path.join(root, CLI.bundle);
  await mkdir(path.dirname(bundle), { recursive: true });
  await writeFile(`${bundle}.tmp`, text);
  await rename(`${bundle}.tmp`, bundle);
  await writeFile(path.join(root, CLI.inputs), `${JSON.stringify(inputs, null, 1)}\n`);
  // Warm V8's compile cache for this bundle, so that `dump` can read it without writing
  // (bin/pg-backup.js, "compile cache"); a failure only leaves dump without the cache.
  const warm = spawnSync(process.execPath, [path.join(root, 'bin/pg-backup.js')], { env: { ...process.env, PGB_WARM_COMPILE_CACHE: '1', PGB_CLI_SOURCES: '' }, stdio: 'ignore' });
  const warmed = warm.status === 0 ? ', compile cache warmed' : '';
  return `wrote ${CLI.bundle} (${(text.length / 1024).toFixed(0)} KiB, ${Object.keys(inputs.files).length} inputs checked at start-up${warmed})`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv.includes('--cli')) {
    try {
      console.log(await writeCliBundle());
    } catch (err) {
      // No esbuild (an install without devDependencies, where every package is one): nothing to build.
      if ((err as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw err;
      console.log('esbuild is not installed: the CLI will run from its sources');
    }
    process.exit(0);
  }
  const check = process.argv.includes('--check');
  const stale: string[] = [];
  for (const [file, text] of await bundles()) {
    if (check) {
      const current = await readFile(file, 'utf8').catch(() => '');
      if (current !== text) stale.push(path.relative(root, file));
    } else {
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, text);
      console.log(`wrote ${path.relative(root, file)} (${(text.length / 1024).toFixed(0)} KiB)`);
    }
  }
  if (!check) console.log(await writeCliBundle());
  if (stale.length) {
    console.error(`stale bundles: ${stale.join(', ')}: run "npm run build" and commit the result`);
    process.exit(1);
  }
}
