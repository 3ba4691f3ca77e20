import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import dns from 'node:dns/promises';
import net from 'node:net';
import type pg from 'pg';
import { UsageError, messageOf } from '../errors.ts';
import type { DatabaseConnection } from './connection.ts';

// Connection diagnosis before a dump starts: the walls users of managed PostgreSQL hit from CI
// runners, each turned into one line that names the fix (exit 2, nothing written).
//   - a host with only IPv6 addresses, from a machine without an IPv6 route (GitHub-hosted
//     runners have none; Supabase's direct hosts are IPv6-only);
//   - a transaction-mode pooler (Supabase 6543, Neon `-pooler` hosts, Azure's PgBouncer 6432, or
//     any pooler caught switching server connections by a session-state probe);
//   - TLS a platform requires (its hosts get sslmode=require when the URL names none;
//     sslmode=disable is refused; a server's "no encryption" refusal names sslmode=require).
// Nothing here sends a packet to a non-loopback address beyond what connecting would send
// anyway: the IPv6 route check is a UDP connect(), which only asks the kernel's routing table.

/** A managed PostgreSQL platform recognised by its host names. */
export interface Platform {
  /** `supabase`, `neon`, `azure`, `rds`. */
  id: 'supabase' | 'neon' | 'azure' | 'rds';
  /** The name users know, for messages. */
  name: string;
}

/**
 * The platform a host name belongs to, from the host name suffixes each platform documents:
 * Supabase `db.<ref>.supabase.co` and `*.pooler.supabase.com` (supabase.com/docs/guides/database/connecting-to-postgres),
 * Neon `*.neon.tech` (neon.com/docs/connect/connection-pooling), Azure Database for PostgreSQL
 * flexible server `*.postgres.database.azure.com`, Amazon RDS/Aurora `*.rds.amazonaws.com`.
 * Cloud SQL is reached by IP address (or its Auth Proxy on localhost): no host name to know it by.
 */
export function platformOf(host: string): Platform | undefined {
  const h = host.toLowerCase().replace(/\.$/, '');
  if (/(^|\.)supabase\.(co|com)$/.test(h)) return { id: 'supabase', name: 'Supabase' };
  if (/(^|\.)neon\.tech$/.test(h)) return { id: 'neon', name: 'Neon' };
  if (/\.postgres\.database\.azure\.com$/.test(h)) return { id: 'azure', name: 'Azure Database for PostgreSQL' };
  if (/\.rds\.amazonaws\.com(\.cn)?$/.test(h)) return { id: 'rds', name: 'Amazon RDS' };
  return undefined;
}

/** Where a connection goes: one TCP host and port, or nothing to diagnose (a Unix socket, several hosts). */
export interface Endpoint {
  host: string;
  port: number;
  /** `hostaddr` from the URL (an --ssh-tunnel's local end): connect there, the host name is for TLS only. */
  hostaddr?: string;
  /** The URL's `sslmode`, else `PGSSLMODE`. */
  sslmode?: string;
}

/**
 * The single TCP endpoint of a connection (libpq's reading: `host`/`port` from the URL's
 * authority, else from its query; default port 5432). `undefined` for a Unix socket directory
 * or a list of hosts: those are not diagnosed.
 */
export function endpointOf(conn: DatabaseConnection, env: NodeJS.ProcessEnv = process.env): Endpoint | undefined {
  const u = new URL(conn.url);
  const host = (u.hostname || u.searchParams.get('host') || '').replace(/^\[(.*)\]$/, '$1');
  if (!host || host.startsWith('/') || host.includes(',')) return undefined;
  const portText = u.port || u.searchParams.get('port') || '5432';
  if (!/^\d+$/.test(portText)) return undefined;
  return {
    host: decodeURIComponent(host),
    port: Number(portText),
    hostaddr: u.searchParams.get('hostaddr') ?? undefined,
    sslmode: u.searchParams.get('sslmode') ?? env.PGSSLMODE ?? undefined,
  };
}

/** The fix for a transaction-mode pooler recognised by host name and port, or undefined. */
export function knownTransactionPooler(endpoint: Endpoint): string | undefined {
  const platform = platformOf(endpoint.host);
  const h = endpoint.host.toLowerCase();
  if (platform?.id === 'supabase' && endpoint.port === 6543) {
    // Supavisor's (and the dedicated PgBouncer's) transaction mode listens on 6543, session mode on 5432.
    return `Supabase's port 6543 is its transaction-mode pooler: use port 5432 on the same host (${h.endsWith('.pooler.supabase.com') ? 'the session pooler' : 'the direct connection'}), user and password unchanged`;
  }
  if (platform?.id === 'neon' && /^[^.]+-pooler\./.test(h)) {
    // Neon's pooled hosts run PgBouncer in transaction mode; the direct host is the same without "-pooler".
    return `Neon's "-pooler" host is PgBouncer in transaction mode: use the direct host ${h.replace(/^([^.]+)-pooler\./, '$1.')} (Connect → Connection pooling off)`;
  }
  if (platform?.id === 'azure' && endpoint.port === 6432) {
    return `Azure's built-in PgBouncer listens on port 6432 (transaction mode by default): use port 5432 on the same host`;
  }
  return undefined;
}

/**
 * A platform's TLS rule applied to a connection: for a host of a known platform (all of them
 * accept TLS, Neon and Azure refuse anything else, RDS 15+ too by default) with no `sslmode` in
 * the URL nor `PGSSLMODE`, `sslmode=require` is added — what libpq's default (`prefer`) ends in
 * with these servers anyway, said explicitly so node-postgres (which does no TLS without it)
 * and pg_dump agree. Neon also needs it for SNI, by which it routes to the endpoint.
 * @returns the connection, with `sslmode=require` added where that rule applies.
 * @throws UsageError for `sslmode=disable` on such a host: the password and every row would
 * cross the internet in clear, and Neon/Azure/RDS refuse it.
 */
export function withPlatformTls(conn: DatabaseConnection, env: NodeJS.ProcessEnv = process.env): DatabaseConnection {
  const endpoint = endpointOf(conn, env);
  const platform = endpoint && platformOf(endpoint.host);
  if (!endpoint || !platform) return conn;
  if (endpoint.sslmode === 'disable') {
    throw new UsageError(`cannot connect to ${conn.display}: ${platform.name} requires TLS and sslmode=disable turns it off; use sslmode=require (or verify-full with sslrootcert=<the platform's CA file>)`);
  }
  if (endpoint.sslmode !== undefined) return conn;
  const u = new URL(conn.url);
  u.searchParams.set('sslmode', 'require');
  return { ...conn, url: u.href };
}

/**
 * One line for a server that refused a connection made without TLS, or undefined when `message`
 * is not such a refusal. Recognises PostgreSQL's own pg_hba.conf refusals of an unencrypted
 * connection (`no pg_hba.conf entry for host …, no encryption`, `pg_hba.conf rejects connection
 * … no encryption`; also RDS with rds.force_ssl), Neon's `connection is insecure`, Azure's
 * `SSL connection is required`.
 */
export function tlsRefusal(message: string, sslmode: string | undefined): string | undefined {
  if (!/no encryption|connection is insecure|SSL connection is required|SSL off/i.test(message)) return undefined;
  const mode = sslmode ?? 'none';
  return `the server refused a connection without TLS (sslmode=${mode}: ${message}); it accepts TLS only: add sslmode=require to the database URL (or verify-full with sslrootcert=<CA file>)`;
}

/** The network look-ups {@link checkReachable} makes; injected in tests. */
export interface NetworkProbes {
  /** Every address of a host name (`dns.lookup(host, { all: true })`). */
  lookup(host: string): Promise<{ address: string; family: number }[]>;
  /**
   * Whether this machine has a route to an IPv6 address. Default: {@link hasRoute}.
   */
  ipv6Route(address: string): Promise<boolean>;
}

/**
 * Whether the kernel has a route to `address`, asked without sending anything: `connect()` on a
 * UDP socket only picks the route and the source address (no datagram is sent until a write),
 * and fails with ENETUNREACH (or EHOSTUNREACH/EADDRNOTAVAIL) when there is none. Checked here in
 * a network namespace of its own: with no IPv6 route connect() fails with ENETUNREACH; with a
 * default route it succeeds and `Udp6OutDatagrams` and the interface's tx counter stay unchanged.
 * @returns false for no route; true otherwise (including errors that say nothing about routes).
 */
export function hasRoute(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
    const done = (ok: boolean) => {
      socket.close();
      resolve(ok);
    };
    const routed = (err?: NodeJS.ErrnoException | null) => !err || !['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL'].includes(err.code ?? '');
    socket.once('error', (err: NodeJS.ErrnoException) => done(routed(err)));
    // Port 9 (discard): any port does, nothing is sent. connect() reports its error to the callback.
    socket.connect(9, address, (err?: NodeJS.ErrnoException | null) => done(routed(err)));
  });
}

/** The probes of this machine: the system resolver and the kernel's routing table. */
export const systemProbes: NetworkProbes = {
  lookup: (host) => dns.lookup(host, { all: true, verbatim: true }),
  ipv6Route: hasRoute,
};

/**
 * Checks, before connecting, that a host with only IPv6 addresses is reachable from here: when
 * every address the host resolves to is IPv6 and this machine has no route to any of them,
 * refuses in one line — naming Supabase's IPv4 session pooler for a Supabase direct host
 * (`db.<ref>.supabase.co` → `aws-0-<region>.pooler.supabase.com:5432`, user `postgres.<ref>`;
 * supabase.com/docs/guides/database/connecting-to-postgres). A host that does not resolve, an
 * IP literal of IPv4, a tunnel (`hostaddr`), a Unix socket: nothing to say here (the connection
 * reports its own error).
 * @throws UsageError naming the host, the cause and the fix.
 */
export async function checkReachable(conn: DatabaseConnection, probes: NetworkProbes = systemProbes): Promise<void> {
  const endpoint = endpointOf(conn);
  if (!endpoint || endpoint.hostaddr) return;
  let addresses: { address: string; family: number }[];
  if (net.isIP(endpoint.host)) addresses = [{ address: endpoint.host, family: net.isIPv6(endpoint.host) ? 6 : 4 }];
  else {
    try {
      addresses = await probes.lookup(endpoint.host);
    } catch {
      return; // the connection attempt reports DNS failures in its own words
    }
  }
  if (addresses.length === 0 || addresses.some((a) => a.family !== 6)) return;
  for (const a of addresses) if (await probes.ipv6Route(a.address)) return;
  const supabase = /^db\.([a-z0-9]+)\.supabase\.co$/i.exec(endpoint.host);
  const where = `cannot reach ${endpoint.host}: it has only IPv6 addresses (${addresses[0]!.address}${addresses.length > 1 ? ', …' : ''}) and this machine has no IPv6 route (GitHub-hosted runners have none)`;
  if (supabase) {
    const ref = supabase[1]!.toLowerCase();
    throw new UsageError(`${where}; use Supabase's IPv4 session pooler instead: host aws-0-<region>.pooler.supabase.com, port 5432, user postgres.${ref} (the project's Connect button → Session pooler gives the exact string)`);
  }
  const platform = platformOf(endpoint.host);
  throw new UsageError(`${where}; use an IPv4 address or endpoint of the database${platform ? ` (${platform.name}: its IPv4 or pooler connection string)` : ''}, a runner with IPv6, or --ssh-tunnel through a bastion that reaches it`);
}

/**
 * Refuses a connection that goes through a transaction-mode pooler known by host name and port
 * ({@link knownTransactionPooler}): pg_dump needs one server session from start to end (its
 * `SET`s, its snapshot, the snapshot our session exports).
 * @throws UsageError naming the pooler and the fix.
 */
export function checkKnownPooler(conn: DatabaseConnection): void {
  const endpoint = endpointOf(conn);
  const fix = endpoint && knownTransactionPooler(endpoint);
  if (fix) throw new UsageError(`cannot dump ${conn.display} through a transaction-mode pooler, which hands each transaction another server session and so breaks pg_dump's session and snapshot; ${fix}`);
}

/**
 * The session-state probe: detects a pooler that switches server connections between a client's
 * statements (PgBouncer `pool_mode=transaction` or `statement`, Supavisor's transaction mode).
 * Session A (the dump's own connection) sets a session-level placeholder setting to a random
 * token and reads its `pg_backend_pid()`; session B (a second connection, opened by `openOther`)
 * then holds a transaction open and reads both; then A reads both again. On a real server, or a
 * session-mode pooler, A keeps its backend and its setting and B has neither. A transaction
 * pooler betrays itself by giving B the backend A just released (same pid, or A's token seen in
 * B), or by moving A to another backend while B holds A's (pid changed, token gone). A pooler
 * that refuses B's transaction block ("statement pooling") is one too. The probe cannot be
 * fooled into a false alarm (two open sessions of a server never share a backend); a busy pooler
 * that happens to hand B an unrelated backend can escape it (the host-name rules catch the
 * platforms' poolers regardless).
 * @returns undefined when no switch was seen, else the evidence, for {@link checkSessionPooling}.
 */
export async function probeSessionState(a: pg.Client, openOther: () => Promise<pg.Client>): Promise<string | undefined> {
  const token = randomBytes(8).toString('hex');
  const first = await a.query<{ pid: number }>("SELECT pg_backend_pid() AS pid, set_config('pg_backup.session_probe', $1, false)", [token]);
  const pidA = first.rows[0]!.pid;
  const b = await openOther();
  try {
    try {
      await b.query('BEGIN');
    } catch (err) {
      if (/pooling mode|transaction blocks not allowed/i.test(messageOf(err))) return `a transaction block was refused: ${messageOf(err)}`;
      throw err;
    }
    const inB = (await b.query<{ pid: number; v: string | null }>("SELECT pg_backend_pid() AS pid, current_setting('pg_backup.session_probe', true) AS v")).rows[0]!;
    const inA = (await a.query<{ pid: number; v: string | null }>("SELECT pg_backend_pid() AS pid, current_setting('pg_backup.session_probe', true) AS v")).rows[0]!;
    await b.query('ROLLBACK').catch(() => undefined);
    if (inB.pid === pidA || inB.v === token) return 'a second connection was given the first one\'s server session';
    if (inA.pid !== pidA || inA.v !== token) return 'a session-level SET did not stick: the next statement ran in another server session';
    return undefined;
  } finally {
    await b.end().catch(() => undefined);
  }
}

/**
 * Runs {@link probeSessionState} on the dump's connection and refuses a switching pooler.
 * @throws UsageError naming the evidence and the fix (a direct connection, or the pooler's
 * session mode: Supabase port 5432, Neon's host without `-pooler`, PgBouncer `pool_mode=session`).
 */
export async function checkSessionPooling(client: pg.Client, conn: DatabaseConnection, openOther: () => Promise<pg.Client>): Promise<void> {
  const evidence = await probeSessionState(client, openOther);
  if (evidence === undefined) return;
  throw new UsageError(`cannot dump ${conn.display}: it goes through a transaction-mode connection pooler (${evidence}), which breaks pg_dump's session and snapshot; connect to the server directly, or through the pooler's session mode (PgBouncer pool_mode=session, Supabase port 5432, Neon's host without "-pooler")`);
}

/**
 * Everything checked before a dump's first connection: the platform's TLS rule (the returned
 * connection may carry `sslmode=require`), a known transaction pooler, an unreachable IPv6-only host.
 * @throws UsageError for each, in one line naming the fix.
 */
export async function diagnoseBeforeConnect(conn: DatabaseConnection, probes: NetworkProbes = systemProbes): Promise<DatabaseConnection> {
  const checked = withPlatformTls(conn);
  checkKnownPooler(checked);
  await checkReachable(checked, probes);
  return checked;
}

/**
 * A dump's first connection to `target`, diagnosed: {@link checkKnownPooler} and
 * {@link checkReachable} before connecting, then `open`, then (once per server, keyed in
 * `probed` by host and port) {@link checkSessionPooling} with a second connection from `open`.
 * The connection is closed when a check after it fails.
 * @throws UsageError from the checks or from `open`.
 */
export async function connectDiagnosed(target: DatabaseConnection, open: (conn: DatabaseConnection) => Promise<pg.Client>, options: { probes?: NetworkProbes; probed?: Set<string> } = {}): Promise<pg.Client> {
  checkKnownPooler(target);
  await checkReachable(target, options.probes);
  const client = await open(target);
  const endpoint = endpointOf(target);
  const key = endpoint ? `${endpoint.hostaddr ?? endpoint.host}:${endpoint.port}` : target.url;
  if (options.probed?.has(key)) return client;
  try {
    await checkSessionPooling(client, target, () => open(target));
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  options.probed?.add(key);
  return client;
}
