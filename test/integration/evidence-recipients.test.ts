// Key recovery, on real backups (shared PostgreSQL, file:// bucket, the age CLI's keys): a drill
// given only the escrow (break-glass) identity restores a backup encrypted to the everyday and
// the escrow recipients and its report — signed — says the escrow recipient opened it;
// `verify --recipients --require-recipient` passes a window where every backup has the escrow
// recipient and fails (exit 1, naming them) a mixed window: a backup dumped without it, and one
// whose manifest was edited afterwards to list it (its age header has one stanza fewer).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cli, createDatabase, dumpWithCli, fileLocation, run } from '../helpers.ts';
import { ageHeaderStanzas } from '../../src/evidence/recipients.ts';
import { Readable } from 'node:stream';

let keys: string;
let database: string;
const key = { everyday: { file: '', recipient: '' }, escrow: { file: '', recipient: '' } };

before(async () => {
  database = await createDatabase('escrow');
  keys = await mkdtemp(path.join(os.tmpdir(), 'pgb-escrow-'));
  for (const name of ['everyday', 'escrow'] as const) {
    const file = path.join(keys, `${name}.txt`);
    assert.equal((await run('age-keygen', ['-o', file])).code, 0);
    key[name] = { file, recipient: (await run('age-keygen', ['-y', file])).stdout.trim() };
  }
  assert.equal((await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', path.join(keys, 'sign.pem')])).code, 0);
  assert.equal((await run('openssl', ['pkey', '-in', path.join(keys, 'sign.pem'), '-pubout', '-out', path.join(keys, 'sign.pub')])).code, 0);
}, { timeout: 60_000 });
after(() => rm(keys, { recursive: true, force: true }));

describe('key recovery', () => {
  it('an escrow-only drill restores and records the escrow recipient as the one that opened the backup', { timeout: 180_000 }, async (t) => {
    const to = await fileLocation();
    t.after(() => rm(fileURLToPath(to), { recursive: true, force: true }));
    const { manifest, objectKey } = await dumpWithCli(database, to, ['--age-recipient', key.everyday.recipient, '--age-recipient', key.escrow.recipient]);
    assert.deepEqual(manifest.encryption.recipients, [key.everyday.recipient, key.escrow.recipient]);
    // The age CLI reads it with the escrow key alone (the break-glass kit needs no pg-backup to decrypt).
    const viaAge = await run('age', ['-d', '-i', key.escrow.file, '-o', '/dev/null', path.join(fileURLToPath(to), objectKey)]);
    assert.equal(viaAge.code, 0, viaAge.stderr);

    const d = await cli(['drill', '--from', to, '--age-identity-file', key.escrow.file, '--sign-key', path.join(keys, 'sign.pem'), '--json'], { PG_BACKUP_AGE_IDENTITY: undefined, PG_BACKUP_AGE_IDENTITY_FILE: undefined });
    assert.equal(d.code, 0, d.stderr);
    const result = JSON.parse(d.stdout);
    assert.equal(result.ok, true, result.reason);
    assert.deepEqual(result.decryption, { identityRecipients: [key.escrow.recipient], openedBy: key.escrow.recipient, openedByListed: true });
    // The stored report carries it, and its signed statement verifies.
    const reportKey = result.drillReportUri.slice(to.length + 1);
    const stored = JSON.parse(await readFile(path.join(fileURLToPath(to), reportKey), 'utf8'));
    assert.equal(stored.decryption.openedBy, key.escrow.recipient);
    const v = await cli(['evidence', 'verify', '--from', to, '--public-key', path.join(keys, 'sign.pub')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);

    // The everyday key of another pair cannot stand in for the escrow key: the drill fails, no "opened by".
    const stranger = path.join(keys, 'stranger.txt');
    await run('age-keygen', ['-o', stranger]);
    const f = await cli(['drill', '--from', to, '--age-identity-file', stranger, '--json']);
    assert.equal(f.code, 1);
    const failed = JSON.parse(f.stdout);
    assert.equal(failed.ok, false);
    assert.equal(failed.decryption, undefined);
    assert.match(failed.reason, /age decryption failed/);
  });

  it('verify --recipients: every backup in the window must list the escrow recipient and carry as many header stanzas', { timeout: 180_000 }, async (t) => {
    const to = await fileLocation();
    const dir = fileURLToPath(to);
    t.after(() => rm(dir, { recursive: true, force: true }));
    const both = ['--age-recipient', key.everyday.recipient, '--age-recipient', key.escrow.recipient];
    const a = await dumpWithCli(database, to, both);
    const b = await dumpWithCli(database, to, both);
    let r = await cli(['verify', '--from', to, '--recipients', '--require-recipient', key.escrow.recipient]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^OK +${a.manifest.id}  2 recipient\\(s\\) in the manifest, 2 in the age header$`, 'm'));

    const missing = await dumpWithCli(database, to, ['--age-recipient', key.everyday.recipient]);
    const edited = await dumpWithCli(database, to, ['--age-recipient', key.everyday.recipient]);
    const mk = path.join(dir, edited.manifestKey);
    const m = JSON.parse(await readFile(mk, 'utf8'));
    m.encryption.recipients.push(key.escrow.recipient);
    await writeFile(mk, JSON.stringify(m));
    const plain = await dumpWithCli(database, to);

    r = await cli(['verify', '--from', to, '--recipients', '--require-recipient', key.escrow.recipient, '--json']);
    assert.equal(r.code, 1);
    const result = JSON.parse(r.stdout);
    const byId = Object.fromEntries(result.backups.map((x: any) => [x.id, x.problems]));
    assert.deepEqual(byId[a.manifest.id], []);
    assert.deepEqual(byId[b.manifest.id], []);
    assert.deepEqual(byId[missing.manifest.id], [`not encrypted to ${key.escrow.recipient.slice(0, 16)}…`]);
    assert.deepEqual(byId[edited.manifest.id], ['its age header holds 1 recipient stanza, the manifest lists 2 recipients']);
    assert.deepEqual(byId[plain.manifest.id], ['not encrypted client-side (no age recipients in its manifest)']);
    r = await cli(['verify', '--from', to, '--recipients', '--require-recipient', key.escrow.recipient]);
    // Each run's globals (role password hashes) are checked like its database: 5 runs, 10 objects; the
    // edited manifest's globals are as dumped (one recipient, not the escrow), so 3 globals fail too.
    assert.match(r.stderr, new RegExp(`verify --recipients failed: 6 of 10 backups not encrypted to every required recipient: .*${missing.manifest.id}`));
    assert.match(r.stderr, /@globals-\d{8}T\d{6}Z-[0-9a-f]{6} \(not encrypted to /);

    // --since: a window that holds none is a failure, not a pass.
    const none = await cli(['verify', '--from', to, '--recipients', '--require-recipient', key.escrow.recipient, '--since', '1ms']);
    assert.equal(none.code, 1, none.stdout + none.stderr);
    assert.match(none.stderr, /no complete backup under .* in the last 1ms/);

    // Usage mistakes: one line, exit 2.
    for (const args of [['--recipients'], ['--recipients', '--require-recipient', 'age1NOT'], ['--require-recipient', key.escrow.recipient], ['--recipients', '--require-recipient', key.escrow.recipient, '--since', 'soon']]) {
      const bad = await cli(['verify', '--from', to, ...args]);
      assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
      assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    }
  });

  it('reads the stanza types of an age header and refuses what is not one', async () => {
    const header = 'age-encryption.org/v1\n-> X25519 abc\nQUJD\n-> mlkem768x25519 def\nREVG\n--- mac\n';
    assert.deepEqual(await ageHeaderStanzas(Readable.from([Buffer.from(header), Buffer.alloc(10)])), ['X25519', 'mlkem768x25519']);
    await assert.rejects(ageHeaderStanzas(Readable.from([Buffer.from('PGDMP...')])), /not an age file/);
  });
});
