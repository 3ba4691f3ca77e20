import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { UsageError, messageOf } from '../errors.ts';
import { nodePgConnectionString, type DatabaseConnection } from './connection.ts';

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
 * Connects with node-postgres.
 * @throws UsageError for refused connections, failed authentication, unknown databases.
 */
export async function connect(conn: DatabaseConnection, applicationName = 'pg-backup'): Promise<pg.Client> {
  const client = new pg.Client({
    ...parseIntoClientConfig(nodePgConnectionString(conn)),
    // pg's URL parser decodes the path with decodeURI, which leaves %24, %2F, %3B… encoded:
    // the name decoded in full (libpq's reading, as pg_dump gets it) is passed apart.
    database: conn.database,
    application_name: applicationName,
    connectionTimeoutMillis: 15_000,
  });
  client.on('error', () => undefined); // errors surface on the next query
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectionError(err, conn);
  }
  return client;
}

/** Maps a connection failure onto a one-line {@link UsageError}. */
function connectionError(err: unknown, conn: DatabaseConnection): Error {
  const e = err as { code?: string; message?: string };
  const where = conn.display;
  switch (e.code) {
    case 'ECONNREFUSED':
      return new UsageError(`cannot connect to ${where}: connection refused; is PostgreSQL running there and is the host/port right?`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new UsageError(`cannot connect to ${where}: unknown host; check the host in the database URL`);
    case '28P01':
    case '28000':
      return new UsageError(`cannot connect to ${where}: authentication failed; check the user and password`);
    case '3D000':
      return new UsageError(`cannot connect to ${where}: database ${JSON.stringify(conn.database)} does not exist`);
    default:
      return new UsageError(`cannot connect to ${where}: ${messageOf(err)}`);
  }
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
 * Counts the rows of each table with `count(*)` in the client's current transaction (so, when it
 * runs inside the transaction that exported the dump's snapshot, in the dump's snapshot).
 * Identifiers are quoted by node-postgres' `escapeIdentifier`; names never reach a shell.
 *
 * Inside a transaction block (a dump's), the counts run without parallel workers or JIT
 * (`set_config(…, is_local => true)`, so only until that transaction ends): they run beside
 * pg_dump and compete with it for the same cores, and one backend scanning alone costs about
 * half the CPU of a leader with two workers (docs/performance.md). Outside a transaction (a
 * drill's counts on the restored database), the setting lasts one statement and the server's
 * defaults apply.
 */
export async function countRows(client: pg.Client, tables: { schema: string; table: string }[]): Promise<TableRowCount[]> {
  await client.query("SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)");
  const out: TableRowCount[] = [];
  for (const t of tables) {
    const sql = `SELECT count(*)::text AS n FROM ${client.escapeIdentifier(t.schema)}.${client.escapeIdentifier(t.table)}`;
    const { rows } = await client.query<{ n: string }>(sql);
    out.push({ schema: t.schema, table: t.table, rows: Number(rows[0]!.n) });
  }
  return out;
}
