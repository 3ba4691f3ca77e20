import type { Readable } from 'node:stream';
import { listBackups, resolveBackup, type BackupFilter } from '../backup/catalog.ts';
import type { ClientEncryption } from '../backup/encryption.ts';
import { parseDuration } from '../duration.ts';
import { UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { checkLocation, openStorage, type S3Settings, type Storage } from '../storage/index.ts';

/**
 * Proof that the keys can be recovered. Two halves:
 * - a drill given only the break-glass (escrow) identity records which recipient opened the
 *   backup ({@link decryptionFacts}): a passing drill with it proves that identity decrypts;
 * - `verify --recipients --require-recipient age1…` ({@link verifyRecipients}) checks, without
 *   decrypting, that every backup in a window was encrypted to each required recipient.
 * An age header does not name X25519 recipients (a stanza holds an ephemeral share and the
 * wrapped file key, https://age-encryption.org/v1), so the second half can only check that the
 * manifest lists the recipient AND that the object's header holds as many recipient stanzas as
 * the manifest lists: a manifest edited to add a recipient after the dump is caught, a header
 * whose stanza was made for another key with the same count is not. Only a drill with the
 * escrow identity proves decryption (docs/evidence.md).
 */

/** What a drill of an encrypted backup records about its decryption. */
export interface DecryptionFacts {
  /** The public recipients (`age1…`) of the identities the drill was given. */
  identityRecipients: string[];
  /** The recipient whose identity opened the backup: known when the drill was given exactly one identity. */
  openedBy?: string;
  /** Whether `openedBy` is one of the recipients the manifest lists. */
  openedByListed?: boolean;
}

/**
 * The {@link DecryptionFacts} of a drill that decrypted with `identities` a backup encrypted as
 * `encryption` says. Plugin identities (no public recipient derivable) are named `(plugin)`.
 */
export async function decryptionFacts(identities: string[], encryption: ClientEncryption): Promise<DecryptionFacts> {
  // age-encryption (and @noble/*) is loaded here, by a drill that decrypted, not with this module.
  const { identityToRecipient } = await import('age-encryption');
  const identityRecipients = await Promise.all(identities.map((i) => identityToRecipient(i).catch(() => '(plugin)')));
  const openedBy = identityRecipients.length === 1 && identityRecipients[0] !== '(plugin)' ? identityRecipients[0] : undefined;
  return { identityRecipients, ...(openedBy ? { openedBy, openedByListed: encryption.recipients.includes(openedBy) } : {}) };
}

/** The most bytes read to find an age header's end (a header with hundreds of stanzas fits). */
const MAX_HEADER_BYTES = 256 * 1024;

/**
 * The recipient stanza types in an age file's header (`X25519`, `mlkem768x25519`, `scrypt`, …),
 * read from the start of `stream` up to the `---` line; the stream is destroyed after.
 * @throws Error when the stream does not start with an age v1 header or it is longer than 256 KiB.
 */
export async function ageHeaderStanzas(stream: Readable): Promise<string[]> {
  let text = '';
  try {
    for await (const chunk of stream) {
      text += Buffer.from(chunk as Uint8Array).toString('latin1');
      if (/\n---(?: |\n)/.test(text) || text.length > MAX_HEADER_BYTES) break;
    }
  } finally {
    stream.destroy();
  }
  const end = text.search(/\n---(?: |\n)/);
  if (!text.startsWith('age-encryption.org/v1\n')) throw new Error('not an age file (no "age-encryption.org/v1" header)');
  if (end < 0) throw new Error('the age header has no end ("---") within 256 KiB');
  return text
    .slice(0, end)
    .split('\n')
    .filter((l) => l.startsWith('-> '))
    .map((l) => l.slice(3).split(' ')[0]!);
}

/** Options of {@link verifyRecipients}. */
export interface RecipientsOptions {
  from: string;
  filter?: BackupFilter;
  /** `--require-recipient`: each backup must be encrypted to every one of these (`age1…`). */
  required: string[];
  /** `--since`: only backups started within this duration before now (`90d`); default all. */
  since?: string;
  s3?: S3Settings;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
}

/** The check of one backup. */
export interface BackupRecipients {
  id: string;
  uri: string;
  startedAt: string;
  ok: boolean;
  /** Recipients the manifest lists. */
  recipients: string[];
  /** Recipient stanzas in the object's header (for the directory format: its first file's). */
  headerStanzas?: number;
  problems: string[];
}

/** The outcome of {@link verifyRecipients}. */
export interface RecipientsResult {
  ok: boolean;
  reason?: string;
  backups: BackupRecipients[];
}

/**
 * Checks, without decrypting, that every complete backup in the window (the filter, `since`) was
 * encrypted client-side to each `required` recipient: the manifest lists it, and the object's
 * age header holds as many recipient stanzas as the manifest lists recipients (see the module
 * comment for what this does and does not prove). Reads each manifest and the first bytes of
 * each object. `ok` is false when a backup fails or none is in the window.
 * @throws UsageError for a malformed recipient or duration, or no `required` recipient.
 */
export async function verifyRecipients(options: RecipientsOptions): Promise<RecipientsResult> {
  if (options.required.length === 0) throw new UsageError('--recipients needs --require-recipient age1… (the escrow key\'s public recipient; age-keygen -y escrow.txt prints it)');
  for (const r of options.required) if (!/^age1[0-9a-z]+$/.test(r)) throw new UsageError(`--require-recipient ${JSON.stringify(r.length > 24 ? `${r.slice(0, 20)}…` : r)} is not an age recipient (age1…)`);
  const sinceMs = options.since ? parseDuration(options.since, '--since') : undefined;
  const now = (options.now ?? (() => new Date()))();
  const storage = openStorage(options.from, options.s3);
  await checkLocation(storage); // a wrong --from is a usage error (exit 2), not "no evidence"
  const entries = (await listBackups(storage, options.filter ?? {})).filter((e) => sinceMs === undefined || e.startedAt.getTime() >= now.getTime() - sinceMs);
  const backups: BackupRecipients[] = [];
  for (const entry of entries) {
    options.signal?.throwIfAborted();
    backups.push(await checkOne(storage, entry.manifestKey, options.required, options.signal));
  }
  const bad = backups.filter((b) => !b.ok);
  const window = sinceMs === undefined ? '' : ` in the last ${options.since}`;
  const reason = backups.length === 0 ? `no complete backup under ${storage.url}${window}` : bad.length ? `${bad.length} of ${backups.length} backup${backups.length > 1 ? 's' : ''}${window} not encrypted to every required recipient: ${bad.map((b) => `${b.id} (${b.problems.join('; ')})`).join(', ')}` : undefined;
  return { ok: !reason, ...(reason ? { reason } : {}), backups };
}

async function checkOne(storage: Storage, manifestKey: string, required: string[], signal?: AbortSignal): Promise<BackupRecipients> {
  let backup;
  try {
    backup = await resolveBackup(storage, manifestKey);
  } catch (err) {
    return { id: manifestKey, uri: storage.uri(manifestKey), startedAt: '', ok: false, recipients: [], problems: [`manifest unreadable: ${messageOf(err).split('\n')[0]}`] };
  }
  const { manifest } = backup;
  const out: BackupRecipients = { id: manifest.id, uri: storage.uri(backup.objectKey), startedAt: manifest.startedAt, ok: false, recipients: manifest.encryption?.recipients ?? [], problems: [] };
  if (!manifest.encryption) {
    out.problems.push('not encrypted client-side (no age recipients in its manifest)');
    return out;
  }
  for (const r of required) if (!manifest.encryption.recipients.includes(r)) out.problems.push(`not encrypted to ${r.slice(0, 16)}…`);
  const headerKey = manifest.format === 'directory' ? `${backup.objectKey}/${manifest.files?.[0]?.name ?? ''}` : backup.objectKey;
  try {
    const stanzas = await ageHeaderStanzas(await storage.get(headerKey, { signal, rangeBytes: 64 * 1024 }));
    out.headerStanzas = stanzas.length;
    if (stanzas.length !== manifest.encryption.recipients.length) out.problems.push(`its age header holds ${stanzas.length} recipient stanza${stanzas.length === 1 ? '' : 's'}, the manifest lists ${manifest.encryption.recipients.length} recipients`);
  } catch (err) {
    out.problems.push(`age header unreadable: ${messageOf(err).split('\n')[0]}`);
  }
  out.ok = out.problems.length === 0;
  return out;
}
