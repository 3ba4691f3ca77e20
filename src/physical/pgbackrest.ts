import path from 'node:path';
import { execa } from 'execa';
import { z } from 'zod';
import { CheckFailedError, UsageError, redact } from '../errors.ts';
import type { ArchiveFacts, PhysicalBackup, PhysicalDriver, RepositoryVerification, RestoreOutcome, RestoreRequest } from './driver.ts';
import { pgbackrestTime } from './target-time.ts';

/** Options of {@link PgBackRestDriver}. */
export interface PgBackRestOptions {
  /** The stanza (`--stanza`). */
  stanza: string;
  /** The user's pgBackRest configuration file (`--config`); default: pgBackRest's own (`/etc/pgbackrest/pgbackrest.conf`, `PGBACKREST_CONFIG`). */
  config?: string;
  /** Run pgBackRest as this OS user (uid/gid) — the PostgreSQL user when the tool runs as root. */
  user?: { uid: number; gid: number };
  /** The program; default `pgbackrest` on PATH. */
  bin?: string;
}

/** The result of one pgBackRest run. */
interface PgBackRestRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

const STANZA = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** `pgbackrest info --output=json`, the fields the drill reads (pgBackRest command reference, "Info Command"). */
const InfoSchema = z.array(
  z.object({
    name: z.string(),
    status: z.object({ code: z.number(), message: z.string() }),
    db: z.array(z.object({ id: z.number(), version: z.string(), 'repo-key': z.number().optional() })).default([]),
    archive: z.array(z.object({ id: z.string(), min: z.string().nullable().optional(), max: z.string().nullable().optional(), database: z.object({ id: z.number(), 'repo-key': z.number().optional() }).optional() })).default([]),
    backup: z
      .array(
        z.object({
          label: z.string(),
          type: z.string(),
          error: z.boolean().optional(),
          timestamp: z.object({ start: z.number(), stop: z.number() }),
          archive: z.object({ start: z.string().nullable().optional(), stop: z.string().nullable().optional() }).optional(),
          database: z.object({ id: z.number(), 'repo-key': z.number().optional() }).optional(),
        }),
      )
      .default([]),
  }),
);

/**
 * pgBackRest's own reason for a failure, in one line: the message of its first `ERROR: [NNN]:`
 * line (continuation lines such as `[FormatError] on retry after 15000ms` dropped; a `HINT:`
 * kept), else the last non-empty output line. Secrets are redacted.
 */
export function pgbackrestReason(output: string): string | undefined {
  const lines = output.split('\n');
  const at = lines.findIndex((l) => /ERROR: \[\d+\]:/.test(l));
  if (at >= 0) {
    let reason = lines[at]!.replace(/^.*?ERROR: \[(\d+)\]: */, '').trim();
    const hint = lines.slice(at + 1, at + 6).find((l) => /^\s+HINT: /.test(l));
    if (hint) reason += ` (${hint.trim()})`;
    return redact(reason);
  }
  const last = lines.map((l) => l.trim()).filter(Boolean).at(-1);
  return last ? redact(last) : undefined;
}

/** The WAL segment number of a 24-hex-digit segment name, for a segment size in bytes (default 16 MiB). */
export function walSegmentNumber(name: string, segmentBytes = 16 * 1024 * 1024): bigint {
  const perLog = 0x1_0000_0000n / BigInt(segmentBytes);
  return BigInt(`0x${name.slice(8, 16)}`) * perLog + BigInt(`0x${name.slice(16, 24)}`);
}

/** The name of WAL segment `segNo` on `timeline` (PostgreSQL's XLogFileName). */
export function walSegmentName(timeline: number, segNo: bigint, segmentBytes = 16 * 1024 * 1024): string {
  const perLog = 0x1_0000_0000n / BigInt(segmentBytes);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(segNo / perLog)}${hex(segNo % perLog)}`;
}

/**
 * The pgBackRest driver of the physical drill. Every command runs `pgbackrest` with the user's
 * configuration (`--config`, `PGBACKREST_*` variables pass through) and the stanza; the only
 * options it adds are those that make the restore throwaway: `--pg1-path` (the drill's data
 * directory), `--reset-pg1-host` (restore here, never on the source's host),
 * `--tablespace-map-all` (tablespaces inside the drill's directory, never over the source's),
 * `--archive-mode=off` (the restored server pushes no WAL into the repository), and the recovery
 * target (`--type=time --target=… --target-action=promote`, or `--type=default`: the end of the
 * archive). It runs `info`, `repo-ls`, `restore`, `archive-get` and `verify`: none writes to the
 * repository. Source: pgBackRest 2.45 command reference (restore, info, repo-ls, verify).
 */
export class PgBackRestDriver implements PhysicalDriver {
  readonly tool = 'pgbackrest';
  readonly scope: string;
  private readonly options: PgBackRestOptions;

  /** @throws UsageError for a stanza name pgBackRest would not accept. */
  constructor(options: PgBackRestOptions) {
    if (!STANZA.test(options.stanza)) throw new UsageError(`--pgbackrest-stanza ${JSON.stringify(options.stanza)} is not a stanza name: use letters, digits, ".", "_" or "-", as in pgbackrest.conf's [section]`);
    this.options = options;
    this.scope = options.stanza;
  }

  describe(): string {
    return `pgBackRest stanza "${this.options.stanza}"`;
  }

  /** Runs pgbackrest `command` with the configuration and stanza, never rejecting on its exit code. */
  private async run(command: string, args: string[], options: { signal?: AbortSignal; cwd?: string; stanza?: boolean; positional?: string[] } = {}): Promise<PgBackRestRun> {
    const base = [...(this.options.config ? [`--config=${this.options.config}`] : []), ...(options.stanza === false ? [] : [`--stanza=${this.options.stanza}`])];
    try {
      const r = await execa(this.options.bin ?? 'pgbackrest', [...base, ...args, command, ...(options.positional ?? [])], {
        ...(this.options.user ?? {}),
        cwd: options.cwd ?? '/',
        reject: false,
        cancelSignal: options.signal,
        forceKillAfterDelay: 5_000,
        stdin: 'ignore',
        maxBuffer: 64 * 1024 * 1024,
      });
      if (r.isCanceled) throw options.signal?.reason ?? new Error('cancelled');
      if ((r as { code?: string }).code === 'ENOENT' || (r.failed && r.exitCode === undefined && /ENOENT/.test(String(r.message)))) {
        throw new UsageError('pgbackrest is not installed: install it (apt-get install pgbackrest) on the drill machine, next to the repository');
      }
      return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') throw new UsageError('pgbackrest is not installed: install it (apt-get install pgbackrest) on the drill machine, next to the repository');
      throw err;
    }
  }

  /** Throws the one-line reason of a failed run. */
  private failed(what: string, r: PgBackRestRun): never {
    throw new CheckFailedError(`pgBackRest ${what} failed: ${pgbackrestReason(`${r.stderr}\n${r.stdout}`) ?? `exit code ${r.exitCode}`}`);
  }

  async version(signal?: AbortSignal): Promise<string> {
    const r = await this.run('version', [], { signal, stanza: false });
    if (r.exitCode !== 0) this.failed('version', r);
    return r.stdout.trim();
  }

  async inspect(signal?: AbortSignal): Promise<ArchiveFacts> {
    const r = await this.run('info', ['--output=json'], { signal });
    if (r.exitCode !== 0) this.failed('info', r);
    let info: z.infer<typeof InfoSchema>;
    try {
      info = InfoSchema.parse(JSON.parse(r.stdout));
    } catch {
      throw new CheckFailedError(`pgBackRest info printed no stanza report that this tool can read: ${r.stdout.slice(0, 200)}`);
    }
    const stanza = info.find((s) => s.name === this.options.stanza);
    if (!stanza) throw new CheckFailedError(`pgBackRest info does not know stanza "${this.options.stanza}"`);
    if (stanza.status.code !== 0 && stanza.status.code !== 2) {
      throw new CheckFailedError(`pgBackRest stanza "${this.options.stanza}": ${stanza.status.message} (info status ${stanza.status.code})`);
    }
    const backups: PhysicalBackup[] = stanza.backup
      .filter((b) => !b.error)
      .sort((a, b) => a.timestamp.stop - b.timestamp.stop)
      .map((b) => ({
        label: b.label,
        type: b.type,
        startedAt: new Date(b.timestamp.start * 1000).toISOString(),
        stoppedAt: new Date(b.timestamp.stop * 1000).toISOString(),
        walStart: b.archive?.start ?? undefined,
        walStop: b.archive?.stop ?? undefined,
      }));
    const db = stanza.db.at(-1);
    if (!db) throw new CheckFailedError(`pgBackRest stanza "${this.options.stanza}" has no database history: run stanza-create and a backup first`);
    // The archive of the current database (the newest db id); across repositories, the newest segment.
    const archives = stanza.archive.filter((a) => a.max && (a.database?.id ?? db.id) === db.id);
    const newest = archives.reduce<(typeof archives)[number] | undefined>((best, a) => (!best || a.max!.slice(8) > best.max!.slice(8) || (a.max!.slice(8) === best.max!.slice(8) && a.max! > best.max!) ? a : best), undefined);
    const oldest = archives.map((a) => a.min).filter((m): m is string => Boolean(m)).sort((a, b) => (a.slice(8) < b.slice(8) ? -1 : 1))[0];
    const facts: ArchiveFacts = { pgMajor: Number.parseInt(db.version, 10), backups, oldestWal: oldest, newestWal: newest?.max ?? undefined };
    if (newest?.max) facts.newestWalArchivedAt = await this.archivedAt(newest.id, newest.max, newest.database?.['repo-key'], signal);
    return facts;
  }

  /** When WAL segment `name` was archived: its object's time from `repo-ls` (undefined when pgBackRest cannot tell). */
  private async archivedAt(archiveId: string, name: string, repoKey: number | undefined, signal?: AbortSignal): Promise<Date | undefined> {
    const dir = `archive/${this.options.stanza}/${archiveId}/${name.slice(0, 16)}`;
    const r = await this.run('repo-ls', ['--output=json', `--filter=^${name}`, ...(repoKey ? [`--repo=${repoKey}`] : [])], { signal, stanza: false, positional: [dir] });
    if (r.exitCode !== 0) return undefined;
    try {
      const entries = JSON.parse(r.stdout) as Record<string, { type: string; time?: number }>;
      const times = Object.values(entries).filter((e) => e.type === 'file' && typeof e.time === 'number').map((e) => e.time!);
      return times.length ? new Date(Math.max(...times) * 1000) : undefined;
    } catch {
      return undefined;
    }
  }

  async restore(request: RestoreRequest): Promise<RestoreOutcome> {
    const target =
      request.target.type === 'time' ? ['--type=time', `--target=${pgbackrestTime(request.target.at)}`, '--target-action=promote'] : ['--type=default'];
    const args = [
      `--pg1-path=${request.dataDir}`,
      '--reset-pg1-host',
      `--tablespace-map-all=${request.tablespaceDir}`,
      '--archive-mode=off',
      '--log-level-console=info',
      ...target,
    ];
    const r = await this.run('restore', args, { signal: request.signal, cwd: path.dirname(request.dataDir) });
    for (const line of `${r.stdout}\n${r.stderr}`.split('\n')) if (line.trim() && !/ P\d\d +DETAIL: /.test(line)) request.onLine?.(line.replace(/^\S+ \S+ P\d\d +/, '').trim());
    if (r.exitCode !== 0) this.failed('restore', r);
    return { backupLabel: /restore backup set (\S+?),/.exec(r.stdout)?.[1] };
  }

  serverEnv(): Record<string, string> {
    // archive-get of the restored server: never the asynchronous mode, whose spool directory the
    // source cluster (or its standby) may share.
    return { PGBACKREST_ARCHIVE_ASYNC: 'n' };
  }

  credentialFiles(): string[] {
    // pgBackRest's configuration: --config, else PGBACKREST_CONFIG, else its default (pgBackRest
    // configuration reference, "config"); and the include path's files are read too.
    return [this.options.config ?? process.env.PGBACKREST_CONFIG ?? '/etc/pgbackrest/pgbackrest.conf'];
  }

  async explainMissingWal(segment: string, dataDir: string, signal?: AbortSignal): Promise<string | undefined> {
    const dir = path.dirname(dataDir);
    const r = await this.run('archive-get', ['--log-level-console=info', '--archive-async=n', `--pg1-path=${dataDir}`, '--reset-pg1-host'], { signal, cwd: dir, positional: [segment, path.join(dir, `probe-${segment}`)] });
    if (r.exitCode === 0) return undefined;
    const text = `${r.stdout}\n${r.stderr}`;
    const notFound = /unable to find \S+ in the archive.*/.exec(text)?.[0];
    return redact(notFound ?? pgbackrestReason(text) ?? `archive-get exit code ${r.exitCode}`);
  }

  async verifyRepository(signal?: AbortSignal): Promise<RepositoryVerification> {
    // pgBackRest 2.45's verify exits 0 even when it finds damage: read its report instead.
    const r = await this.run('verify', ['--log-level-console=detail'], { signal });
    const text = `${r.stdout}\n${r.stderr}`;
    if (r.exitCode !== 0) return { ok: false, problems: [`pgBackRest verify failed: ${pgbackrestReason(text) ?? `exit code ${r.exitCode}`}`] };
    const problems: string[] = [];
    for (const m of text.matchAll(/INFO: (invalid checksum|invalid size|file missing|invalid result|invalid checksum or size) '?([^'\n]*)'?/g)) problems.push(`pgBackRest verify: ${m[1]} ${m[2]}`);
    for (const m of text.matchAll(/^\s+backup: (\S+), status: (?!valid)([^,\n]+)(.*)$/gm)) problems.push(`pgBackRest verify: backup ${m[1]} ${m[2]}${m[3]}`);
    // WAL ranges per archive id: two ranges on one timeline mean segments are missing between them.
    const ranges = [...text.matchAll(/archiveId: (\S+), wal start: ([0-9A-F]{24}), wal stop: ([0-9A-F]{24})/g)].map((m) => ({ id: m[1]!, start: m[2]!, stop: m[3]! }));
    for (let i = 1; i < ranges.length; i++) {
      const [a, b] = [ranges[i - 1]!, ranges[i]!];
      if (a.id === b.id && a.stop.slice(0, 8) === b.start.slice(0, 8)) problems.push(`pgBackRest verify: WAL missing in archive ${a.id} between ${a.stop} and ${b.start}`);
    }
    if (/status: error/.test(text) && problems.length === 0) problems.push('pgBackRest verify reports status: error');
    return { ok: problems.length === 0, problems };
  }
}
