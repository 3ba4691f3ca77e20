// The connection diagnosis's rules, with a stub resolver and route check (no network at all):
// IPv6-only hosts from a machine without an IPv6 route, transaction poolers known by host name
// and port, the platforms' TLS rule, servers that refuse connections without TLS. The real
// route check, the real pooler and the real TLS server are in test/integration/diagnose.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { UsageError } from '../../src/errors.ts';
import { parseDatabaseUrl } from '../../src/postgres/connection.ts';
import { checkKnownPooler, checkReachable, endpointOf, knownTransactionPooler, platformOf, probeSessionState, tlsRefusal, withPlatformTls, type NetworkProbes } from '../../src/postgres/diagnose.ts';

/** Stub probes: `addresses` for every name, `route` for every IPv6 address; records the calls. */
function stub(addresses: { address: string; family: number }[] | Error, route: boolean) {
  const calls: string[] = [];
  const probes: NetworkProbes = {
    lookup: async (host) => {
      calls.push(`lookup ${host}`);
      if (addresses instanceof Error) throw addresses;
      return addresses;
    },
    ipv6Route: async (address) => {
      calls.push(`route ${address}`);
      return route;
    },
  };
  return { probes, calls };
}

async function rejectsUsage(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.doesNotMatch(err.message, /\n/);
    return err.message;
  }
  assert.fail('expected a UsageError');
}

const conn = (url: string) => parseDatabaseUrl(url);

describe('IPv6-only hosts', () => {
  it('a Supabase direct host with only IPv6 addresses and no IPv6 route: the IPv4 session pooler and its user form', async () => {
    const { probes, calls } = stub([{ address: '2001:db8::10', family: 6 }], false);
    const message = await rejectsUsage(checkReachable(conn('postgresql://postgres:secretpw@db.abcdefghijklmnopqrst.supabase.co:5432/postgres'), probes));
    assert.match(message, /^cannot reach db\.abcdefghijklmnopqrst\.supabase\.co: it has only IPv6 addresses \(2001:db8::10\) and this machine has no IPv6 route/);
    assert.match(message, /host aws-0-<region>\.pooler\.supabase\.com, port 5432, user postgres\.abcdefghijklmnopqrst \(/);
    assert.doesNotMatch(message, /secretpw/);
    assert.deepEqual(calls, ['lookup db.abcdefghijklmnopqrst.supabase.co', 'route 2001:db8::10']);
  });

  it('another host: IPv4 endpoint, a runner with IPv6, or --ssh-tunnel', async () => {
    const { probes } = stub([{ address: '2001:db8::1', family: 6 }, { address: '2001:db8::2', family: 6 }], false);
    const message = await rejectsUsage(checkReachable(conn('postgresql://app@db.example.net/app'), probes));
    assert.match(message, /only IPv6 addresses \(2001:db8::1, …\)/);
    assert.match(message, /--ssh-tunnel/);
  });

  it('an IPv6 literal without a route is refused without a look-up', async () => {
    const { probes, calls } = stub([], false);
    await rejectsUsage(checkReachable(conn('postgresql://app@[2001:db8::5]:5432/app'), probes));
    assert.deepEqual(calls, ['route 2001:db8::5']);
  });

  it('passes when an IPv6 address has a route, when the host has an IPv4 address, when it does not resolve', async () => {
    const routed = stub([{ address: '2001:db8::1', family: 6 }], true);
    await checkReachable(conn('postgresql://app@db.example.net/app'), routed.probes);
    const mixed = stub([{ address: '2001:db8::1', family: 6 }, { address: '192.0.2.1', family: 4 }], false);
    await checkReachable(conn('postgresql://app@db.example.net/app'), mixed.probes);
    assert.deepEqual(mixed.calls, ['lookup db.example.net'], 'no route check when an IPv4 address exists');
    const unknown = stub(Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' }), false);
    await checkReachable(conn('postgresql://app@nowhere.example.net/app'), unknown.probes);
  });

  it('does not look up a tunnelled host (hostaddr) nor a Unix socket', async () => {
    const { probes, calls } = stub([{ address: '2001:db8::1', family: 6 }], false);
    await checkReachable(conn('postgresql://app@db.internal:40001/app?hostaddr=127.0.0.1'), probes);
    await checkReachable(conn('postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql'), probes);
    assert.deepEqual(calls, []);
  });
});

describe('transaction poolers known by host name and port', () => {
  it('Supabase 6543, Neon -pooler hosts, Azure 6432: refused with the session/direct endpoint', () => {
    const cases: [string, RegExp][] = [
      ['postgresql://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres', /use port 5432 on the same host \(the session pooler\)/],
      ['postgresql://postgres:pw@db.abc.supabase.co:6543/postgres', /use port 5432 on the same host \(the direct connection\)/],
      ['postgresql://alex:pw@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/dbname', /direct host ep-cool-darkness-123456\.us-east-2\.aws\.neon\.tech/],
      ['postgresql://admin:pw@myserver.postgres.database.azure.com:6432/app', /PgBouncer listens on port 6432/],
    ];
    for (const [url, fix] of cases) {
      try {
        checkKnownPooler(conn(url));
        assert.fail(`not refused: ${url}`);
      } catch (err) {
        assert.ok(err instanceof UsageError);
        assert.match(err.message, /through a transaction-mode pooler/);
        assert.match(err.message, fix);
        assert.doesNotMatch(err.message, /:pw@/);
      }
    }
  });

  it('leaves the session ports and direct hosts alone', () => {
    for (const url of [
      'postgresql://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres',
      'postgresql://postgres:pw@db.abc.supabase.co:5432/postgres',
      'postgresql://alex:pw@ep-cool-darkness-123456.us-east-2.aws.neon.tech/dbname',
      'postgresql://admin:pw@myserver.postgres.database.azure.com/app',
      'postgresql://app:pw@pgbouncer.internal:6543/app',
    ]) checkKnownPooler(conn(url));
    assert.equal(knownTransactionPooler({ host: 'example.com', port: 6543 }), undefined);
  });
});

describe('TLS on managed platforms', () => {
  it('recognises the platforms by host name', () => {
    assert.equal(platformOf('db.abc.supabase.co')?.id, 'supabase');
    assert.equal(platformOf('aws-0-us-east-1.pooler.supabase.com')?.id, 'supabase');
    assert.equal(platformOf('ep-x-123.eu-central-1.aws.neon.tech')?.id, 'neon');
    assert.equal(platformOf('srv.postgres.database.azure.com')?.id, 'azure');
    assert.equal(platformOf('mydb.abc123.eu-west-1.rds.amazonaws.com')?.id, 'rds');
    assert.equal(platformOf('notsupabase.co'), undefined);
    assert.equal(platformOf('db.internal'), undefined);
  });

  it('adds sslmode=require to a platform host without sslmode, keeps an explicit one, leaves other hosts alone', () => {
    const added = withPlatformTls(conn('postgresql://u:pw@ep-x-1.us-east-2.aws.neon.tech/db'), {});
    assert.equal(new URL(added.url).searchParams.get('sslmode'), 'require');
    const kept = withPlatformTls(conn('postgresql://u:pw@ep-x-1.us-east-2.aws.neon.tech/db?sslmode=verify-full'), {});
    assert.equal(new URL(kept.url).searchParams.get('sslmode'), 'verify-full');
    const fromEnv = withPlatformTls(conn('postgresql://u:pw@ep-x-1.us-east-2.aws.neon.tech/db'), { PGSSLMODE: 'verify-ca' });
    assert.equal(new URL(fromEnv.url).searchParams.get('sslmode'), null, 'PGSSLMODE is left to apply');
    const other = withPlatformTls(conn('postgresql://u:pw@db.internal/db'), {});
    assert.equal(new URL(other.url).searchParams.get('sslmode'), null);
  });

  it('refuses sslmode=disable on a platform host in one line', () => {
    assert.throws(() => withPlatformTls(conn('postgresql://u:pw@srv.postgres.database.azure.com/db?sslmode=disable'), {}), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /Azure Database for PostgreSQL requires TLS and sslmode=disable turns it off; use sslmode=require/);
      return true;
    });
  });

  it('turns the servers\' refusals of a connection without TLS into the fix', () => {
    for (const m of [
      'no pg_hba.conf entry for host "127.0.0.1", user "app", database "app", no encryption',
      'pg_hba.conf rejects connection for host "127.0.0.1", user "app", database "app", no encryption',
      'connection is insecure (try using `sslmode=require`)',
      'SSL connection is required. Please specify SSL options and retry.',
    ]) assert.match(tlsRefusal(m, undefined) ?? '', /refused a connection without TLS \(sslmode=none: .*add sslmode=require/);
    assert.equal(tlsRefusal('password authentication failed for user "app"', undefined), undefined);
  });

  it('reads the endpoint like libpq: authority, query host/port, default 5432; none for sockets and host lists', () => {
    assert.deepEqual(endpointOf(conn('postgresql://u@h.example:6543/db?sslmode=require'), {}), { host: 'h.example', port: 6543, hostaddr: undefined, sslmode: 'require' });
    assert.equal(endpointOf(conn('postgresql://u@h.example/db'), {})?.port, 5432);
    assert.equal(endpointOf(conn('postgresql:///db?host=%2Ftmp'), {}), undefined);
    assert.equal(endpointOf(conn('postgresql:///db?host=a,b'), {}), undefined);
  });
});

describe('the session-state probe (stub sessions; the real pooler is in the integration test)', () => {
  /** A fake server: `backendOf` says which backend each statement of a session runs on. */
  function fakeClient(backend: () => number, settings: Map<number, string>): pg.Client {
    return {
      query: async (text: string, values?: string[]) => {
        const pid = backend();
        if (/set_config/.test(text)) settings.set(pid, values![0]!);
        if (/^(BEGIN|ROLLBACK)/.test(text)) return { rows: [] };
        return { rows: [{ pid, v: settings.get(pid) ?? null }] };
      },
      end: async () => undefined,
    } as unknown as pg.Client;
  }

  it('no switch on a server: two sessions, two backends', async () => {
    const settings = new Map<number, string>();
    assert.equal(await probeSessionState(fakeClient(() => 1, settings), async () => fakeClient(() => 2, settings)), undefined);
  });

  it('a second session given the first one\'s backend is a transaction pooler', async () => {
    const settings = new Map<number, string>();
    const evidence = await probeSessionState(fakeClient(() => 1, settings), async () => fakeClient(() => 1, settings));
    assert.match(evidence ?? '', /given the first one's server session/);
  });

  it('a session moved to another backend between statements is one too', async () => {
    const settings = new Map<number, string>();
    let n = 0;
    const evidence = await probeSessionState(fakeClient(() => (n++ === 0 ? 1 : 3), settings), async () => fakeClient(() => 2, settings));
    assert.match(evidence ?? '', /did not stick/);
  });
});
