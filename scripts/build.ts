// Bundles each action into actions/<name>/dist/index.js (one ESM file, committed).
// `node scripts/build.ts --check` rebuilds in memory and exits 1 if a committed bundle is stale.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Action name → entry file. */
export const ACTIONS = {
  dump: 'src/github/dump-action.ts',
  verify: 'src/github/verify-action.ts',
  drill: 'src/github/drill-action.ts',
  prune: 'src/github/prune-action.ts',
} as const;

/** Builds every bundle in memory: output path → contents. */
export async function bundles(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [name, entry] of Object.entries(ACTIONS)) {
    const result = await build({
      entryPoints: [path.join(root, entry)],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node24',
      write: false,
      legalComments: 'none',
      minify: true,
      keepNames: true,
      logLevel: 'warning',
      // Some CommonJS dependencies call require(); give the ESM bundle one.
      banner: { js: "import { createRequire as __pgbCreateRequire } from 'node:module';\nconst require = __pgbCreateRequire(import.meta.url);" },
    });
    out.set(path.join(root, 'actions', name, 'dist', 'index.js'), result.outputFiles[0]!.text);
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
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
  if (stale.length) {
    console.error(`stale bundles: ${stale.join(', ')}: run "npm run build" and commit the result`);
    process.exit(1);
  }
}
