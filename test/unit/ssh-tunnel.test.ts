// --ssh-tunnel's parts that need no sshd: the bastion address, the URL routed through a forward,
// ssh's failures as one line each, the action's key and known hosts written privately, the CLI
// flags. The tunnel itself runs against a real sshd in test/integration/ssh-tunnel.test.ts.
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { sshTunnelOf } from '../../src/cli/ssh-options.ts';
import { UsageError } from '../../src/errors.ts';
import { parseDatabaseUrl } from '../../src/postgres/connection.ts';
import { parseSshDestination, sshFailure, throughForward, writeSshInputs } from '../../src/postgres/ssh-tunnel.ts';

describe('the bastion address', () => {
  it('reads USER@HOST[:PORT], IPv6 in brackets, port 22 by default', () => {
    assert.deepEqual(parseSshDestination('backup@bastion.example.com'), { user: 'backup', host: 'bastion.example.com', port: 22 });
    assert.deepEqual(parseSshDestination('backup@10.0.0.5:2222'), { user: 'backup', host: '10.0.0.5', port: 2222 });
    assert.deepEqual(parseSshDestination('ops@[2001:db8::1]:22'), { user: 'ops', host: '2001:db8::1', port: 22 });
  });

  it('refuses anything ssh could read as an option, a missing user, a bad port', () => {
    for (const bad of ['bastion.example.com', '-oProxyCommand=x@h', 'u@-oProxyCommand=x', 'u@h:0', 'u@h:70000', 'u@h;rm', 'u@h p']) {
      assert.throws(() => parseSshDestination(bad), (err: unknown) => err instanceof UsageError && /--ssh-tunnel must be USER@HOST or USER@HOST:PORT/.test(err.message), bad);
    }
  });
});

describe('a URL through a forward', () => {
  it('keeps the host name (for TLS), adds hostaddr=127.0.0.1 and the local port, keeps the parameters and the password', () => {
    const conn = parseDatabaseUrl('postgresql://app:s%40cret@db.internal:5432/orders?sslmode=verify-full&sslrootcert=%2Fca.pem');
    const u = new URL(throughForward(conn, { host: 'db.internal', port: 5432, localPort: 40001 }));
    assert.equal(u.hostname, 'db.internal');
    assert.equal(u.port, '40001');
    assert.equal(u.searchParams.get('hostaddr'), '127.0.0.1');
    assert.equal(u.searchParams.get('sslmode'), 'verify-full');
    assert.equal(u.searchParams.get('sslrootcert'), '/ca.pem');
    assert.equal(decodeURIComponent(u.password), 's@cret');
    assert.equal(u.pathname, '/orders');
    const again = parseDatabaseUrl(u.href);
    assert.equal(again.password, 's@cret');
    assert.equal(again.display, 'app@db.internal:40001/orders');
  });

  it('moves a host given in the query into the URL', () => {
    const conn = parseDatabaseUrl('postgresql:///orders?host=db.internal&port=6000&user=app');
    const u = new URL(throughForward(conn, { host: 'db.internal', port: 6000, localPort: 40002 }));
    assert.equal(u.hostname, 'db.internal');
    assert.equal(u.port, '40002');
    assert.equal(u.searchParams.get('host'), null);
    assert.equal(u.searchParams.get('port'), null);
  });
});

describe('ssh failures, one line each', () => {
  const d = { user: 'backup', host: 'bastion.example.com', port: 2222 };
  const settings = { destination: 'backup@bastion.example.com:2222' };
  const cases: [string, RegExp][] = [
    ['@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@\nHost key for [bastion.example.com]:2222 has changed and you have requested strict checking.\nHost key verification failed.', /host key does not match the one in --ssh-known-hosts-file .*ssh-keyscan -p 2222 bastion\.example\.com/],
    ['No ED25519 host key is known for [bastion.example.com]:2222 and you have requested strict checking.\nHost key verification failed.', /--ssh-known-hosts-file has no host key for \[bastion\.example\.com\]:2222: nothing was sent to it; add the bastion's line \(it starts with \[bastion\.example\.com\]:2222\)/],
    ['ssh: connect to host bastion.example.com port 2222: Connection refused', /refused the connection on port 2222 \(nothing listens there\)/],
    ['ssh: connect to host bastion.example.com port 2222: Connection timed out', /no answer from the bastion on port 2222/],
    ['ssh: Could not resolve hostname bastion.example.com: Name or service not known', /unknown host bastion\.example\.com/],
    ['backup@bastion.example.com: Permission denied (publickey).', /refused the key for user backup \(backup@bastion\.example\.com: Permission denied \(publickey\)\.\)/],
    ['@@@@@@@@@@@\n@         WARNING: UNPROTECTED PRIVATE KEY FILE!          @\nPermissions 0644 for \'/k\' are too open.', /chmod 600/],
    ['Load key "/k": invalid format\nbackup@bastion.example.com: Permission denied (publickey).', /invalid format/],
    ['bind [127.0.0.1]:40001: Address already in use\nCould not request local forwarding.', /local end of the tunnel could not be opened/],
  ];
  for (const [stderr, expected] of cases) {
    it(stderr.split('\n').find((l) => !l.startsWith('@'))!, () => {
      const err = sshFailure(stderr, d, settings);
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /^ssh tunnel to backup@\[bastion\.example\.com\]:2222 failed: /);
      assert.match(err.message, expected);
      assert.doesNotMatch(err.message, /\n/);
    });
  }

  it('names the action inputs when the settings say so', () => {
    const err = sshFailure('Host key verification failed.', d, { ...settings, names: { destination: 'input "ssh-tunnel"', privateKey: 'input "ssh-private-key"', knownHosts: 'input "ssh-known-hosts"' } });
    assert.match(err.message, /input "ssh-known-hosts" has no host key/);
  });
});

describe('the action\'s key and known hosts', () => {
  it('are written 0600 in a 0700 directory, LF line ends and a last newline, and removed by cleanup', async () => {
    const files = await writeSshInputs('-----BEGIN OPENSSH PRIVATE KEY-----\r\nabc\r\n-----END OPENSSH PRIVATE KEY-----', '[h]:2222 ssh-ed25519 AAAA');
    try {
      assert.equal(await readFile(files.privateKeyFile!, 'utf8'), '-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n');
      assert.equal((await stat(files.privateKeyFile!)).mode & 0o777, 0o600);
      assert.equal((await stat(path.dirname(files.privateKeyFile!))).mode & 0o777, 0o700);
      assert.equal(await readFile(files.knownHostsFile!, 'utf8'), '[h]:2222 ssh-ed25519 AAAA\n');
    } finally {
      await files.cleanup();
    }
    await assert.rejects(stat(path.dirname(files.privateKeyFile!)), { code: 'ENOENT' });
  });
});

describe('the CLI flags', () => {
  it('no --ssh-tunnel: no tunnel; key or known hosts without it: refused', () => {
    assert.equal(sshTunnelOf({}), undefined);
    assert.throws(() => sshTunnelOf({ sshKnownHostsFile: '/k' }), /go with --ssh-tunnel/);
    assert.deepEqual(sshTunnelOf({ sshTunnel: 'u@h', sshPrivateKeyFile: '/k', sshKnownHostsFile: '/kh' }), { destination: 'u@h', privateKeyFile: '/k', knownHostsFile: '/kh' });
  });
});
