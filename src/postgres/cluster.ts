import { chown, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { CheckFailedError, UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary, type PgBinary } from './binaries.ts';
import { serverInitdb } from './server-binaries.ts';
import { parseDatabaseUrl, withDatabase, type DatabaseConnection } from './connection.ts';
import { connect } from './server.ts';

/** A PostgreSQL cluster the tool started for a drill or a demo; removed by {@link ThrowawayCluster.stop}. */
export interface ThrowawayCluster {
  /** Connection to the `postgres` database as superuser `postgres` (trust auth, loopback only). */
  connection: DatabaseConnection;
  port: number;
  /** The cluster's directory (data, socket, log); deleted on stop. */
  dir: string;
  /** The server's major version. */
  major: number;
  version: string;
  /** Stops the server (immediate mode) and deletes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** Options for {@link startThrowawayCluster}. */
export interface ClusterOptions {
  /** The oldest server major version acceptable (a restore target must be the source's major or newer). */
  minMajor: number;
  /**
   * Run exactly this server major instead of the closest installed one at least `minMajor`: an
   * installed server of that major, else the binaries fetched into the download cache
   * (server-binaries.ts). Must not be below `minMajor`.
   */
  major?: number;
  /** Parent directory for the cluster's files. Default: `PG_BACKUP_WORK_DIR`, else the OS temp dir. */
  workDir?: string;
  logger?: Logger;
}

/** The parent directory for scratch files and throwaway clusters: `dir`, else `PG_BACKUP_WORK_DIR`, else the OS temp dir. */
export function workDirOf(dir?: string): string {
  return dir || process.env.PG_BACKUP_WORK_DIR || os.tmpdir();
}

/**
 * Creates database `name` in a throwaway cluster (from template0, UTF8) and returns its
 * connection. When `roles` are given, the missing ones are created NOLOGIN too, so a plain
 * dump's `OWNER TO` and `GRANT` statements replay.
 */
export async function createThrowawayDatabase(cluster: ThrowawayCluster, name: string, roles?: string[]): Promise<DatabaseConnection> {
  const admin = await connect(cluster.connection, 'pg-backup');
  try {
    await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(name)} TEMPLATE template0 ENCODING 'UTF8'`);
    if (roles?.length) {
      const { rows } = await admin.query<{ rolname: string }>('SELECT rolname FROM pg_roles');
      const existing = new Set(rows.map((r) => r.rolname));
      for (const role of roles) if (!existing.has(role)) await admin.query(`CREATE ROLE ${admin.escapeIdentifier(role)} NOLOGIN`);
    }
  } finally {
    await admin.end().catch(() => undefined);
  }
  return withDatabase(cluster.connection, name);
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * The OS user that runs `initdb` and `postgres`: the current user, or, when running as root
 * (which `initdb` refuses), `PG_BACKUP_CLUSTER_USER` or `postgres`.
 * @throws UsageError when running as root and that user does not exist.
 */
async function clusterUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const name = process.env.PG_BACKUP_CLUSTER_USER || 'postgres';
  const uid = await execa('id', ['-u', name], { reject: false });
  const gid = await execa('id', ['-g', name], { reject: false });
  if (uid.exitCode !== 0 || gid.exitCode !== 0) {
    throw new UsageError(`initdb refuses to run as root and user ${JSON.stringify(name)} does not exist: create it (useradd --system postgres) or set PG_BACKUP_CLUSTER_USER`);
  }
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * Starts a throwaway PostgreSQL cluster: `initdb` into a fresh temporary directory, then
 * `pg_ctl start` listening on 127.0.0.1 on a free port (no Unix socket outside its directory),
 * with durability turned off (`fsync=off`), since the data is thrown away.
 * @throws UsageError when no suitable server binaries are installed.
 */
export async function startThrowawayCluster(options: ClusterOptions): Promise<ThrowawayCluster> {
  if (options.major !== undefined && options.major < options.minMajor) {
    throw new CheckFailedError(`PostgreSQL ${options.major} is older than ${options.minMajor}: a dump restores only into its source's major or a newer one`);
  }
  const initdb: PgBinary = options.major !== undefined ? await serverInitdb(options.major, options.logger) : await findPgBinary('initdb', options.minMajor, 'a throwaway PostgreSQL cluster');
  const bin = path.dirname(initdb.path);
  const pgCtl = path.join(bin, 'pg_ctl');
  const parent = workDirOf(options.workDir);
  const dir = await mkdtemp(path.join(parent, 'pg-backup-cluster-'));
  const user = await clusterUser();
  const run = { ...(user ?? {}), cwd: dir, env: { LC_ALL: 'C.UTF-8', PGTZ: 'UTC' } } as const;
  let started = false;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (started) await execa(pgCtl, ['stop', '-D', path.join(dir, 'data'), '-m', 'immediate', '-w', '-t', '30'], { ...run, reject: false });
    await rm(dir, { recursive: true, force: true });
  };
  try {
    if (user) await chown(dir, user.uid, user.gid);
    await execa(initdb.path, ['-D', path.join(dir, 'data'), '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], run);
    const port = await freePort();
    const serverOptions = [
      '-c listen_addresses=127.0.0.1',
      `-p ${port}`,
      `-k ${dir}`,
      '-c fsync=off',
      '-c full_page_writes=off',
      '-c synchronous_commit=off',
      '-c max_wal_size=1GB',
    ].join(' ');
    options.logger?.info(`starting throwaway PostgreSQL ${initdb.version} on 127.0.0.1:${port}`);
    started = true;
    await execa(pgCtl, ['start', '-D', path.join(dir, 'data'), '-l', path.join(dir, 'server.log'), '-w', '-t', '60', '-o', serverOptions], run);
    const connection = parseDatabaseUrl(`postgresql://postgres@127.0.0.1:${port}/postgres`);
    return { connection, port, dir, major: initdb.major, version: initdb.version, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
