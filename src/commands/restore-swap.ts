import type pg from 'pg';
import { CheckFailedError, UsageError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { resolveConnection, withDatabase, type DatabaseConnection } from '../postgres/connection.ts';
import { connect } from '../postgres/server.ts';
import { restore, RestoreFailedError, type RestoreOptions, type RestoreResult } from './restore.ts';
import { RestoreChecksFailedError } from './restore-checks.ts';

// restore --swap: a side-by-side restore, then a switch by renaming, as managed platforms do it
// (a new database, then a switch; never an overwrite). Nothing is dropped but the new database
// when it fails its checks.

/** Options of {@link restoreSwap}: those of a restore, without `clean` and table selection. */
export interface SwapOptions extends Omit<RestoreOptions, 'clean' | 'tables' | 'schemas' | 'safetyDump' | 'targetConnection' | 'checksFailed'> {
  // `privilegesCheck` (from RestoreOptions) checks owners and grants of the new database before the switch.
  /**
   * Other sessions on the live database: end them (`pg_terminate_backend`) and refuse new
   * connections to it during the renames (`ALLOW_CONNECTIONS false`, restored afterwards on the
   * renamed database). Without it such sessions refuse the swap.
   */
  terminateSessions?: boolean;
  /** The moment the names are stamped with (default now). */
  now?: Date;
}

/** A session on the live database. */
export interface LiveSession {
  pid: number;
  applicationName: string;
  /** Client address, or `local` for a Unix socket. */
  clientAddr: string;
  user: string;
}

/** What {@link restoreSwap} did. */
export interface SwapResult {
  /** The live database's name (now the restored data). */
  live: string;
  /** The name the old live database has now: `<live>_before_<YYYYMMDDTHHMMSSZ>`. */
  previous: string;
  /** The name the backup was restored under before the switch: `<live>_restore_<YYYYMMDDTHHMMSSZ>`. */
  restoredAs: string;
  /** The restore into the new database, with its checks. */
  restore: RestoreResult;
  /** Database-level properties of the live database given to the new one (owner, settings, grants…). */
  carried: string[];
  /** Those that could not be (and why). */
  notCarried: string[];
  /** Sessions ended with `--terminate-sessions`. */
  terminated: LiveSession[];
  /** SQL that swaps back, run connected to the maintenance database. */
  swapBackSql: string;
}

/** `YYYYMMDDTHHMMSSZ` of `d` (UTC). */
function stampOf(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** The live database's properties that a new database does not inherit. */
interface DatabaseProps {
  owner: string;
  encoding: string;
  collate: string;
  ctype: string;
  provider: string;
  iculocale: string | null;
  tablespace: string;
  connlimit: number;
  allowconn: boolean;
  acl: { grantee: string; privilege: string; grantable: boolean }[] | null;
  comment: string | null;
  settings: { role: string | null; setting: string }[];
}

async function databaseProps(admin: pg.Client, name: string): Promise<DatabaseProps | undefined> {
  const { rows } = await admin.query<Omit<DatabaseProps, 'acl' | 'settings'> & { hasacl: boolean; oid: string }>(
    `SELECT d.oid::text AS oid, pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding, d.datcollate AS collate, d.datctype AS ctype,
            d.datlocprovider::text AS provider, d.daticulocale AS iculocale, t.spcname AS tablespace, d.datconnlimit AS connlimit, d.datallowconn AS allowconn,
            d.datacl IS NOT NULL AS hasacl, shobj_description(d.oid, 'pg_database') AS comment
       FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = $1`,
    [name],
  );
  const d = rows[0];
  if (!d) return undefined;
  const acl = d.hasacl
    ? (
        await admin.query<{ grantee: string; privilege: string; grantable: boolean }>(
          `SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 ORDER BY 1, 2`,
          [name],
        )
      ).rows
    : null;
  const settings = (
    await admin.query<{ role: string | null; setting: string }>(
      `SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role, c AS setting
         FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = $1::oid ORDER BY s.setrole, c`,
      [d.oid],
    )
  ).rows;
  return { ...d, acl, settings };
}

/** Settings whose value is a list (pg_dump's `GUC_LIST_QUOTE` variables): each element quoted on its own. */
const LIST_SETTINGS = new Set(['search_path', 'temp_tablespaces', 'session_preload_libraries', 'shared_preload_libraries', 'local_preload_libraries']);

/** `name = 'value'` for `ALTER DATABASE … SET` from a `pg_db_role_setting` entry `name=value`. */
function settingClause(client: pg.Client, entry: string): string {
  const at = entry.indexOf('=');
  const name = entry.slice(0, at);
  const value = entry.slice(at + 1);
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new Error(`unexpected setting name ${JSON.stringify(name)}`);
  if (LIST_SETTINGS.has(name)) {
    const parts = value.split(/,\s*/).map((p) => client.escapeLiteral(p.replace(/^"(.*)"$/, '$1').replace(/""/g, '"')));
    return `${name} = ${parts.join(', ')}`;
  }
  return `${name} = ${client.escapeLiteral(value)}`;
}

/** Sessions connected to `database`, other than this one. */
async function liveSessions(admin: pg.Client, database: string): Promise<LiveSession[]> {
  const { rows } = await admin.query<{ pid: number; app: string; addr: string | null; usename: string | null }>(
    `SELECT pid, application_name AS app, host(client_addr) AS addr, usename FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY pid`,
    [database],
  );
  return rows.map((r) => ({ pid: r.pid, applicationName: r.app, clientAddr: r.addr ?? 'local', user: r.usename ?? '' }));
}

function describeSessions(sessions: LiveSession[]): string {
  const shown = sessions.slice(0, 5).map((s) => `pid ${s.pid} (${s.applicationName ? `${JSON.stringify(s.applicationName)}, ` : ''}${s.user ? `user ${s.user}, ` : ''}from ${s.clientAddr})`);
  return `${shown.join(', ')}${sessions.length > 5 ? ` and ${sessions.length - 5} more` : ''}`;
}

/**
 * `restore --swap`: restores the backup into a new database `<live>_restore_<stamp>` on the live
 * database's server, runs the checks on it (row counts and sequences against the manifest; the
 * restore's own, restore-checks.ts), and only then switches, connected to the server's
 * maintenance database (`postgres`):
 *
 * 1. sessions on the live database refuse the swap (listed: pid, application_name, client
 *    address), unless `terminateSessions`: then `ALTER DATABASE live ALLOW_CONNECTIONS false`
 *    and `pg_terminate_backend(pid, 5000)` for each (waits up to 5 s per session);
 * 2. `ALTER DATABASE live RENAME TO <live>_before_<stamp>`;
 * 3. `ALTER DATABASE <new> RENAME TO live`;
 * 4. the old database's `ALLOW_CONNECTIONS` as it was.
 *
 * Nothing is ever dropped except the new database when its restore or checks fail or the
 * switch is refused (it is this command's own): then the live database is untouched. The new
 * database gets the live one's encoding, collation, ctype, locale provider and tablespace (at
 * CREATE DATABASE, from template0), owner (when this role may give it), connection limit,
 * database-level settings (`ALTER DATABASE … SET`, and `ALTER ROLE … IN DATABASE … SET`),
 * grants and comment; what could not be carried is listed in `notCarried`.
 *
 * Needs a role with CREATEDB (or a superuser) that owns the live database or is a member of its
 * owner (`ALTER DATABASE … RENAME` needs both; PostgreSQL docs "ALTER DATABASE").
 * @returns names, what was carried, and the SQL that swaps back.
 * @throws UsageError (exit 2): bad options, a missing live database, a name too long, the maintenance database itself.
 * @throws RestoreFailedError / CheckFailedError (exit 1): refused (rights, sessions), the restore failed, its checks failed — in each case the live database is as it was.
 */
export async function restoreSwap(options: SwapOptions): Promise<SwapResult> {
  const { logger } = options;
  const live = resolveConnection(options.targetUrl);
  const stamp = stampOf(options.now ?? new Date());
  const restoredAs = `${live.database}_restore_${stamp}`;
  const previous = `${live.database}_before_${stamp}`;
  if (Buffer.byteLength(previous) > 63) {
    throw new UsageError(`--swap names the old database ${previous}, longer than PostgreSQL's 63 bytes: the live database's name may have at most ${63 - (previous.length - live.database.length)} bytes for --swap; restore into a new database by hand instead (CREATE DATABASE …; pg-backup restore --target-url …)`);
  }
  const maintenanceName = live.database === 'postgres' ? 'template1' : 'postgres';
  if (live.database === 'template1' || live.database === 'template0') throw new UsageError(`--swap cannot switch ${live.database}: it is a template database`);
  const admin = await connect(withDatabase(live, maintenanceName), 'pg-backup restore --swap');
  let created = false;
  let renamed = false;
  const q = (name: string) => admin.escapeIdentifier(name);
  const dropNew = async (why: string) => {
    if (!created || renamed) return;
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${q(restoredAs)} WITH (FORCE)`);
      logger.info(`dropped ${restoredAs} (${why}); ${live.database} is untouched`);
    } catch (err) {
      logger.warn(`could not drop ${restoredAs} (${messageOf(err)}): drop it by hand (DROP DATABASE ${q(restoredAs)})`);
    }
  };
  try {
    // Rights and names, before anything is created.
    const role = (await admin.query<{ u: string; su: boolean; createdb: boolean }>('SELECT current_user AS u, rolsuper AS su, rolcreatedb AS createdb FROM pg_roles WHERE rolname = current_user')).rows[0]!;
    if (!role.su && !role.createdb) {
      throw new RestoreFailedError('target', live.display, `role ${role.u} may not create databases (CREATE DATABASE needs CREATEDB): ALTER ROLE ${q(role.u)} CREATEDB, or run --swap as the database owner with that right or a superuser`, 'refused');
    }
    const props = await databaseProps(admin, live.database);
    if (!props) throw new UsageError(`--swap: the live database ${live.database} does not exist on ${live.display.replace(/\/[^/]*$/, '')}: name an existing database in --target-url (or restore into a new one without --swap)`);
    const owns = (await admin.query<{ ok: boolean }>('SELECT pg_has_role($1, \'MEMBER\') AS ok', [props.owner])).rows[0]!.ok;
    if (!role.su && !owns) {
      throw new RestoreFailedError('target', live.display, `role ${role.u} cannot rename ${live.database} (owned by ${props.owner}; ALTER DATABASE … RENAME needs its owner): run --swap as ${props.owner} or a member of it with CREATEDB, or a superuser`, 'refused');
    }
    const taken = (await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname = ANY($1::text[])', [[restoredAs, previous]])).rows.map((r) => r.datname);
    if (taken.length) throw new UsageError(`--swap: a database named ${taken.join(' and ')} already exists: run again in a second, or rename it`);
    const early = await liveSessions(admin, live.database);
    if (early.length && !options.terminateSessions) {
      throw new RestoreFailedError('target', live.display, `${early.length} other session${early.length > 1 ? 's are' : ' is'} connected to ${live.database}: ${describeSessions(early)}; end ${early.length > 1 ? 'them' : 'it'} (stop the application), or pass --terminate-sessions to end ${early.length > 1 ? 'them' : 'it'} at the switch`, 'refused');
    }

    // 1. The new database, as the live one was created.
    const carried: string[] = [];
    const notCarried: string[] = [];
    const locale = props.provider === 'i' ? ` LOCALE_PROVIDER icu ICU_LOCALE ${admin.escapeLiteral(props.iculocale ?? '')}` : '';
    const giveOwner = role.su || owns;
    await admin.query(
      `CREATE DATABASE ${q(restoredAs)} WITH TEMPLATE template0 ENCODING ${admin.escapeLiteral(props.encoding)} LC_COLLATE ${admin.escapeLiteral(props.collate)} LC_CTYPE ${admin.escapeLiteral(props.ctype)}${locale} TABLESPACE ${q(props.tablespace)}${giveOwner ? ` OWNER ${q(props.owner)}` : ''}`,
    );
    created = true;
    carried.push(`encoding ${props.encoding}, collation ${props.collate}, ctype ${props.ctype}${locale ? `, ICU locale ${props.iculocale}` : ''}, tablespace ${props.tablespace}`);
    if (giveOwner) carried.push(`owner ${props.owner}`);
    logger.info(`created ${restoredAs} beside ${live.database}; restoring into it`);

    // 2. The restore, with its checks.
    const target = withDatabase(live, restoredAs);
    let restored: RestoreResult;
    try {
      // The checks (row counts, sequences; owners and grants through `options.privilegesCheck` when
      // the manifest has a `privileges` record — HOOK for restore --server's privileges.ts) run in restore().
      restored = await restore({ ...options, targetUrl: target.url, targetConnection: target, checksFailed: `${restoredAs} is dropped and ${live.database} is untouched` });
    } catch (err) {
      await dropNew(err instanceof RestoreChecksFailedError ? 'its checks failed' : 'the restore failed');
      throw err;
    }

    // 3. The live database's own properties, now that nothing restores into the new one.
    await carry(admin, restoredAs, props, carried, notCarried);
    for (const n of notCarried) logger.warn(`not carried to the new database: ${n}`);

    // 4. The switch.
    const sessions = await liveSessions(admin, live.database);
    const terminated: LiveSession[] = [];
    let blocked = false;
    if (sessions.length && !options.terminateSessions) {
      await dropNew('the switch was refused');
      throw new RestoreFailedError('target', live.display, `${sessions.length} other session${sessions.length > 1 ? 's are' : ' is'} connected to ${live.database}: ${describeSessions(sessions)}; the restored copy ${restoredAs} was dropped; end ${sessions.length > 1 ? 'them' : 'it'} or pass --terminate-sessions, and run again`, 'refused');
    }
    try {
      if (options.terminateSessions) {
        await admin.query(`ALTER DATABASE ${q(live.database)} ALLOW_CONNECTIONS false`);
        blocked = props.allowconn;
        for (const s of await liveSessions(admin, live.database)) {
          const { rows } = await admin.query<{ ok: boolean }>('SELECT pg_terminate_backend($1, 5000) AS ok', [s.pid]);
          if (!rows[0]?.ok) throw new CheckFailedError(`--terminate-sessions: session pid ${s.pid} did not end within 5 s`);
          terminated.push(s);
        }
        if (terminated.length) logger.info(`ended ${terminated.length} session${terminated.length > 1 ? 's' : ''} on ${live.database}: ${describeSessions(terminated)}`);
      }
      await admin.query(`ALTER DATABASE ${q(live.database)} RENAME TO ${q(previous)}`);
      try {
        await admin.query(`ALTER DATABASE ${q(restoredAs)} RENAME TO ${q(live.database)}`);
      } catch (err) {
        await admin.query(`ALTER DATABASE ${q(previous)} RENAME TO ${q(live.database)}`).catch(() => undefined);
        throw err;
      }
      renamed = true;
    } catch (err) {
      if (blocked) await admin.query(`ALTER DATABASE ${q(live.database)} ALLOW_CONNECTIONS true`).catch(() => undefined);
      await dropNew('the switch failed');
      const now = await liveSessions(admin, live.database).catch(() => []);
      const who = now.length ? `: ${describeSessions(now)} connected to it` : '';
      throw err instanceof CheckFailedError ? err : new RestoreFailedError('target', live.display, `the switch failed (${messageOf(err)})${who}; ${live.database} is as it was`, 'refused');
    }
    if (blocked) await admin.query(`ALTER DATABASE ${q(previous)} ALLOW_CONNECTIONS true`).catch((err: unknown) => logger.warn(`could not allow connections to ${previous} again (${messageOf(err)}): ALTER DATABASE ${q(previous)} ALLOW_CONNECTIONS true`));
    const swapBackSql = [
      `-- connected to the maintenance database (e.g. psql -d ${maintenanceName}), with no session on ${live.database} or ${previous}:`,
      `ALTER DATABASE ${q(live.database)} RENAME TO ${q(restoredAs)};`,
      `ALTER DATABASE ${q(previous)} RENAME TO ${q(live.database)};`,
    ].join('\n');
    logger.info(`switched: ${live.database} is now the restored backup; the old database is ${previous} (kept: drop it yourself once you no longer need it)`);
    logger.info('to swap back, run this SQL:');
    for (const line of swapBackSql.split('\n')) logger.info(`  ${line}`);
    return { live: live.database, previous, restoredAs, restore: restored, carried, notCarried, terminated, swapBackSql };
  } finally {
    await admin.end().catch(() => undefined);
  }
}

/** Gives the new database the live one's connection limit, settings, grants and comment; records what was and was not carried. */
async function carry(admin: pg.Client, name: string, props: DatabaseProps, carried: string[], notCarried: string[]): Promise<void> {
  const q = (n: string) => admin.escapeIdentifier(n);
  const attempt = async (what: string, sql: string[]) => {
    try {
      for (const s of sql) await admin.query(s);
      carried.push(what);
    } catch (err) {
      notCarried.push(`${what} (${messageOf(err)})`);
    }
  };
  if (props.connlimit !== -1) await attempt(`connection limit ${props.connlimit}`, [`ALTER DATABASE ${q(name)} CONNECTION LIMIT ${Number(props.connlimit)}`]);
  if (!props.allowconn) await attempt('ALLOW_CONNECTIONS false', [`ALTER DATABASE ${q(name)} ALLOW_CONNECTIONS false`]);
  for (const s of props.settings) {
    const clause = settingClause(admin, s.setting);
    await attempt(s.role ? `setting ${s.setting} for role ${s.role}` : `setting ${s.setting}`, [s.role ? `ALTER ROLE ${q(s.role)} IN DATABASE ${q(name)} SET ${clause}` : `ALTER DATABASE ${q(name)} SET ${clause}`]);
  }
  if (props.acl) {
    const grants = props.acl
      .filter((a) => a.grantee !== props.owner)
      .map((a) => `GRANT ${a.privilege} ON DATABASE ${q(name)} TO ${a.grantee === 'PUBLIC' ? 'PUBLIC' : q(a.grantee)}${a.grantable ? ' WITH GRANT OPTION' : ''}`);
    await attempt(`grants (${props.acl.filter((a) => a.grantee !== props.owner).map((a) => `${a.privilege} to ${a.grantee}`).join(', ') || 'none beyond the owner\'s'})`, [`REVOKE ALL ON DATABASE ${q(name)} FROM PUBLIC`, ...grants]);
  }
  if (props.comment !== null) await attempt('comment', [`COMMENT ON DATABASE ${q(name)} IS ${admin.escapeLiteral(props.comment)}`]);
}
