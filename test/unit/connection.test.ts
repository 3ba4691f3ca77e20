// Connection strings in every form libpq accepts: parsed into the URL the tool passes on, with
// the password apart and registered as a secret before any message; malformed ones refused in
// one line that never shows the string.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError, messageOf, redact } from '../../src/errors.ts';
import { connectionSecrets, parseConnectionString, parseConninfo, resolveConnection } from '../../src/postgres/connection.ts';

/** The UsageError `fn` throws; fails when it throws nothing or something else. */
function usageError(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a UsageError, nothing was thrown');
}

describe('libpq key=value strings', () => {
  it('parses keywords, spaces around =, quoted values and backslash escapes like libpq', () => {
    const f = parseConninfo(`host=db.internal port = 6543 user=app password='a b\\'c\\\\d' dbname=orders sslmode=require application_name=x\\ y`);
    assert.equal(f.get('host'), 'db.internal');
    assert.equal(f.get('port'), '6543');
    assert.equal(f.get('password'), "a b'c\\d");
    assert.equal(f.get('application_name'), 'x y');
    assert.equal(f.get('sslmode'), 'require');
  });

  it('becomes a URL without the password, the password kept apart and hidden', () => {
    const c = parseConnectionString("host=db.internal port=6543 user=app password='kv secret 1' dbname=orders sslmode=require");
    assert.equal(c.url, 'postgresql://app@db.internal:6543/orders?sslmode=require');
    assert.equal(c.password, 'kv secret 1');
    assert.equal(c.database, 'orders');
    assert.equal(c.display, 'app@db.internal:6543/orders');
    assert.equal(redact('failed with kv secret 1 here'), 'failed with *** here');
  });

  it('puts a Unix-socket host and several hosts in the query, as libpq reads them', () => {
    assert.equal(parseConnectionString('host=/var/run/postgresql dbname=app user=backup').url, 'postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql&user=backup');
    assert.match(parseConnectionString('host=a,b port=5432,5433 dbname=app').url, /host=a%2Cb&port=5432%2C5433/);
  });

  for (const [label, text, secret] of [
    ['an unquoted value with a space', 'host=h password=hunter secondhalf dbname=d', 'secondhalf'],
    ['an unterminated quote', "host=h password='unterminated-secret dbname=d", 'unterminated-secret'],
    ['an unknown keyword', 'host=h passwd=typo-secret dbname=d', 'typo-secret'],
    ['a missing =', 'host=h password dbname=d', undefined],
  ] as const) {
    it(`refuses ${label} in one line that does not show the string`, () => {
      const err = usageError(() => parseConnectionString(text));
      const line = messageOf(err);
      assert.match(line, /^malformed libpq connection string: .*\(the string is not shown: it may hold a password\)/);
      assert.doesNotMatch(line, /\n/);
      assert.ok(!line.includes('host=h'), line);
      if (secret) assert.ok(!line.includes(secret), line);
    });
  }
});

describe('connection URLs', () => {
  it('refuses a password with an unencoded / (part of it would be read as the host) without showing it', () => {
    for (const url of ['postgresql://u:p@ss/w0rd@db.internal:5432/app', 'postgresql://u:12/ss@db.internal/app', 'postgresql://u:12?ss@db.internal/app', 'postgresql://u:12#ss@db.internal/app']) {
      const err = usageError(() => parseConnectionString(url));
      assert.match(err.message, /malformed database URL/);
      for (const part of ['ss/w0rd', 'w0rd', 'db.internal', '12?ss', 'ss@']) assert.ok(!err.message.includes(part), `${url}: ${err.message}`);
    }
  });

  it('reads an unencoded @ in the password (the last @ ends it) as the right host', () => {
    const c = parseConnectionString('postgresql://u:p@ss@db.internal:5432/app');
    assert.equal(c.password, 'p@ss');
    assert.equal(c.display, 'u@db.internal:5432/app');
  });

  it('moves ?password= out and hides it, also in a refused URL', () => {
    const err = usageError(() => parseConnectionString('postgresql://u@h/db?password=qsecret9&sslmode=bogus'));
    assert.equal(err.message, 'invalid sslmode "bogus" in the database URL: use one of disable, allow, prefer, require, verify-ca, verify-full');
    assert.equal(redact('x qsecret9 y'), 'x *** y');
  });

  it('refuses an invalid sslmode and PGSSLMODE before any connection', () => {
    usageError(() => parseConnectionString('host=h dbname=d sslmode=on'));
    assert.match(usageError(() => resolveConnection('postgresql://u@h/db', { PGSSLMODE: 'bogus' })).message, /^invalid PGSSLMODE "bogus"/);
  });

  it('registers PGPASSWORD even when the URL has its own password', () => {
    resolveConnection('postgresql://u:urlpw123@h/db', { PGPASSWORD: 'envpw-456' });
    assert.equal(redact('urlpw123 envpw-456'), '*** ***');
  });

  it('refuses a string that is neither form without showing it', () => {
    const err = usageError(() => parseConnectionString('garbage-with-secret'));
    assert.ok(!err.message.includes('garbage-with-secret'));
    assert.match(usageError(() => parseConnectionString('mysql://u:mysqlpw@h/db')).message, /^database URL must start with postgresql:\/\/ \(got mysql:\/\/\)/);
  });
});

describe('connectionSecrets and redact', () => {
  it('finds the password of every form, also of malformed strings', () => {
    assert.ok(connectionSecrets('postgresql://u:p@ss/w0rd@h/db').includes('p@ss/w0rd'));
    assert.ok(connectionSecrets('postgresql://u@h/db?sslpassword=keypass1').includes('keypass1'));
    assert.ok(connectionSecrets("host=h password='a b' dbname=d").includes('a b'));
    assert.ok(connectionSecrets('host=h password=plain1 dbname=d').includes('plain1'));
    assert.ok(connectionSecrets('postgresql://u:s%40cret@h/db').includes('s@cret'));
  });

  it('hides URL passwords up to the last @, and password= values in key=value text', () => {
    assert.equal(redact('at postgresql://u:p@ss/w0rd@h/db now'), 'at postgresql://u:***@h/db now');
    assert.equal(redact("conn host=h password='x y' user=u"), 'conn host=h password=*** user=u');
    assert.equal(redact('conn host=h sslpassword=zz9 user=u'), 'conn host=h sslpassword=*** user=u');
  });
});
