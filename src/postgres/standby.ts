import type pg from 'pg';
import { messageOf } from '../errors.ts';
import { formatSeconds } from '../format.ts';
import type { Logger } from '../log.ts';
import type { DatabaseConnection } from './connection.ts';
import { connect } from './server.ts';

// Dumping from a hot standby (a read replica). A standby replays the primary's WAL while the dump
// reads; when replay must remove row versions the dump's snapshot still sees (the primary's
// VACUUM) or take a lock the dump holds against (DROP, TRUNCATE, a VACUUM truncating a table),
// it waits max_standby_streaming_delay (max_standby_archive_delay for WAL from the archive) and
// then cancels the dump's queries: SQLSTATE 40001, "canceling statement due to conflict with
// recovery" (PostgreSQL docs 27.4.2, "Handling Query Conflicts"). Paused replay conflicts with
// nothing, so a role that may pause it (pg_wal_replay_pause / pg_wal_replay_resume, docs 9.27.4,
// "Recovery Control Functions") gets a dump that cannot be cancelled this way; the replica lags
// for the dump's duration and catches up once replay resumes.

/** What the manifest records of a backup taken on a hot standby (`standby`). */
export interface StandbyRecord {
  /** `pg_last_wal_replay_lsn()` read right after the dump's snapshot was taken, e.g. `0/3442000`: the data is the primary's as of this WAL position. */
  replayLsn?: string;
  /** `pg_last_xact_replay_timestamp()` at the same moment (UTC, ISO 8601): the commit time, on the primary, of the last transaction the snapshot holds. */
  lastReplayedAt?: string;
  /** Replay was paused while the snapshot was in use (so no recovery conflict could cancel the dump). */
  replayPaused: boolean;
  /** Who paused it: `pg-backup` (paused for the dump and resumed after) or `other` (found paused and left paused). */
  pausedBy?: 'pg-backup' | 'other';
}

/** The standby's settings that bound a dump whose snapshot replay may conflict with, as `SHOW` prints them (`30s`, `-1`, `on`). */
export interface StandbySettings {
  maxStandbyStreamingDelay: string;
  maxStandbyArchiveDelay: string;
  hotStandbyFeedback: string;
}

/** How long {@link Standby.open} waits for a requested pause to be reached, in ms. */
export const PAUSE_TIMEOUT_MS = 60_000;

/** The recovery control functions a role needs EXECUTE on to pause replay for a dump (PostgreSQL 10+). */
export const PAUSE_FUNCTIONS = ['pg_catalog.pg_wal_replay_pause()', 'pg_catalog.pg_wal_replay_resume()'] as const;

/**
 * The GRANT statements (run on the primary: a standby is read-only and replays them) that let
 * `role` pause and resume WAL replay for its dumps.
 */
export function pauseGrants(role: string): string {
  const ident = `"${role.replace(/"/g, '""')}"`;
  return `GRANT EXECUTE ON FUNCTION ${PAUSE_FUNCTIONS.join(', ')} TO ${ident};`;
}

/**
 * True for a recovery conflict: SQLSTATE 40001 with "conflict with recovery" (the error of one of
 * our own queries, or a FATAL that ended our connection), or pg_dump's failure whose message
 * (its stderr) carries the server's "… due to conflict with recovery".
 */
export function isRecoveryConflict(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return /conflict with recovery/i.test(message) && (e?.code === undefined || e.code === '40001');
}

/** The server's DETAIL of a recovery conflict ("User query might have needed to see row versions that must be removed."), when known. */
function conflictDetail(err: unknown): string | undefined {
  const e = err as { detail?: string; message?: string; cause?: unknown };
  if (e.detail) return e.detail.trim();
  const inMessage = /DETAIL:\s+([^|\n]+)/.exec(e.message ?? '')?.[1]?.trim();
  // A wrapped server error (the dump's row counts wrap theirs) keeps its detail in `cause`.
  return inMessage ?? (e.cause !== undefined && e.cause !== err ? conflictDetail(e.cause) : undefined);
}

/** Options of {@link Standby.open}. */
export interface StandbyOptions {
  logger: Logger;
  /** Prefix of every log line (the database's name). */
  label: string;
  /** Aborts the wait for the pause (then replay is resumed and the signal's reason thrown). */
  signal?: AbortSignal;
  /** How long to wait for the pause (default {@link PAUSE_TIMEOUT_MS}). */
  pauseTimeoutMs?: number;
}

/**
 * A dump's hold on a hot standby: opened before the dump's snapshot is exported (the pause, when
 * the role may), marked right after it ({@link markSnapshot}), released when the snapshot is no
 * longer needed and again on every exit path ({@link resume}: idempotent). Never resumes a replay
 * someone else had paused.
 */
export class Standby {
  /** Replay is paused for the dump, by pg-backup (resumed by {@link resume}) or found paused. */
  pausedBy: 'pg-backup' | 'other' | undefined;
  /** Filled by {@link markSnapshot}. */
  private marked: { replayLsn?: string; lastReplayedAt?: string } = {};
  /** The first recovery conflict our own connection reported (a FATAL arrives while the connection is idle in its transaction). */
  private conflict: unknown;
  private resumed = false;
  private pausedAt = 0;

  private readonly conn: DatabaseConnection;
  /** The role the dump connects as (`current_user`). */
  readonly role: string;
  readonly settings: StandbySettings;
  /** The role may pause and resume replay (superuser, or EXECUTE granted on {@link PAUSE_FUNCTIONS}). */
  readonly mayPause: boolean;
  private readonly stateQuery: string | undefined;
  private readonly options: StandbyOptions;

  private constructor(conn: DatabaseConnection, role: string, settings: StandbySettings, mayPause: boolean, stateQuery: string | undefined, options: StandbyOptions) {
    this.conn = conn;
    this.role = role;
    this.settings = settings;
    this.mayPause = mayPause;
    this.stateQuery = stateQuery;
    this.options = options;
  }

  /**
   * Detects a hot standby (`pg_is_in_recovery()`); on a primary returns undefined and does
   * nothing else. On a standby: when the role may, pauses WAL replay and waits (polling
   * `pg_get_wal_replay_pause_state()`, `pg_is_wal_replay_paused()` before PostgreSQL 14) until
   * it is paused; replay found paused (or pause-requested) by someone else is left so and
   * noted. When the role may not, logs one warning line naming what bounds the dump
   * (`max_standby_streaming_delay`, `max_standby_archive_delay`, `hot_standby_feedback`, read
   * from the server) and the grant that lifts the bound. From then on, `client` is watched for
   * a recovery conflict (see {@link explain}).
   * @param major the server's major version (pausing needs 10 or newer).
   * @throws Error when a pause this call requested is not reached within the timeout (replay is
   * then resumed), or the signal's reason when aborted while waiting.
   */
  static async open(client: pg.Client, conn: DatabaseConnection, major: number, options: StandbyOptions): Promise<Standby | undefined> {
    const { rows } = await client.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby');
    if (!rows[0]?.standby) return undefined;
    const stateFn = major >= 14 ? 'pg_catalog.pg_get_wal_replay_pause_state()' : major >= 10 ? 'pg_catalog.pg_is_wal_replay_paused()' : undefined;
    const fns = stateFn ? [...PAUSE_FUNCTIONS, stateFn] : [];
    const facts = (
      await client.query<{ role: string; streaming: string; archive: string; feedback: string; may: boolean }>(
        `SELECT current_user AS role, current_setting('max_standby_streaming_delay') AS streaming,
                current_setting('max_standby_archive_delay') AS archive, current_setting('hot_standby_feedback') AS feedback,
                ${fns.length ? fns.map((f) => `has_function_privilege('${f}', 'EXECUTE')`).join(' AND ') : 'false'} AS may`,
      )
    ).rows[0]!;
    const settings = { maxStandbyStreamingDelay: facts.streaming, maxStandbyArchiveDelay: facts.archive, hotStandbyFeedback: facts.feedback };
    const standby = new Standby(conn, facts.role, settings, facts.may, stateFn && `SELECT ${stateFn}::text AS state`, options);
    client.on('error', (err) => standby.note(err));
    if (standby.mayPause) await standby.pause(client, major);
    else standby.warnUnpaused(major < 10 ? `PostgreSQL ${major} has no pg_wal_replay_pause` : `role ${JSON.stringify(standby.role)} may not pause WAL replay (no EXECUTE on pg_wal_replay_pause/pg_wal_replay_resume)`, major);
    return standby;
  }

  /** The replay state: `not paused`, `pause requested` or `paused` (before PostgreSQL 14 only `true`/`false` of pg_is_wal_replay_paused, mapped to `paused`/`not paused`). */
  private async state(client: pg.Client): Promise<string> {
    const s = (await client.query<{ state: string }>(this.stateQuery!)).rows[0]!.state;
    return s === 'true' ? 'paused' : s === 'false' ? 'not paused' : s;
  }

  /**
   * Pauses replay, or notes that someone else did. A platform that grants the functions but
   * refuses the call (a reader that is no streaming standby) gets the unpaused path and its
   * warning, not a failed dump.
   */
  private async pause(client: pg.Client, major: number): Promise<void> {
    const { logger, label } = this.options;
    let before: string;
    try {
      before = await this.state(client);
      if (before === 'not paused') {
        this.pausedBy = 'pg-backup'; // before the call: a reply lost after the server paused still gets its resume
        this.pausedAt = performance.now();
        await client.query('SELECT pg_catalog.pg_wal_replay_pause()');
      }
    } catch (err) {
      // Resumed only if the pause may have taken effect (its reply lost): never a replay we did not pause.
      if (this.pausedBy === 'pg-backup' && (await this.state(client).catch(() => 'unknown')) !== 'not paused') await this.resume();
      this.pausedBy = undefined;
      this.warnUnpaused(`pausing WAL replay failed (${messageOf(err)})`, major);
      return;
    }
    if (before !== 'not paused') {
      this.pausedBy = 'other';
      logger.info(`${label}: ${this.conn.display} is a hot standby whose WAL replay is already ${before} (not by this dump): left as it is, and not resumed afterwards`);
    }
    const timeout = this.options.pauseTimeoutMs ?? PAUSE_TIMEOUT_MS;
    const end = performance.now() + timeout;
    try {
      let state = await this.state(client);
      for (let wait = 20; state !== 'paused'; wait = Math.min(wait * 2, 500)) {
        if (this.options.signal?.aborted) throw this.options.signal.reason;
        if (performance.now() > end) {
          throw new Error(
            `${label}: WAL replay on the hot standby ${this.conn.display} did not pause within ${formatSeconds(timeout)} (state: ${state}): the startup process is probably waiting out a recovery conflict with another query on the standby (max_standby_streaming_delay=${this.settings.maxStandbyStreamingDelay}); ${this.pausedBy === 'pg-backup' ? 'replay was resumed and ' : ''}nothing was dumped; end that query or try again later`,
          );
        }
        await new Promise((r) => setTimeout(r, wait));
        state = await this.state(client);
      }
    } catch (err) {
      await this.resume(client); // a pause we asked for never outlives this call's failure
      throw err;
    }
    if (this.pausedBy === 'pg-backup') logger.info(`${label}: ${this.conn.display} is a hot standby: WAL replay paused for the dump (resumed as soon as the dump's snapshot is released)`);
  }

  /** The one warning line for a standby whose replay this role may not pause (or, when both delays are -1, the note that replay waits for the dump). */
  private warnUnpaused(why: string, major: number): void {
    const { logger, label } = this.options;
    const s = this.settings;
    if (s.maxStandbyStreamingDelay === '-1' && s.maxStandbyArchiveDelay === '-1') {
      logger.info(`${label}: ${this.conn.display} is a hot standby and ${why}: max_standby_streaming_delay and max_standby_archive_delay are -1, so replay waits for the dump's queries and the replica falls behind while it runs`);
      return;
    }
    const feedback =
      s.hotStandbyFeedback === 'on'
        ? "hot_standby_feedback=on keeps the primary's VACUUM from removing rows the dump reads, but not from taking locks (DROP, TRUNCATE, VACUUM truncating a table)"
        : "with hot_standby_feedback=off the primary's VACUUM may remove rows the dump still reads";
    logger.warn(
      `${label}: ${this.conn.display} is a hot standby and ${why}: WAL replay cancels the dump's queries when they hold it back longer than max_standby_streaming_delay=${s.maxStandbyStreamingDelay} (max_standby_archive_delay=${s.maxStandbyArchiveDelay}), and ${feedback}; ${major >= 10 && !this.mayPause ? `to pause replay for the dump, on the primary: ${pauseGrants(this.role)}` : 'set hot_standby_feedback=on or raise those delays to let it finish'}`,
    );
  }

  /**
   * Records `err` when it is a recovery conflict: reported on the dump's connection outside a
   * query (a FATAL while idle in its transaction), or the failure of one of the dump's own
   * queries that runs beside pg_dump (the snapshot's facts), whose consequence — pg_dump losing
   * the snapshot — may be reported first. {@link explain} then names the conflict.
   */
  note(err: unknown): void {
    if (this.conflict === undefined && isRecoveryConflict(err)) this.conflict = err;
  }

  /**
   * Reads the replay position right after the dump's snapshot was taken, in its transaction
   * (`pg_last_wal_replay_lsn()`, `pg_last_xact_replay_timestamp()`); with replay paused it is
   * exactly the snapshot's position.
   */
  async markSnapshot(client: pg.Client): Promise<void> {
    const row = (await client.query<{ lsn: string | null; at: Date | null }>('SELECT pg_catalog.pg_last_wal_replay_lsn()::text AS lsn, pg_catalog.pg_last_xact_replay_timestamp() AS at')).rows[0]!;
    this.marked = { replayLsn: row.lsn ?? undefined, lastReplayedAt: row.at?.toISOString() };
  }

  /** The manifest's `standby`. */
  record(): StandbyRecord {
    return { ...this.marked, replayPaused: this.pausedBy !== undefined, pausedBy: this.pausedBy };
  }

  /**
   * Resumes replay if this dump paused it (once; later calls do nothing). Tries `client` (the
   * dump's connection, when it is idle and healthy), then a new connection. A replay that stays
   * paused is said in a warning with the statement to run: a paused replica falls further
   * behind every second.
   */
  async resume(client?: pg.Client): Promise<void> {
    if (this.pausedBy !== 'pg-backup' || this.resumed) return;
    this.resumed = true;
    const { logger, label } = this.options;
    const attempt = async (c: pg.Client) => {
      await c.query('SELECT pg_catalog.pg_wal_replay_resume()');
    };
    let error: unknown;
    const ok = await (client ? attempt(client).then(() => true, () => false) : Promise.resolve(false));
    if (!ok) {
      const fresh = await connect(this.conn, 'pg-backup dump (resume WAL replay)').catch((err: unknown) => {
        error = err;
        return undefined;
      });
      if (fresh) {
        await attempt(fresh).catch((err: unknown) => (error = err));
        await fresh.end().catch(() => undefined);
      }
      if (error !== undefined && /recovery is not in progress/i.test(messageOf(error))) {
        logger.info(`${label}: ${this.conn.display} left recovery during the dump (promoted): there is no replay to resume`);
        return;
      }
      if (error !== undefined) {
        logger.warn(`${label}: WAL replay on the hot standby ${this.conn.display} could NOT be resumed (${messageOf(error)}): it stays paused and the replica falls behind until someone runs SELECT pg_wal_replay_resume(); there`);
        return;
      }
    }
    logger.info(`${label}: WAL replay on ${this.conn.display} resumed (paused ${formatSeconds(performance.now() - this.pausedAt)}${this.marked.replayLsn ? `; the dump holds the data replayed up to ${this.marked.replayLsn}` : ''})`);
  }

  /**
   * The error to report for `err`, a failure of the dump: a recovery conflict (in `err`, or
   * reported earlier on the dump's connection, whose loss then failed pg_dump's snapshot import
   * or our queries) becomes one line naming the cause and the three fixes; anything else is
   * returned unchanged.
   */
  explain(err: unknown): unknown {
    const conflict = isRecoveryConflict(err) ? err : this.conflict;
    if (conflict === undefined) return err;
    const s = this.settings;
    const detail = conflictDetail(conflict);
    const fixes = [
      `let the backup role pause replay for the dump (on the primary: ${pauseGrants(this.role)})`,
      `set hot_standby_feedback = on on the standby (now ${s.hotStandbyFeedback}; it does not prevent lock conflicts)`,
      `raise max_standby_streaming_delay and max_standby_archive_delay on the standby (now ${s.maxStandbyStreamingDelay} and ${s.maxStandbyArchiveDelay}; -1 waits for the dump, and the replica lags meanwhile)`,
    ];
    return new RecoveryConflictError(
      `${this.options.label}: the dump was cancelled by a recovery conflict on the hot standby ${this.conn.display} (SQLSTATE 40001${detail ? `: ${detail}` : ''}): WAL replay needed rows or locks the dump's snapshot still held${this.pausedBy ? ', although replay was paused when the dump started' : ''}; no backup was recorded; fixes: ${fixes.map((f, i) => `(${i + 1}) ${f}`).join('; ')}`,
    );
  }
}

/** A dump cancelled by a recovery conflict on a hot standby: exit code 1 (the dump ran and was cancelled by the server; the same command may pass when the primary is quieter). */
export class RecoveryConflictError extends Error {
  override readonly name = 'RecoveryConflictError';
}
