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

/** `sslmode` values libpq accepts (PostgreSQL docs, "Parameter Key Words", section 32.1.2). */
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

/**
 * libpq connection keywords whose values are secrets: never shown, registered with
 * {@link registerSecret} before any message is built.
 */
const SECRET_KEYWORDS = new Set(['password', 'sslpassword', 'oauth_client_secret', 'scram_client_key', 'scram_server_key']);

/**
 * Every keyword libpq 18 accepts in a connection string (PostgreSQL docs, "Parameter Key Words",
 * section 32.1.2). A word outside this list in a `key=value` string is refused without being
 * shown: it is usually the tail of an unquoted value with a space, such as a password.
 */
const LIBPQ_KEYWORDS = new Set([
  'host', 'hostaddr', 'port', 'dbname', 'user', 'password', 'passfile', 'require_auth', 'channel_binding',
  'connect_timeout', 'client_encoding', 'options', 'application_name', 'fallback_application_name',
  'keepalives', 'keepalives_idle', 'keepalives_interval', 'keepalives_count', 'tcp_user_timeout',
  'replication', 'gssencmode', 'sslmode', 'sslnegotiation', 'requiressl', 'sslcompression', 'sslcert',
  'sslkey', 'sslkeylogfile', 'sslpassword', 'sslcertmode', 'sslrootcert', 'sslcrl', 'sslcrldir', 'sslsni',
  'requirepeer', 'ssl_min_protocol_version', 'ssl_max_protocol_version', 'min_protocol_version',
  'max_protocol_version', 'krbsrvname', 'gsslib', 'gssdelegation', 'service', 'target_session_attrs',
  'load_balance_hosts', 'scram_client_key', 'scram_server_key', 'oauth_issuer', 'oauth_client_id',
  'oauth_client_secret', 'oauth_scope',
]);

const FORMS = 'give a postgresql://USER@HOST:PORT/DB URL (a password goes after "USER:", with @ / : ? # % percent-encoded) or a libpq string such as "host=H port=5432 dbname=DB user=U" (quote values with spaces in \'…\')';
const NOT_SHOWN = '(the string is not shown: it may hold a password)';

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The secrets a connection string may hold, found without parsing it fully, so they can be
 * masked even when the string is malformed: the password of a URL (both the part up to the
 * first `@` and up to the last, since an unencoded `@` or `/` in a password makes that
 * ambiguous), `password=` / `sslpassword=`… query parameters, and the values of secret keywords
 * in a libpq `key=value` string (quoted or not). Each raw and percent-decoded.
 */
export function connectionSecrets(raw: string): string[] {
  const found = new Set<string>();
  const add = (s: string | undefined) => {
    if (!s) return;
    found.add(s);
    found.add(safeDecode(s));
  };
  const url = /^[a-z][a-z0-9+.-]*:\/\/(.*)$/is.exec(raw.trim());
  if (url) {
    const rest = url[1]!;
    const colon = rest.indexOf(':');
    const firstAt = rest.indexOf('@');
    const lastAt = rest.lastIndexOf('@');
    if (colon !== -1 && firstAt > colon) {
      add(rest.slice(colon + 1, firstAt));
      add(rest.slice(colon + 1, lastAt));
    }
    for (const m of rest.matchAll(/[?&]([a-z_]+)=([^&#]*)/gi)) if (SECRET_KEYWORDS.has(m[1]!.toLowerCase())) add(m[2]);
  } else {
    for (const m of raw.matchAll(/([a-z_]+)\s*=\s*('((?:[^'\\]|\\.)*)'?|\S+)/gis)) {
      if (!SECRET_KEYWORDS.has(m[1]!.toLowerCase())) continue;
      add(m[2]);
      if (m[3] !== undefined) add(m[3].replace(/\\(.)/gs, '$1'));
    }
  }
  return [...found].filter((s) => s.length > 0);
}

/**
 * Resolves the connection from, in order: the given connection string, `DATABASE_URL`, the
 * libpq variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`).
 * Registers every password it sees as a secret first (also `PGPASSWORD` when the string has its
 * own). The string may be a libpq URI (PostgreSQL docs, "Connection URIs", section 32.1.1.2) or a
 * libpq keyword/value string (section 32.1.1.1).
 * @throws UsageError when nothing is given or the string is malformed; the message never holds
 * the string itself.
 */
export function resolveConnection(url?: string, env: NodeJS.ProcessEnv = process.env): DatabaseConnection {
  registerSecret(env.PGPASSWORD);
  if (env.PGSSLMODE && !(SSL_MODES as readonly string[]).includes(env.PGSSLMODE)) {
    throw new UsageError(`invalid PGSSLMODE ${JSON.stringify(env.PGSSLMODE.slice(0, 40))}: use one of ${SSL_MODES.join(', ')}`);
  }
  const given = url?.trim() || env.DATABASE_URL?.trim();
  if (given) return parseConnectionString(given, env.PGPASSWORD);
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
 * Parses a connection string in either libpq form: a `postgresql://` URI or a keyword/value
 * string (`host=db port=5432 user=app password='a b' dbname=orders`). Its secrets are registered
 * before anything else happens.
 * @throws UsageError naming what is wrong, never echoing the string.
 */
export function parseConnectionString(raw: string, fallbackPassword?: string): DatabaseConnection {
  for (const secret of connectionSecrets(raw)) registerSecret(secret);
  const text = raw.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return parseDatabaseUrl(text, fallbackPassword);
  if (/^[a-z_]+\s*=/i.test(text)) return fromKeywords(parseConninfo(text), fallbackPassword);
  throw new UsageError(`the database connection string is neither a postgresql:// URL nor a libpq key=value string ${NOT_SHOWN}: ${FORMS}`);
}

/**
 * Parses a libpq keyword/value connection string the way libpq's `conninfo_parse` does
 * (PostgreSQL docs, section 32.1.1.1): `keyword = value` pairs separated by whitespace, spaces
 * around `=` optional; a value is single-quoted to hold spaces, and `\'` / `\\` escape a quote
 * and a backslash (in quoted and unquoted values alike). Registers secret values as it goes.
 * @returns keyword → value (a repeated keyword: the last one wins, as in libpq).
 * @throws UsageError for a syntax error or an unknown keyword, without showing the string.
 */
export function parseConninfo(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const fail = (what: string) => new UsageError(`malformed libpq connection string: ${what} ${NOT_SHOWN}`);
  let i = 0;
  const n = text.length;
  const isSpace = (c: string | undefined) => c !== undefined && /\s/.test(c);
  while (i < n) {
    while (isSpace(text[i])) i++;
    if (i >= n) break;
    const start = i;
    while (i < n && !isSpace(text[i]) && text[i] !== '=') i++;
    const keyword = text.slice(start, i);
    while (isSpace(text[i])) i++;
    const known = LIBPQ_KEYWORDS.has(keyword.toLowerCase()) ? keyword.toLowerCase() : undefined;
    if (text[i] !== '=') throw fail(known ? `missing "=" after ${known}` : 'a word that is not "keyword=value" (quote a value that holds spaces: key=\'a b\')');
    if (!known) throw fail('a keyword libpq does not know (or the tail of an unquoted value: quote a value that holds spaces, key=\'a b\')');
    i++;
    while (isSpace(text[i])) i++;
    let value = '';
    if (text[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        const c = text[i]!;
        if (c === '\\' && i + 1 < n) {
          value += text[i + 1];
          i += 2;
        } else if (c === "'") {
          i++;
          closed = true;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) throw fail(`unterminated quoted value of ${known}`);
    } else {
      while (i < n && !isSpace(text[i])) {
        if (text[i] === '\\' && i + 1 < n) i++;
        value += text[i];
        i++;
      }
    }
    if (SECRET_KEYWORDS.has(known)) registerSecret(value);
    out.set(known, value);
  }
  if (out.size === 0) throw fail('no keyword=value pair');
  return out;
}

/** A connection from parsed libpq keywords, through the URL form (so both forms share one path). */
function fromKeywords(fields: Map<string, string>, fallbackPassword?: string): DatabaseConnection {
  const query = new URLSearchParams();
  const host = fields.get('host') ?? '';
  const simpleHost = host !== '' && !host.startsWith('/') && !host.includes(',') && !fields.has('hostaddr');
  const port = fields.get('port');
  const user = fields.get('user');
  let authority = '';
  if (simpleHost) {
    authority = `${user ? `${encodeURIComponent(user)}@` : ''}${host.includes(':') ? `[${host}]` : host}`;
    if (port !== undefined && port !== '') {
      if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) throw new UsageError(`invalid port ${JSON.stringify(port.slice(0, 20))} in the libpq connection string: use a number from 1 to 65535`);
      authority += `:${port}`;
    }
  }
  for (const [k, v] of fields) {
    if (k === 'password' || k === 'dbname') continue;
    if (simpleHost && (k === 'host' || k === 'port' || k === 'user')) continue;
    query.set(k, v);
  }
  const db = fields.get('dbname') || user || 'postgres';
  const qs = query.toString();
  let u: DatabaseConnection;
  try {
    u = parseDatabaseUrl(`postgresql://${authority}/${encodeURIComponent(db)}${qs ? `?${qs}` : ''}`, fields.get('password') ?? fallbackPassword);
  } catch (err) {
    if (err instanceof UsageError && err.message.startsWith('malformed database URL')) throw new UsageError(`malformed libpq connection string: the host is not valid ${NOT_SHOWN}; ${FORMS}`);
    throw err;
  }
  return u;
}

/**
 * Parses a `postgres://` / `postgresql://` URL. An `@` after the host (in the path, query or
 * fragment of a URL that has no user part) means a user or password with an unencoded `/`, `?`
 * or `#`: such a URL is refused rather than read with part of the password as host or database.
 * Invalid `sslmode` and `port` values are refused here, before any connection is tried.
 * @throws UsageError naming what is wrong, never showing the password.
 */
export function parseDatabaseUrl(raw: string, fallbackPassword?: string): DatabaseConnection {
  for (const secret of connectionSecrets(raw)) registerSecret(secret);
  if (!/^postgres(ql)?:\/\//i.test(raw)) {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(raw)?.[1];
    throw new UsageError(`database URL must start with postgresql://${scheme ? ` (got ${scheme}://)` : ''}: ${FORMS}`);
  }
  let u: URL;
  let password: string | undefined;
  let database: string;
  let user: string;
  let original: URL;
  const malformed = `malformed database URL ${NOT_SHOWN}: ${FORMS}`;
  try {
    u = new URL(raw);
    original = new URL(raw);
    // libpq also takes the password as a query parameter: move it out of the URL too.
    const queryPassword = u.searchParams.get('password') ?? undefined;
    u.searchParams.delete('password');
    password = u.password ? decodeURIComponent(u.password) : queryPassword ?? (fallbackPassword || undefined);
    user = decodeURIComponent(u.username) || u.searchParams.get('user') || '';
    database = decodeURIComponent(u.pathname.replace(/^\//, '')) || user || 'postgres';
  } catch {
    throw new UsageError(malformed);
  }
  registerSecret(password);
  const afterHost = `${u.pathname}${original.search}${u.hash}`;
  if (u.pathname.includes('@') || u.hash.includes('@') || (!u.username && !u.password && afterHost.includes('@'))) {
    throw new UsageError(`malformed database URL: an "@" after the host, so the user or password holds an unencoded "/", "?", "#" or "@" ${NOT_SHOWN}; percent-encode them in the password (/ → %2F, ? → %3F, # → %23, @ → %40)`);
  }
  const sslmode = u.searchParams.get('sslmode');
  if (sslmode !== null && !(SSL_MODES as readonly string[]).includes(sslmode)) {
    throw new UsageError(`invalid sslmode ${JSON.stringify(sslmode.slice(0, 40))} in the database URL: use one of ${SSL_MODES.join(', ')}`);
  }
  const queryPort = u.searchParams.get('port');
  if (queryPort !== null && queryPort !== '' && (!/^\d{1,5}(,\d{1,5})*$/.test(queryPort))) {
    throw new UsageError(`invalid port ${JSON.stringify(queryPort.slice(0, 20))} in the database URL: use a number from 1 to 65535`);
  }
  u.password = '';
  if (u.pathname === '' || u.pathname === '/') u.pathname = `/${encodeURIComponent(database)}`;
  const host = u.hostname || u.searchParams.get('host') || 'localhost';
  const port = u.port || (queryPort ?? '');
  const display = `${user ? `${user}@` : ''}${host}${port ? `:${port}` : ''}/${database}`;
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
