import { access, readdir, realpath } from 'node:fs/promises';
import { constants } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../errors.ts';

/** The PostgreSQL client and server programs the tool runs. */
export type PgProgram = 'pg_dump' | 'pg_dumpall' | 'pg_restore' | 'psql' | 'initdb' | 'pg_ctl' | 'postgres';

/** A PostgreSQL program found on this machine. */
export interface PgBinary {
  program: PgProgram;
  /** Absolute path. */
  path: string;
  /** Full version, e.g. `15.18`. */
  version: string;
  /** Major version, e.g. 15 (for 9.6 and older: 9). */
  major: number;
}

/**
 * Parses the output of `pg_dump --version` (and friends), e.g.
 * `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → `{ version: '15.18', major: 15 }`.
 * Returns undefined when no version is found.
 */
export function parsePgVersion(output: string): { version: string; major: number } | undefined {
  const m = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(output);
  if (!m) return undefined;
  return { version: m[2] === undefined ? m[1]! : `${m[1]}.${m[2]}`, major: Number(m[1]) };
}

/**
 * Directories searched for PostgreSQL programs: only `PG_BIN_DIR` (colon-separated) when set;
 * otherwise, most specific first, Debian/Ubuntu
 * `/usr/lib/postgresql/<N>/bin`, RHEL `/usr/pgsql-<N>/bin`, Homebrew `postgresql@<N>`, then `PATH`.
 */
export async function candidateDirs(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  // An explicit PG_BIN_DIR pins the programs (seed 003 pins pg_dump to the server's major): search nowhere else.
  if (env.PG_BIN_DIR) return env.PG_BIN_DIR.split(path.delimiter).filter(Boolean);
  const dirs: string[] = [];
  const globbed = async (parent: string, match: RegExp, suffix: string) => {
    try {
      for (const name of await readdir(parent)) if (match.test(name)) dirs.push(path.join(parent, name, suffix));
    } catch {
      /* not there */
    }
  };
  await globbed('/usr/lib/postgresql', /^\d+$/, 'bin');
  await globbed('/usr', /^pgsql-\d+$/, 'bin');
  await globbed('/opt/homebrew/opt', /^postgresql@\d+$/, 'bin');
  await globbed('/usr/local/opt', /^postgresql@\d+$/, 'bin');
  dirs.push(...(env.PATH ?? '').split(path.delimiter).filter(Boolean));
  return dirs;
}

const cache = new Map<string, Promise<PgBinary[]>>();

/** Dispatchers that run one of the real programs found elsewhere (Debian's postgresql-common). */
const WRAPPERS = new Set(['/usr/share/postgresql-common/pg_wrapper']);

/** Forgets the programs found so far (after installing a client). */
export function clearBinaryCache(): void {
  cache.clear();
}

/** Every copy of `program` on this machine with its version, one per real file, in search order. */
export function findAll(program: PgProgram, env: NodeJS.ProcessEnv = process.env): Promise<PgBinary[]> {
  const cacheKey = `${program}\0${env.PG_BIN_DIR ?? ''}\0${env.PATH ?? ''}`;
  let found = cache.get(cacheKey);
  if (!found) {
    found = (async () => {
      const seen = new Set<string>();
      const files: string[] = [];
      const realpathOf = new Map<string, string>();
      for (const dir of await candidateDirs(env)) {
        const file = path.join(dir, program);
        try {
          await access(file, constants.X_OK);
        } catch {
          continue;
        }
        const real = await realpath(file).catch(() => file);
        if (seen.has(real)) continue;
        seen.add(real);
        realpathOf.set(file, real);
        files.push(file);
      }
      // Debian's pg_wrapper (/usr/bin/pg_dump → /usr/share/postgresql-common/pg_wrapper, a Perl
      // script) only dispatches to a /usr/lib/postgresql/<major>/bin program, which the search
      // has found itself: asking it for its version costs a Perl start-up (~20–150 ms) for
      // nothing. It is kept when it is all there is (PG_BIN_DIR=/usr/bin).
      const real = new Set(files.filter((f) => !WRAPPERS.has(realpathOf.get(f)!)));
      if (real.size) files.splice(0, files.length, ...files.filter((f) => real.has(f)));
      // The --version checks run at once (a dump waits for them before pg_dump starts); the
      // result keeps the search order.
      const versions = await Promise.all(files.map((file) => execa(file, ['--version'], { reject: false, timeout: 10_000 }).then((r) => parsePgVersion(r.stdout))));
      return files.flatMap((file, i) => (versions[i] ? [{ program, path: file, ...versions[i] }] : []));
    })();
    cache.set(cacheKey, found);
  }
  return found;
}

/**
 * Starts the search for `programs` (each copy's `--version` run, ~30–40 ms a program) without
 * waiting: a later {@link findAll} or {@link findPgBinary} finds the result cached. For commands
 * that know what they will run before they know which version they need (verify and drill read
 * the manifest first). Failures are left for that later call to report.
 */
export function prefetchPrograms(...programs: PgProgram[]): void {
  for (const program of programs) findAll(program).catch(() => undefined);
}

/**
 * Finds `program` of major version `minMajor` or newer, preferring the closest major: pg_dump
 * must be at least the server's major (PostgreSQL docs, pg_dump: "cannot dump from PostgreSQL
 * servers newer than its own major version"), while a much newer pg_dump writes archive formats
 * that older pg_restore cannot read (pg_dump 18 writes archive format 1.16).
 * @throws UsageError naming the versions found, the version needed and how to install it.
 */
export async function findPgBinary(program: PgProgram, minMajor: number, why: string): Promise<PgBinary> {
  const all = await findAll(program);
  const fit = all.filter((b) => b.major >= minMajor).sort((a, b) => a.major - b.major);
  if (fit[0]) return fit[0];
  const have = all.length ? `found ${all.map((b) => `${program} ${b.version} (${b.path})`).join(', ')}` : `no ${program} found`;
  const pkg = ['initdb', 'pg_ctl', 'postgres'].includes(program) ? `postgresql-${minMajor}` : `postgresql-client-${minMajor}`;
  throw new UsageError(
    `${why} needs ${program} ${minMajor} or newer but ${have}: install ${pkg} (PostgreSQL apt repository, apt.postgresql.org) or set PG_BIN_DIR to its bin directory`,
  );
}
