import assert from 'node:assert/strict';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { UsageError } from '../../src/errors.ts';
import { checkDrillEvidence } from '../../src/evidence/check.ts';
import { EnvelopeSchema, INTOTO_PAYLOAD_TYPE, keyIdOf, loadPublicKey, loadSigningKey, pae, signEnvelope, verifyEnvelope, type SigningKey, type VerifyingKey } from '../../src/evidence/dsse.ts';
import { drillEnvelopeLine } from '../../src/evidence/record.ts';
import { DRILL_PREDICATE_TYPE, StatementSchema, STATEMENT_TYPE, evidenceKeyOf, logicalSubject, physicalSubject } from '../../src/evidence/statement.ts';
import { openStorage } from '../../src/storage/index.ts';
import { run } from '../helpers.ts';

// The DSSE protocol's test vectors (secure-systems-lab/dsse, testvectors/vectors.json, vector
// "single-signature"): key A is RFC 8032's first Ed25519 test key.
const SEED_A = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const VECTOR_PAYLOAD = '{"_type":"https://in-toto.io/Statement/v1"}';
const VECTOR_PAE_HEX = '445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d';
const VECTOR_SIG = '2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==';

function keyFromSeed(seedHex: string): SigningKey {
  // PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410).
  const privateKey = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(seedHex, 'hex')]), format: 'der', type: 'pkcs8' });
  return { privateKey, keyid: keyIdOf(createPublicKey(privateKey)) };
}
const publicOf = (k: SigningKey): VerifyingKey => ({ publicKey: createPublicKey(k.privateKey), keyid: k.keyid });
function freshKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, keyid: keyIdOf(publicKey) };
}

describe('DSSE envelopes', () => {
  it('PAE and the Ed25519 signature match the DSSE test vector byte for byte', () => {
    assert.equal(pae(INTOTO_PAYLOAD_TYPE, Buffer.from(VECTOR_PAYLOAD)).toString('hex'), VECTOR_PAE_HEX);
    assert.equal(pae('http://example.com/HelloWorld', Buffer.from('hello world')).toString(), 'DSSEv1 29 http://example.com/HelloWorld 11 hello world');
    // LEN is the byte length of the UTF-8 type, not its characters.
    assert.match(pae('application/vnd.exämple+json', Buffer.alloc(0)).toString(), /^DSSEv1 29 application\/vnd\.exämple\+json 0 $/);
    const a = keyFromSeed(SEED_A);
    const env = signEnvelope(INTOTO_PAYLOAD_TYPE, Buffer.from(VECTOR_PAYLOAD), a);
    assert.equal(env.signatures[0]!.sig, VECTOR_SIG);
    assert.equal(verifyEnvelope(env, [publicOf(a)]).state, 'signed');
  });

  it('rejects a swapped payload type, another key, a changed payload; an envelope without signatures is unsigned', () => {
    const a = keyFromSeed(SEED_A);
    const env = signEnvelope(INTOTO_PAYLOAD_TYPE, Buffer.from(VECTOR_PAYLOAD), a);
    assert.equal(verifyEnvelope({ ...env, payloadType: 'application/vnd.example.other+json' }, [publicOf(a)]).state, 'bad-signature');
    assert.equal(verifyEnvelope(env, [publicOf(freshKey())]).state, 'bad-signature');
    assert.equal(verifyEnvelope({ ...env, payload: Buffer.from('{"_type":"x"}').toString('base64') }, [publicOf(a)]).state, 'bad-signature');
    assert.equal(verifyEnvelope({ ...env, signatures: [{ sig: 'AAAA' }] }, [publicOf(a)]).state, 'bad-signature');
    assert.equal(verifyEnvelope(signEnvelope(INTOTO_PAYLOAD_TYPE, Buffer.from('{}')), [publicOf(a)]).state, 'unsigned');
    // URL-safe base64 is accepted (DSSE: verifiers MUST accept either alphabet).
    const urlSafe = { ...env, signatures: [{ sig: env.signatures[0]!.sig.replace(/\+/g, '-').replace(/\//g, '_') }] };
    assert.ok(EnvelopeSchema.safeParse(urlSafe).success);
    assert.equal(verifyEnvelope(urlSafe, [publicOf(a)]).state, 'signed');
  });

  it('reads keys that openssl makes; the key id is the SHA-256 of the public key DER; other keys are refused with one line', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-keys-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const priv = path.join(dir, 'drill.pem');
    const pub = path.join(dir, 'drill.pub');
    assert.equal((await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', priv])).code, 0);
    assert.equal((await run('openssl', ['pkey', '-in', priv, '-pubout', '-out', pub])).code, 0);
    assert.equal((await run('openssl', ['pkey', '-in', priv, '-pubout', '-outform', 'DER', '-out', `${pub}.der`])).code, 0);
    const signing = loadSigningKey(priv);
    const verifying = loadPublicKey(pub);
    assert.equal(signing.keyid, createHash('sha256').update(await readFile(`${pub}.der`)).digest('hex'));
    assert.equal(verifying.keyid, signing.keyid);
    assert.equal(loadPublicKey(priv).keyid, signing.keyid, 'a private key file gives its public half');
    assert.equal(verifyEnvelope(signEnvelope(INTOTO_PAYLOAD_TYPE, Buffer.from('{}'), signing), [verifying]).state, 'signed');

    const rsa = path.join(dir, 'rsa.pem');
    assert.equal((await run('openssl', ['genpkey', '-algorithm', 'rsa', '-pkeyopt', 'rsa_keygen_bits:1024', '-out', rsa])).code, 0);
    assert.throws(() => loadSigningKey(rsa), (err: Error) => err instanceof UsageError && /rsa key: drill evidence is signed with Ed25519/.test(err.message));
    assert.throws(() => loadSigningKey(pub), (err: Error) => err instanceof UsageError && /not a PEM private key/.test(err.message));
    assert.throws(() => loadSigningKey(path.join(dir, 'none.pem')), (err: Error) => err instanceof UsageError && /cannot read the signing key/.test(err.message));
    await writeFile(path.join(dir, 'junk.pub'), 'hello');
    assert.throws(() => loadPublicKey(path.join(dir, 'junk.pub')), (err: Error) => err instanceof UsageError && /not a PEM public key/.test(err.message));
  });
});

describe('drill statements and their check', () => {
  const sha = 'a'.repeat(64);
  const other = 'b'.repeat(64);
  const reportKey = 'drills/api/production/app/2026-Q4/app-20261201T000000Z-abcdef-drill-20261201T030000.000Z.json';
  const objectKey = 'api/production/app/app-20261201T000000Z-abcdef.dump.zst';
  const reportText = `${JSON.stringify({ tool: { name: 'pg-backup-actions', version: '0.1.0' }, ok: true, startedAt: '2026-12-01T03:00:00.000Z', rtoMs: 1234, backupId: 'app-20261201T000000Z-abcdef', tables: [{ schema: 'public', table: 'orders', expected: 3, actual: 3, ok: true }] }, null, 2)}\n`;

  async function bucket(t: { after: (fn: () => Promise<void>) => void }) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-evidence-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    return openStorage(`file://${dir}`);
  }

  it('the envelope holds an in-toto Statement v1 about the backup object, whose predicate is the stored report', () => {
    const key = freshKey();
    const line = drillEnvelopeLine(reportText, { subject: logicalSubject(objectKey, sha), signingKey: key });
    assert.ok(line.endsWith('\n') && !line.slice(0, -1).includes('\n'), 'one JSON line');
    const env = EnvelopeSchema.parse(JSON.parse(line));
    assert.equal(env.payloadType, 'application/vnd.in-toto+json');
    assert.equal(env.signatures[0]!.keyid, key.keyid);
    const statement = StatementSchema.parse(JSON.parse(Buffer.from(env.payload, 'base64').toString()));
    assert.equal(statement._type, STATEMENT_TYPE);
    assert.equal(statement._type, 'https://in-toto.io/Statement/v1');
    assert.deepEqual(statement.subject, [{ name: objectKey, digest: { sha256: sha } }]);
    assert.equal(statement.predicateType, DRILL_PREDICATE_TYPE);
    assert.deepEqual(statement.predicate, JSON.parse(reportText));
  });

  it('signed OK; UNSIGNED without envelope or signature; FORGED for another key or a changed report; WRONG SUBJECT for another digest or name', async (t) => {
    const storage = await bucket(t);
    const key = freshKey();
    const trust = { keys: [publicOf(key)] };
    const subject = logicalSubject(objectKey, sha);
    await storage.put(reportKey, reportText);

    assert.deepEqual(await checkDrillEvidence(storage, reportKey, reportText, subject, trust), { state: 'unsigned', ok: false, label: 'UNSIGNED', detail: 'no signed statement beside the report' });
    await storage.put(evidenceKeyOf(reportKey), drillEnvelopeLine(reportText, { subject }));
    assert.equal((await checkDrillEvidence(storage, reportKey, reportText, subject, trust)).label, 'UNSIGNED');

    await storage.put(evidenceKeyOf(reportKey), drillEnvelopeLine(reportText, { subject, signingKey: key }));
    const ok = await checkDrillEvidence(storage, reportKey, reportText, subject, trust);
    assert.equal(ok.label, 'signed OK');
    assert.equal(ok.keyid, key.keyid);

    // Signed by someone else (a writer of the bucket with their own key).
    await storage.put(evidenceKeyOf(reportKey), drillEnvelopeLine(reportText, { subject, signingKey: freshKey() }));
    assert.equal((await checkDrillEvidence(storage, reportKey, reportText, subject, trust)).label, 'FORGED (bad signature)');

    // A failed drill's report turned into a passing one, the signed statement left as it was.
    await storage.put(evidenceKeyOf(reportKey), drillEnvelopeLine(reportText, { subject, signingKey: key }));
    const tampered = reportText.replace('"rtoMs": 1234', '"rtoMs": 12');
    assert.notEqual(tampered, reportText);
    assert.equal((await checkDrillEvidence(storage, reportKey, tampered, subject, trust)).label, 'FORGED (report differs from its signed statement)');
    // Key order and whitespace are not a change.
    const reordered = JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(reportText) as object).reverse()));
    assert.equal((await checkDrillEvidence(storage, reportKey, reordered, subject, trust)).label, 'signed OK');

    // A statement about another backup object (another digest; the same digest under another name).
    await storage.put(evidenceKeyOf(reportKey), drillEnvelopeLine(reportText, { subject: logicalSubject(objectKey, other), signingKey: key }));
    const wrong = await checkDrillEvidence(storage, reportKey, reportText, subject, trust);
    assert.equal(wrong.label, 'WRONG SUBJECT');
    assert.match(wrong.detail!, new RegExp(`sha256 ${other}, the backup's manifest says ${sha}`));
    await storage.put(evidenceKeyOf(reportKey), drillEnvelopeLine(reportText, { subject: logicalSubject('api/production/app/other.dump.zst', sha), signingKey: key }));
    assert.equal((await checkDrillEvidence(storage, reportKey, reportText, subject, trust)).label, 'WRONG SUBJECT');

    // Garbage instead of an envelope.
    await storage.put(evidenceKeyOf(reportKey), 'not json\n');
    assert.equal((await checkDrillEvidence(storage, reportKey, reportText, subject, trust)).label, 'UNREADABLE');
  });

  it('a physical subject names the tool, stanza and label and digests the backup record', () => {
    const backup = { label: '20261202-092258F', type: 'full', startedAt: '2026-12-02T09:22:58Z', stoppedAt: '2026-12-02T09:23:10Z', walStart: '000000010000000000000003', walStop: '000000010000000000000003' };
    const s = physicalSubject('pgbackrest', 'main', backup);
    assert.equal(s.name, 'pgbackrest:main/20261202-092258F');
    assert.match(s.digest.sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(physicalSubject('pgbackrest', 'main', { ...backup }), s, 'the same record gives the same digest');
    assert.notEqual(physicalSubject('pgbackrest', 'main', { ...backup, walStop: '000000010000000000000004' }).digest.sha256, s.digest.sha256);
  });
});

