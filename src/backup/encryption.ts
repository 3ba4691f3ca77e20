import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Duplex } from 'node:stream';
import { UsageError, messageOf } from '../errors.ts';

/**
 * Client-side encryption with age (https://age-encryption.org/v1), through the `age-encryption`
 * library (typage, by age's author). The compressed dump is encrypted before it leaves the
 * machine, to one or more public recipients (`age1…`, as printed by `age-keygen -y`); only a
 * holder of a matching identity (`AGE-SECRET-KEY-1…`) can read it: the dump runner needs no
 * secret at all. Encrypted objects are ordinary age files: `age -d -i key.txt` decrypts them.
 */

type AgeLibrary = typeof import('age-encryption');
let ageLibrary: AgeLibrary | undefined;

/**
 * The `age-encryption` library, loaded on first use: it and its ciphers, curves and
 * post-quantum KEM (@noble/*) cost about 25 ms of CPU to load, which a run that neither
 * encrypts nor decrypts (nor checks a key) does not pay. Synchronous, as the key checks are:
 * in the bundles (dist/cli.js, actions/*\/dist) esbuild turns this `require` into the
 * initialisation of the bundled module; run from the sources, Node loads the ES module with
 * `require` (Node 22.12+).
 */
function age(): AgeLibrary {
  ageLibrary ??= (typeof require === 'function' ? require('age-encryption') : createRequire(import.meta.url)('age-encryption')) as AgeLibrary;
  return ageLibrary;
}

/** The file-name suffix of an age-encrypted object. */
export const AGE_SUFFIX = '.age';

/** How a backup was encrypted on the client, as recorded in the manifest (never a key). */
export interface ClientEncryption {
  scheme: 'age';
  /** The public recipients it was encrypted to. */
  recipients: string[];
}

/** A running encryption or decryption stage: write into `stream`, read from it. */
export interface CryptoStage {
  stream: Duplex;
  /** Settles when the stage finished; rejects with a one-line reason (e.g. no identity matched). */
  done: Promise<void>;
}

/**
 * Checks age recipients (`age1…` X25519 or post-quantum `age1pq1…` keys).
 * @throws UsageError naming the first malformed recipient.
 */
export function parseRecipients(values: string[]): string[] {
  const recipients = values.flatMap((v) => v.split(/[\s,]+/)).filter(Boolean);
  for (const r of recipients) {
    try {
      new (age().Encrypter)().addRecipient(r);
    } catch {
      throw new UsageError(`invalid age recipient ${JSON.stringify(r.length > 24 ? `${r.slice(0, 20)}…` : r)}: give a public key such as age1… (age-keygen -y key.txt prints it)`);
    }
  }
  return recipients;
}

/**
 * The identities (secret keys) of an age identity file's text: `AGE-SECRET-KEY-1…` lines;
 * blank lines and `#` comments are skipped (the format `age-keygen` writes).
 * @throws UsageError when there is none or one is malformed (the key itself is never printed).
 */
export function parseIdentities(text: string, source: string): string[] {
  const identities = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (identities.length === 0) throw new UsageError(`${source} holds no age identity: give the file age-keygen wrote (AGE-SECRET-KEY-1…)`);
  for (const [i, id] of identities.entries()) {
    try {
      new (age().Decrypter)().addIdentity(id);
    } catch {
      throw new UsageError(`${source}: line ${i + 1} is not an age identity (AGE-SECRET-KEY-1…)`);
    }
  }
  return identities;
}

/**
 * The age identities for reading encrypted backups: from `identityFile` if given, else the
 * `PG_BACKUP_AGE_IDENTITY` variable (the file's text), else `PG_BACKUP_AGE_IDENTITY_FILE`.
 * Undefined when none is configured.
 * @throws UsageError for an unreadable file or malformed identities.
 */
export function loadIdentities(identityFile?: string, env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const file = identityFile || (env.PG_BACKUP_AGE_IDENTITY ? undefined : env.PG_BACKUP_AGE_IDENTITY_FILE);
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read the age identity file ${file}: ${messageOf(err)}`);
    }
    return parseIdentities(text, file);
  }
  if (env.PG_BACKUP_AGE_IDENTITY) return parseIdentities(env.PG_BACKUP_AGE_IDENTITY, 'PG_BACKUP_AGE_IDENTITY');
  return undefined;
}

/** A Duplex whose writable side feeds `input` and whose readable side is `output`'s readable. */
function stage(build: (input: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>, what: string): CryptoStage {
  const input = new TransformStream<Uint8Array, Uint8Array>();
  const output = new TransformStream<Uint8Array, Uint8Array>();
  const done = build(input.readable).then(
    (readable) => readable.pipeTo(output.writable),
    async (err: unknown) => {
      await output.writable.abort(err).catch(() => undefined);
      throw err;
    },
  );
  const reason = done.catch((err: unknown) => Promise.reject(new Error(`${what}: ${messageOf(err)}`)));
  reason.catch(() => undefined);
  const stream = Duplex.fromWeb({ readable: output.readable, writable: input.writable });
  return { stream, done: reason };
}

/**
 * Encrypts a stream to `recipients` (age format, 64 KiB ChaCha20-Poly1305 chunks; memory stays
 * bounded). Throughput is that of a pure-JS cipher: about 85 MB/s of compressed stream per core
 * measured on this project's CI machine (see docs/performance.md).
 */
export function startEncrypt(recipients: string[]): CryptoStage {
  const e = new (age().Encrypter)();
  for (const r of recipients) e.addRecipient(r);
  return stage((input) => e.encrypt(input), 'age encryption failed');
}

/**
 * Decrypts an age stream with `identities`. Fails (in `done`) when no identity matches a
 * recipient of the file, or when the ciphertext was altered or cut short (each chunk is
 * authenticated, and the last one is marked).
 */
export function startDecrypt(identities: string[]): CryptoStage {
  const d = new (age().Decrypter)();
  for (const i of identities) d.addIdentity(i);
  return stage((input) => d.decrypt(input), 'age decryption failed');
}

/**
 * The identities needed to read a backup: none when it is not encrypted; else `given`, or those
 * of the environment ({@link loadIdentities}).
 * @throws UsageError when the backup is encrypted and no identity is configured (names its recipients).
 */
export function identitiesFor(encryption: ClientEncryption | undefined, given: string[] | undefined, what: string): string[] | undefined {
  if (!encryption) return undefined;
  const identities = given?.length ? given : loadIdentities();
  if (!identities?.length) {
    const to = encryption.recipients.map((r) => `${r.slice(0, 12)}…`).join(', ');
    throw new UsageError(`${what} is encrypted with age (to ${to}): give its identity with --age-identity-file or PG_BACKUP_AGE_IDENTITY`);
  }
  return identities;
}
