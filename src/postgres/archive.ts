import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { execa } from 'execa';
import type { ArchiveSink } from '../backup/readback.ts';
import { CheckFailedError } from '../errors.ts';
import { findPgBinary, type PgBinary } from './binaries.ts';
import { restoreClientFor } from './server-binaries.ts';
import type { DatabaseConnection } from './connection.ts';
import type { DumpFormat } from './dump-options.ts';
import { plainSqlGate, replayPlainFile, restrictedModeReason, type SqlReplay } from './plain-sql.ts';
import { messageOf } from '../errors.ts';
import { childInput, describeFailure, runPgProgram, type RunningProgram, type StderrLineFilter } from './processes.ts';

/**
 * Format-specific handling of a dump once it is back: custom and directory archives are read
 * and restored with `pg_restore`; plain SQL with `psql`.
 */

/** The programs that read a backup back: pg_restore always, psql for plain SQL dumps. */
export interface RestoreBinaries {
  pgRestore: PgBinary;
  psql?: PgBinary;
}

/**
 * Finds the programs that read `manifest`'s archive back: a pg_restore (and, for plain SQL, a
 * psql) at least as new as the pg_dump that wrote it — pg_restore refuses newer archive
 * formats, and a newer pg_dump's SQL may use settings an older psql session lacks. With
 * `targetMajor` (the server major restored into), the newest installed client from the pg_dump's
 * major up to `targetMajor` (server-binaries.ts `restoreClientFor`).
 * @throws UsageError naming the version needed and how to install it.
 */
export async function restoreBinaries(manifest: { format: DumpFormat; pgDump: { major: number; version: string } }, targetMajor?: number): Promise<RestoreBinaries> {
  const why = `reading an archive written by pg_dump ${manifest.pgDump.version}`;
  // With a known target major (an upgrade rehearsal): the newest client up to that major.
  const find = (program: 'pg_restore' | 'psql') =>
    targetMajor === undefined ? findPgBinary(program, manifest.pgDump.major, why) : restoreClientFor(program, manifest.pgDump.major, targetMajor, why);
  const pgRestore = await find('pg_restore');
  const psql = manifest.format === 'plain' ? await find('psql') : undefined;
  return { pgRestore, psql };
}

function needPsql(bins: RestoreBinaries): PgBinary {
  if (!bins.psql) throw new Error('psql was not looked up for a plain SQL dump (a bug)');
  return bins.psql;
}

export { PLAIN_TRAILER } from './plain-sql.ts';
import { PLAIN_TRAILER } from './plain-sql.ts';

/** psql replaying plain SQL from its stdin into `target`, in one transaction, stopping at the first error. */
function psqlReplay(psql: PgBinary, target: DatabaseConnection, signal?: AbortSignal): SqlReplay {
  const p = runPgProgram(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', '-'], { connection: target, signal, stdin: 'pipe', stdout: 'ignore' });
  const done = p.done.catch((err: unknown) => {
    const restricted = restrictedModeReason(messageOf(err));
    throw restricted ? new Error(restricted) : err;
  });
  done.catch(() => undefined);
  return { stdin: p.stdin, done, stop: p.kill };
}

/**
 * A sink that reads a whole archive without restoring it. custom: `pg_restore --file=/dev/null`
 * (reads every data block, exits 1 on a truncated archive). plain: checks that the SQL ends with
 * pg_dump's completion trailer (a truncated dump lacks it).
 */
export function readArchiveSink(format: DumpFormat, pgRestore: PgBinary, signal?: AbortSignal): ArchiveSink {
  if (format === 'plain') {
    let settle: (err?: Error) => void;
    const done = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(err) : resolve());
    });
    done.catch(() => undefined);
    let tail = '';
    const stream = new Writable({
      write(chunk: Buffer, _enc, callback) {
        tail = (tail + chunk.toString('latin1')).slice(-4096);
        callback();
      },
      final(callback) {
        const err = tail.includes(PLAIN_TRAILER) ? undefined : new Error(`the SQL does not end with "${PLAIN_TRAILER}": the dump is truncated`);
        settle(err);
        callback(err);
      },
      destroy(err, callback) {
        settle(new Error('the SQL read was stopped before the end'));
        callback(err);
      },
    });
    return { stream, done };
  }
  return programSink(runPgProgram(pgRestore, ['--file=/dev/null'], { signal, stdin: 'pipe', stdout: 'ignore' }), 'pg_restore');
}

/** A program reading its stdin as an {@link ArchiveSink} (see `childInput` for how it stops). */
function programSink(p: RunningProgram, program: string, mayStopReading = false): ArchiveSink {
  return { stream: childInput({ ...p, program }, { mayStopReading }), done: p.done };
}

/**
 * A sink that restores a stream into `target`: a custom archive through `pg_restore
 * --exit-on-error` (with `args`), streamed; plain SQL through `psql -v ON_ERROR_STOP=1
 * --single-transaction` in restricted mode, and only once all of it was read and the read-back
 * found it matching its manifest (plain-sql.ts `plainSqlGate`: held in memory or spooled under
 * `workDir` until then). When the pipeline feeding it fails, the program is killed before its
 * input is closed, so a cut stream is never taken for a complete one.
 */
export function restoreSink(format: DumpFormat, bins: RestoreBinaries, target: DatabaseConnection, args: string[], signal?: AbortSignal, workDir?: string): ArchiveSink {
  return format === 'plain'
    ? plainSqlGate(() => psqlReplay(needPsql(bins), target, signal), { workDir })
    : // --schema-only: pg_restore exits 0 once the schema is in, without reading the data blocks.
      programSink(runPgProgram(bins.pgRestore, ['--exit-on-error', ...args], { connection: target, signal, stdin: 'pipe', stdout: 'ignore' }), 'pg_restore', args.includes('--schema-only'));
}

/**
 * Restores a local archive (a file, or a directory for the directory format) into `target`.
 * `jobs` applies to custom and directory archives. Plain SQL, already checked against its
 * manifest, is replayed by psql in restricted mode (plain-sql.ts `replayPlainFile`). With
 * `verboseLines`, pg_restore runs with --verbose and its progress lines go to that filter
 * (restore-progress.ts), not into the failure's message. Resolves on success; rejects with the program's one-line failure, or a `PlainSqlRefusal`.
 */
export async function restoreLocalArchive(
  format: DumpFormat,
  bins: RestoreBinaries,
  archive: string,
  target: DatabaseConnection,
  options: { jobs?: number; args?: string[]; signal?: AbortSignal; verboseLines?: StderrLineFilter },
): Promise<void> {
  if (format === 'plain') return replayPlainFile(archive, () => psqlReplay(needPsql(bins), target, options.signal), options.signal);
  const verbose = options.verboseLines ? ['--verbose'] : [];
  const p = runPgProgram(bins.pgRestore, ['--exit-on-error', ...verbose, ...(options.args ?? []), `--jobs=${options.jobs ?? 1}`, archive], { connection: target, signal: options.signal, stdout: 'ignore', stderrLines: options.verboseLines });
  await p.done;
}

/**
 * The database a custom or directory archive was dumped from: the `;     dbname: NAME` line of
 * `pg_restore --list`'s header (pg_backup_archiver.c, PrintTOCSummary). `pg_restore --create`
 * creates the database under this name, whatever a manifest says. Undefined when the header has
 * no such line.
 * @throws CheckFailedError when the TOC is unreadable.
 */
export async function archiveDatabaseName(pgRestore: PgBinary, archive: string, signal?: AbortSignal): Promise<string | undefined> {
  const listed = await execa(pgRestore.path, ['--list', archive], { reject: false, cancelSignal: signal });
  signal?.throwIfAborted();
  if (listed.exitCode !== 0) throw new CheckFailedError(`the archive's TOC is unreadable: ${describeFailure('pg_restore --list', listed)}`);
  return /^;\s+dbname: (.*)$/m.exec(listed.stdout)?.[1];
}

/** Extensions a local archive creates: from the TOC (`pg_restore --list`), or the `CREATE EXTENSION` lines of plain SQL. */
export async function archiveExtensions(format: DumpFormat, pgRestore: PgBinary, archive: string, signal?: AbortSignal): Promise<string[]> {
  const names = new Set<string>();
  if (format === 'plain') {
    const lines = createInterface({ input: createReadStream(archive), crlfDelay: Infinity });
    for await (const line of lines) {
      signal?.throwIfAborted();
      const m = /^CREATE EXTENSION (?:IF NOT EXISTS )?("(?:[^"]|"")+"|[^\s;]+)/.exec(line);
      if (m) names.add(m[1]!.replace(/^"(.*)"$/, '$1').replace(/""/g, '"'));
    }
  } else {
    const listed = await execa(pgRestore.path, ['--list', archive], { reject: false, cancelSignal: signal });
    signal?.throwIfAborted();
    if (listed.exitCode !== 0) throw new CheckFailedError(`the archive's TOC is unreadable: ${describeFailure('pg_restore --list', listed)}`);
    for (const line of listed.stdout.split('\n')) {
      const m = /^\d+; \d+ \d+ EXTENSION - (\S+)/.exec(line);
      if (m) names.add(m[1]!);
    }
  }
  return [...names].sort();
}
