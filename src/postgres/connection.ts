import { UsageError, registerSecret } from '../errors.ts';

/**
 * A PostgreSQL connection as the tool uses it: the libpq URL without its password (safe to put
 * on a command line and in logs) and the password apart (passed to child processes in
 * `PGPASSWORD`, never on argv).
 */
export interface DatabaseConnection {
  /** `postgresql://user@host:port/db?params` with the password removed. */
  url: string;
  password: string | undefined;
  /** The database name (decoded). */
  database: string;
  /** `user@host:port/db`, for messages. */
  display: string;
}

/**
 * Resolves the connection from, in order: the given URL, `DATABASE_URL`, the libpq variables
 * (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`). Registers the password as a secret.
 * Accepts libpq connection URIs (PostgreSQL docs, "Connection URIs", section 34.1.1).
 * @throws UsageError when nothing is given or the URL is malformed.
 */
export function resolveConnection(url?: string, env: NodeJS.ProcessEnv = process.env): DatabaseConnection {
  const given = url?.trim() || env.DATABASE_URL?.trim();
  if (given) return parseDatabaseUrl(given, env.PGPASSWORD);
  if (env.PGDATABASE || env.PGHOST) {
    const host = env.PGHOST ?? '';
    const db = encodeURIComponent(env.PGDATABASE ?? env.PGUSER ?? 'postgres');
    const query = new URLSearchParams();
    let authority = '';
    if (host.startsWith('/')) {
      // A Unix-socket directory goes in the query, with the user (a URL cannot carry user@ without a host).
      query.set('host', host);
      if (env.PGUSER) query.set('user', env.PGUSER);
    } else {
      const user = env.PGUSER ? `${encodeURIComponent(env.PGUSER)}@` : '';
      authority = `${user}${host.includes(':') ? `[${host}]` : host || 'localhost'}${env.PGPORT ? `:${env.PGPORT}` : ''}`;
    }
    if (host.startsWith('/') && env.PGPORT) query.set('port', env.PGPORT);
    const qs = query.toString();
    return parseDatabaseUrl(`postgresql://${authority}/${db}${qs ? `?${qs}` : ''}`, env.PGPASSWORD);
  }
  throw new UsageError('no database given: pass --database-url postgresql://USER@HOST:PORT/DB, or set DATABASE_URL or the PG* variables');
}

/**
 * Parses a `postgres://` / `postgresql://` URL.
 * @throws UsageError naming what is wrong.
 */
export function parseDatabaseUrl(raw: string, fallbackPassword?: string): DatabaseConnection {
  if (!/^postgres(ql)?:\/\//i.test(raw)) {
    throw new UsageError(`database URL must start with postgresql:// (got ${JSON.stringify(raw.replace(/:[^@/]*@/, ':***@').slice(0, 60))})`);
  }
  let u: URL;
  let password: string | undefined;
  let database: string;
  let user: string;
  const malformed = 'malformed database URL: expected postgresql://USER:PASSWORD@HOST:PORT/DB (percent-encode special characters in the password)';
  try {
    u = new URL(raw);
    // libpq also takes the password as a query parameter: move it out of the URL too.
    const queryPassword = u.searchParams.get('password') ?? undefined;
    u.searchParams.delete('password');
    password = u.password ? decodeURIComponent(u.password) : queryPassword ?? (fallbackPassword || undefined);
    if (queryPassword) registerSecret(queryPassword);
    database = decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username) || 'postgres';
    user = decodeURIComponent(u.username) || u.searchParams.get('user') || '';
  } catch {
    throw new UsageError(malformed);
  }
  registerSecret(password);
  u.password = '';
  if (u.pathname === '' || u.pathname === '/') u.pathname = `/${encodeURIComponent(database)}`;
  const host = u.hostname || u.searchParams.get('host') || 'localhost';
  const display = `${user ? `${user}@` : ''}${host}${u.port ? `:${u.port}` : ''}/${database}`;
  return { url: u.href.replace(/^postgres:/i, 'postgresql:'), password, database, display };
}

/** The URL of another database on the same server (same user, host, port and params). */
export function withDatabase(conn: DatabaseConnection, database: string): DatabaseConnection {
  const u = new URL(conn.url);
  u.pathname = `/${encodeURIComponent(database)}`;
  const display = conn.display.replace(/\/[^/]*$/, `/${database}`);
  return { url: u.href, password: conn.password, database, display };
}

/**
 * Environment for libpq programs (pg_dump, pg_restore, psql): the password in `PGPASSWORD` so it
 * never appears on a command line (PostgreSQL docs, "Environment Variables", section 34.15).
 */
export function libpqEnv(conn: DatabaseConnection): Record<string, string> {
  const env: Record<string, string> = { PGCONNECT_TIMEOUT: process.env.PGCONNECT_TIMEOUT ?? '15' };
  if (conn.password !== undefined) env.PGPASSWORD = conn.password;
  return env;
}

/**
 * The connection string for node-postgres. `uselibpqcompat=true` makes `sslmode` mean what it
 * means to libpq (and so to pg_dump), rather than node-postgres' stricter reading.
 */
export function nodePgConnectionString(conn: DatabaseConnection, env: NodeJS.ProcessEnv = process.env): string {
  const u = new URL(conn.url);
  if (conn.password !== undefined) u.password = encodeURIComponent(conn.password);
  // node-postgres reads PGSSLMODE itself but treats prefer/require as "always, verified": pass
  // it on in the URL with libpq semantics instead, as pg_dump (libpq) will read it.
  if (!u.searchParams.has('sslmode') && env.PGSSLMODE) u.searchParams.set('sslmode', env.PGSSLMODE);
  if (u.searchParams.has('sslmode') && !u.searchParams.has('uselibpqcompat')) u.searchParams.set('uselibpqcompat', 'true');
  return u.href;
}
