import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { UsageError, messageOf } from '../errors.ts';

/**
 * DSSE, the Dead Simple Signing Envelope (https://github.com/secure-systems-lab/dsse,
 * protocol.md and envelope.md, v1.0.0), with Ed25519 keys through Node's crypto. The signature
 * covers PAE(payloadType, payload), so neither the payload nor its type can be swapped under a
 * signature. Keys are PEM files as `openssl genpkey -algorithm ed25519` writes them (private)
 * and `openssl pkey -pubout` derives (public); a key's id is the SHA-256 (hex) of its public
 * key's DER SubjectPublicKeyInfo.
 */

/** The payload type of an in-toto statement (in-toto attestation framework, envelope.md). */
export const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

/** Standard or URL-safe base64, padded or not (DSSE: verifiers MUST accept either). */
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** A DSSE JSON envelope. `signatures` is empty for an unsigned envelope (this tool writes one when no key is given). */
export const EnvelopeSchema = z.object({
  payloadType: z.string().min(1),
  /** base64 of the serialized body. */
  payload: z.string().regex(BASE64, 'not base64'),
  signatures: z.array(z.object({ keyid: z.string().optional(), sig: z.string().regex(BASE64, 'not base64').min(1) })),
});

/** A parsed DSSE envelope. */
export type Envelope = z.infer<typeof EnvelopeSchema>;

/**
 * The Pre-Authentication Encoding: `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where
 * LEN is the ASCII decimal byte length without leading zeros and `type` is UTF-8.
 */
export function pae(payloadType: string, body: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${body.length} `), body]);
}

/** An Ed25519 private key ready to sign, with the id of its public key. */
export interface SigningKey {
  privateKey: KeyObject;
  keyid: string;
}

/** An Ed25519 public key trusted to verify, with its id. */
export interface VerifyingKey {
  publicKey: KeyObject;
  keyid: string;
}

/** The key id: SHA-256 (hex) of the public key's DER SubjectPublicKeyInfo. */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

function readKeyFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read the ${what} ${file}: ${messageOf(err)}`);
  }
}

/**
 * Reads an Ed25519 private key (PEM, PKCS#8: `openssl genpkey -algorithm ed25519 -out key.pem`).
 * @throws UsageError when the file is unreadable, not a private key, or not Ed25519 (the key itself is never printed).
 */
export function loadSigningKey(file: string): SigningKey {
  return parseSigningKey(readKeyFile(file, 'signing key'), file);
}

/**
 * An Ed25519 private key from its PEM text (`source` names it in messages: a file, an input).
 * @throws UsageError when it is not a PEM private key or not Ed25519 (the key itself is never printed).
 */
export function parseSigningKey(text: string, source: string): SigningKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(text);
  } catch {
    throw new UsageError(`${source} is not a PEM private key: make one with "openssl genpkey -algorithm ed25519 -out drill-signing.pem"`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new UsageError(`${source} is a ${privateKey.asymmetricKeyType} key: drill evidence is signed with Ed25519 ("openssl genpkey -algorithm ed25519")`);
  return { privateKey, keyid: keyIdOf(createPublicKey(privateKey)) };
}

/**
 * Reads an Ed25519 public key (PEM SubjectPublicKeyInfo: `openssl pkey -in key.pem -pubout`);
 * a private key file is accepted too (its public half is used).
 * @throws UsageError when the file is unreadable or holds no Ed25519 key.
 */
export function loadPublicKey(file: string): VerifyingKey {
  const text = readKeyFile(file, 'public key');
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(text);
  } catch {
    throw new UsageError(`${file} is not a PEM public key: derive it with "openssl pkey -in drill-signing.pem -pubout -out drill-signing.pub"`);
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new UsageError(`${file} is a ${publicKey.asymmetricKeyType} key: drill evidence is verified with Ed25519 keys`);
  return { publicKey, keyid: keyIdOf(publicKey) };
}

/** Wraps `body` in an envelope of `payloadType`, signed with `key` (`signatures: []` without one). */
export function signEnvelope(payloadType: string, body: Uint8Array, key?: SigningKey): Envelope {
  const signatures = key ? [{ keyid: key.keyid, sig: sign(null, pae(payloadType, body), key.privateKey).toString('base64') }] : [];
  return { payloadType, payload: Buffer.from(body).toString('base64'), signatures };
}

/** The verdict on an envelope's signatures: `signed` (one verifies with a trusted key), `unsigned` (none at all), `bad-signature` (some, none verifies). */
export type SignatureState = 'signed' | 'unsigned' | 'bad-signature';

/**
 * Checks an envelope's signatures against trusted keys (DSSE protocol, threshold 1): the
 * `keyid` is only a hint, every signature is tried with every key. The payload type is checked
 * by the caller (it must be one the caller supports).
 * @returns the state, the decoded payload, and the id of the key that verified.
 */
export function verifyEnvelope(envelope: Envelope, keys: VerifyingKey[]): { state: SignatureState; payload: Buffer; keyid?: string } {
  const payload = Buffer.from(envelope.payload, 'base64');
  if (envelope.signatures.length === 0) return { state: 'unsigned', payload };
  const message = pae(envelope.payloadType, payload);
  for (const s of envelope.signatures) {
    const sig = Buffer.from(s.sig, 'base64');
    for (const k of keys) {
      let ok = false;
      try {
        ok = verify(null, message, k.publicKey, sig);
      } catch {
        ok = false; // a malformed signature is a bad one
      }
      if (ok) return { state: 'signed', payload, keyid: k.keyid };
    }
  }
  return { state: 'bad-signature', payload };
}
