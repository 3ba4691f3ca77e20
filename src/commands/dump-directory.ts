import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import type { Manifest } from '../backup/manifest.ts';
import { mapLimit } from '../map-limit.ts';
import { uploadStream, type MirrorTarget, type StreamCounters } from '../backup/upload-stream.ts';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { PgBinary } from '../postgres/binaries.ts';
import { workDirOf } from '../postgres/cluster.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { runPgProgram } from '../postgres/processes.ts';
import type { DumpPlan } from './dump-plan.ts';
import { formatBytes } from '../format.ts';

/** A stored file of a directory backup (with its MD5 for an `.md5` sidecar). */
export type StoredFile = NonNullable<Manifest['files']>[number] & { md5?: string };

/**
 * The directory format: `pg_dump --format=directory --compress=0 --jobs N` into a spool
 * directory, then each file compressed and uploaded to `<folder>/<file><suffix>` (4 at a time).
 * On failure, the files already uploaded are deleted when the credentials allow it (without a
 * manifest they are never listed or restored either way), and the spool is always removed.
 */
export async function dumpDirectory(
  plan: DumpPlan,
  session: { pgDump: PgBinary; conn: DatabaseConnection; server: { databaseSizeBytes: number } },
  o: {
    /** pg_dump's arguments: the selection, the snapshot. */
    args: string[];
    /** The backup's folder key, `<id>.dir`. */
    folder: string;
    signal: AbortSignal;
    logger: Logger;
    mirrors: MirrorTarget[];
    onSpool: (bytes: () => number) => void;
    onCounters: (c: StreamCounters) => void;
    onMirrorErrors: (errors: unknown[]) => void;
  },
): Promise<{ storedBytes: number; rawBytes: number; sha256: string; files: StoredFile[] }> {
  const sizeHint = session.server.databaseSizeBytes;
  const parent = workDirOf(plan.workDir);
  const spool = await mkdtemp(path.join(parent, 'pg-backup-dump-'));
  const dir = path.join(spool, 'archive');
  const uploaded: string[] = [];
  o.onSpool(() => {
    try {
      return readdirSync(dir).reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
    } catch {
      return 0;
    }
  });
  try {
    o.logger.info(`spooling the directory archive in ${spool} with ${plan.jobs} job${plan.jobs > 1 ? 's' : ''} (needs about ${formatBytes(sizeHint)} free)`);
    await runPgProgram(session.pgDump, ['--format=directory', '--compress=0', `--jobs=${plan.jobs}`, `--file=${dir}`, ...o.args], { connection: session.conn, signal: o.signal, stdout: 'ignore' }).done.catch((err: unknown) => {
      const text = messageOf(err);
      throw new Error(/No space left on device/i.test(text) ? `${parent} ran out of space spooling the directory archive (about ${formatBytes(sizeHint)} needed): choose another --work-dir. ${text}` : text);
    });
    const names = (await readdir(dir)).sort();
    // The first failed file stops its siblings; every upload has settled before we clean up.
    const siblings = new AbortController();
    const signal = AbortSignal.any([o.signal, siblings.signal]);
    const files = await mapLimit(names, 4, async (name) => {
      const key = `${o.folder}/${name}${plan.fileSuffix}`;
      try {
        const s = await uploadStream(plan.storage, key, () => {
          const stream = createReadStream(path.join(dir, name));
          return { stream, done: finished(stream) };
        }, { compression: plan.compression, hashes: [...plan.hashes], signal, sizeHintBytes: statSync(path.join(dir, name)).size, onCounters: o.onCounters, encryptTo: plan.encryptTo && [...plan.encryptTo], noOverwrite: true, mirrors: o.mirrors, mirrorStallMs: plan.mirrorStallMs });
        o.onMirrorErrors(s.mirrorErrors);
        uploaded.push(key);
        return { name, sizeBytes: s.storedBytes, sha256: s.digests.sha256!, md5: s.digests.md5, archiveSizeBytes: s.rawBytes };
      } catch (err) {
        siblings.abort(err);
        throw err;
      }
    });
    const listing = files.map((f) => `${f.sha256}  ${f.name}\n`).join('');
    return {
      storedBytes: files.reduce((n, f) => n + f.sizeBytes, 0),
      rawBytes: files.reduce((n, f) => n + f.archiveSizeBytes, 0),
      sha256: createHash('sha256').update(listing).digest('hex'),
      files,
    };
  } catch (err) {
    const left: string[] = [];
    for (const key of uploaded) await plan.storage.delete(key).catch(() => left.push(key));
    if (left.length) o.logger.warn(`${left.length} file(s) of the failed directory backup remain under ${plan.storage.uri(o.folder)}/ (no delete permission); without a manifest they are never listed or restored`);
    throw err;
  } finally {
    await rm(spool, { recursive: true, force: true });
  }
}
