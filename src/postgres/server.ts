import net from 'node:net';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { UsageError, messageOf } from '../errors.ts';
import { nodePgConnectionString, type DatabaseConnection } from './connection.ts';
import { tlsRefusal } from './diagnose.ts';

/** Facts about a PostgreSQL server and database, read at the start of a dump. */
export interface ServerFacts {
  /** `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)` trimmed to `15.18`. */
  version: string;
  /** `server_version_num`, e.g. 150018. */
  versionNum: number;
  /** Major version: `floor(server_version_num / 10000)`, e.g. 15 (9 for 9.x). */
  major: number;
  /** `pg_database_size(current_database())` in bytes. */
  databaseSizeBytes: number;
}

/** A table and the number of rows it held in the dump's snapshot. */
export interface TableRowCount {
  schema: string;
  table: string;
  rows: number;
}

/**
 * Connects with node-postgres (15 s connect timeout).
 * @throws UsageError naming the real cause (see {@link connectionError}): an unknown host, a
 * refused connection, no answer, failed authentication, a missing password, an unknown database,
 * SSL the server lacks, an unreadable SSL file.
 */
export async function connect(conn: DatabaseConnection, applicationName = 'pg-backup'): Promise<pg.Client> {
  let client: pg.Client;
  try {
    client = new pg.Client({
      ...withHostaddr(parseIntoClientConfig(nodePgConnectionString(conn))),
      // pg's URL parser decodes the path with decodeURI, which leaves %24, %2F, %3B… encoded:
      // the name decoded in full (libpq's reading, as pg_dump gets it) is passed apart.
      database: conn.database,
      application_name: applicationName,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    });
  } catch (err) {
    // node-postgres reads sslcert/sslkey/sslrootcert files and checks sslmode while parsing.
    throw connectionError(err, conn);
  }
  client.on('error', () => undefined); // errors surface on the next query
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectionError(err, conn);
  }
  return client;
}

/**
 * libpq's `hostaddr` for node-postgres, which does not know it: connect to `hostaddr`, and keep
 * `host` as the TLS server name (certificate check and SNI), as libpq does (PostgreSQL docs,
 * "Parameter Key Words"). An --ssh-tunnel's URLs carry `hostaddr=127.0.0.1` (ssh-tunnel.ts).
 */
function withHostaddr<C extends { host?: string | null; ssl?: unknown }>(config: C): C {
  const hostaddr = (config as { hostaddr?: string }).hostaddr;
  if (!hostaddr) return config;
  const ssl = config.ssl && typeof config.ssl === 'object' && config.host && net.isIP(config.host) === 0 ? { ...(config.ssl as object), servername: config.host } : config.ssl;
  return { ...config, host: hostaddr, ssl };
}

/** How long {@link connect} waits for the server to answer, in ms. */
export const CONNECT_TIMEOUT_MS = 15_000;

/**
 * Maps a connection failure onto a one-line {@link UsageError} that names the cause: DNS
 * (`ENOTFOUND`, `EAI_AGAIN`), `ECONNREFUSED`, unreachable networks, no answer within the
 * timeout, SQLSTATE 28P01 / 28000 (authentication, pg_hba.conf; the server's own words are
 * kept, they never hold the password), 3D000 (unknown database), 57P03 (starting up), 53300
 * (too many connections), a password the server asked for and none given, SSL refused by the
 * server, an SSL file that cannot be read. Anything else keeps the driver's message, redacted.
 * Sources: PostgreSQL docs, Appendix A "PostgreSQL Error Codes"; Node.js docs, "Common system errors".
 */
export function connectionError(err: unknown, conn: DatabaseConnection): UsageError {
  const e = err as { code?: string; message?: string; path?: string };
  const where = `cannot connect to ${conn.display}`;
  const message = messageOf(err);
  const sslmode = new URL(conn.url).searchParams.get('sslmode') ?? process.env.PGSSLMODE;
  const tls = tlsRefusal(message, sslmode); // a server that accepts TLS only (diagnose.ts)
  if (tls) return new UsageError(`${where}: ${tls}`);
  switch (e.code) {
    case 'ECONNREFUSED':
      return new UsageError(`${where}: connection refused; is PostgreSQL running there and is the host/port right?`);
    case 'ENOTFOUND':
      return new UsageError(`${where}: unknown host (DNS has no such name); check the host in the database URL`);
    case 'EAI_AGAIN':
      return new UsageError(`${where}: the host name could not be resolved (DNS did not answer); check the host and this machine's DNS`);
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new UsageError(`${where}: no route to the host (${e.code}); check the host and the network between this machine and the server`);
    case 'ETIMEDOUT':
      return new UsageError(`${where}: the connection timed out (no answer from the host); check the host, the port and firewalls`);
    case 'ECONNRESET':
      return new UsageError(`${where}: the server closed the connection at once (${e.code}); is the port a PostgreSQL server?`);
    case 'ENOENT':
    case 'EACCES':
      if (e.path) return new UsageError(`${where}: cannot read ${e.path} (${e.code}): check sslcert, sslkey and sslrootcert in the database URL`);
      break;
    case '28P01':
      return new UsageError(`${where}: authentication failed (${message}); check the user and password`);
    case '28000':
      return new UsageError(`${where}: the server refused the connection (${message}); check the user, and pg_hba.conf on the server for this client address`);
    case '3D000':
      return new UsageError(`${where}: database ${JSON.stringify(conn.database)} does not exist; create it first or check the database name`);
    case '57P03':
      return new UsageError(`${where}: the server is starting up or shutting down (${message}); try again in a moment`);
    case '53300':
      return new UsageError(`${where}: too many connections (${message}); free a connection slot or raise max_connections`);
  }
  if (/timeout expired|connection timeout/i.test(message)) {
    return new UsageError(`${where}: no answer within ${CONNECT_TIMEOUT_MS / 1000} s; is the host/port a reachable PostgreSQL server (a firewall that drops packets)?`);
  }
  if (/client password must be a string/i.test(message)) {
    return new UsageError(`${where}: the server asks for a password and none was given; put it in the URL (postgresql://USER:PASSWORD@…) or set PGPASSWORD`);
  }
  if (/does not support SSL/i.test(message)) {
    return new UsageError(`${where}: the server does not support SSL and sslmode=${sslmode ?? 'require'} asks for it; enable ssl on the server, or use sslmode=prefer (or disable)`);
  }
  if (/verify-ca requires specifying a CA/i.test(message)) {
    return new UsageError(`${where}: sslmode=verify-ca needs sslrootcert=FILE (the CA that signed the server's certificate); add it to the database URL`);
  }
  if (/self[- ]signed certificate|unable to verify|certificate/i.test(message)) {
    return new UsageError(`${where}: the server's SSL certificate was not accepted (${message}); give sslrootcert=FILE, or use sslmode=require to encrypt without verifying`);
  }
  if (/Connection terminated unexpectedly/i.test(message)) {
    return new UsageError(`${where}: the server closed the connection during start-up; is the port a PostgreSQL server, and does its log say why?`);
  }
  return new UsageError(`${where}: ${message}`);
}

/** Reads the server version and the database size. */
export async function serverFacts(client: pg.Client): Promise<ServerFacts> {
  const { rows } = await client.query<{ v: string; n: string; size: string }>(
    `SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n,
            pg_database_size(current_database())::text AS size`,
  );
  const row = rows[0]!;
  const versionNum = Number(row.n);
  return {
    version: row.v.split(' ')[0]!,
    versionNum,
    major: Math.floor(versionNum / 10_000),
    databaseSizeBytes: Number(row.size),
  };
}

/**
 * Lists the user tables whose data pg_dump dumps: ordinary tables (`relkind = 'r'`, so
 * partitions but not their partitioned parents) outside the system schemas and not owned by
 * an extension. Sorted by schema, then table.
 */
export async function listUserTables(client: pg.Client): Promise<{ schema: string; table: string }[]> {
  const { rows } = await client.query<{ schema: string; table: string }>(
    `SELECT n.nspname AS schema, c.relname AS table
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1, 2`,
  );
  return rows;
}

/**
 * SQL turning parallel workers and JIT off until the current transaction ends
 * (`set_config(…, is_local => true)`; outside a transaction block it has no effect). The dump runs
 * it before its row counts: they run beside pg_dump and compete with it for the same cores, and
 * one backend scanning alone costs about half the CPU of a leader with two workers
 * (docs/performance.md).
 */
export const COUNT_SETTINGS_SQL = "SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)";

/**
 * Counts the rows of each table with `count(*)` in the client's current transaction (so, when it
 * runs inside the transaction that exported the dump's snapshot, in the dump's snapshot), up to
 * 100 tables per statement, with the session's settings as they are: the dump turns parallel workers
 * and JIT off for its transaction first ({@link COUNT_SETTINGS_SQL}); a drill's counts on the
 * restored database use the server's defaults; `restore --server`'s check connection sets its own.
 * Identifiers are quoted by node-postgres' `escapeIdentifier`; names never reach a shell.
 */
export async function countRows(client: pg.Client, tables: { schema: string; table: string }[]): Promise<TableRowCount[]> {
  const out: TableRowCount[] = [];
  // Up to COUNT_BATCH tables per statement (one `count(*)` each, tagged with its place): a
  // database of thousands of small tables costs a round trip per batch, not per table.
  for (let start = 0; start < tables.length; start += COUNT_BATCH) {
    const batch = tables.slice(start, start + COUNT_BATCH);
    const sql = batch.map((t, i) => `SELECT ${i} AS i, count(*)::text AS n FROM ${client.escapeIdentifier(t.schema)}.${client.escapeIdentifier(t.table)}`).join(' UNION ALL ');
    const { rows } = await client.query<{ i: number; n: string }>(sql);
    const counted = new Map(rows.map((r) => [Number(r.i), Number(r.n)]));
    batch.forEach((t, i) => {
      const n = counted.get(i);
      if (n === undefined) throw new Error(`count(*) of ${t.schema}.${t.table} returned no row`);
      out.push({ schema: t.schema, table: t.table, rows: n });
    });
  }
  return out;
}

/** Tables counted per statement by {@link countRows}. */
const COUNT_BATCH = 100;
