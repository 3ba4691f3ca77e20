import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { ResolvedBackup } from '../backup/catalog.ts';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { findPgBinary } from '../postgres/binaries.ts';
import type { DatabaseConnection } from '../postgres/connection.ts';
import { fetchGlobals, missingRoleAdvice, restoreGlobals, type GlobalsReport, type GlobalsRestoreResult } from '../postgres/globals-restore.ts';
import { requireRestrictedPsql } from '../postgres/plain-sql.ts';
import { capturePrivileges, comparePrivileges, referencedRoles, type Privileges } from '../postgres/privileges.ts';
import type { Storage } from '../storage/index.ts';
import { withClient } from './drill-checks.ts';

// Steps shared by a drill (drill.ts, drill-server.ts) and restore --server (restore-server.ts):
// a run's globals into a server, the roles a database needs, the privileges check afterwards.

export type { GlobalsReport } from '../postgres/globals-restore.ts';

/**
 * Downloads (checked against its manifest) and restores a run's globals into the server of
 * `admin` ({@link restoreGlobals}), logging the roles created and the roles kept as they were.
 * psql is one at least as new as the pg_dumpall that wrote them, with restricted mode.
 * @throws CheckFailedError when the object does not match its manifest or its SQL is refused (nothing ran).
 * @throws UsageError when no suitable psql is installed.
 */
export async function restoreRunGlobals(
  storage: Storage,
  globals: ResolvedBackup,
  admin: DatabaseConnection,
  o: { workDir: string; identities?: string[]; relocateTablespace?: (name: string, location: string) => string; signal?: AbortSignal; log: Logger },
): Promise<GlobalsReport> {
  const psql = await findPgBinary('psql', globals.manifest.pgDump.major, `restoring globals written by pg_dumpall ${globals.manifest.pgDump.version}`);
  requireRestrictedPsql(psql, 'restore the globals');
  const scratch = await mkdtemp(path.join(o.workDir, 'pg-backup-globals-'));
  let done: GlobalsRestoreResult;
  try {
    const sql = await fetchGlobals(storage, globals, scratch, o.identities, o.signal);
    done = await restoreGlobals(sql, admin, psql, { relocateTablespace: o.relocateTablespace, signal: o.signal });
  } finally {
    await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
  }
  const report: GlobalsReport = {
    uri: storage.uri(globals.objectKey),
    created: done.createRoles,
    kept: done.keptRoles,
    skippedMemberships: done.skippedMemberships,
    tablespaces: done.createTablespaces.map((t) => t.name),
    problems: done.problems,
  };
  o.log.info(`globals ${report.uri}: ${report.created.length} role${report.created.length === 1 ? '' : 's'} created${report.created.length ? ` (${report.created.join(', ')})` : ''}${report.tablespaces.length ? `, tablespace${report.tablespaces.length > 1 ? 's' : ''} ${report.tablespaces.join(', ')}` : ''}${globals.manifest.globals?.rolePasswords === false ? '; the globals hold no role passwords (dumped with --no-role-passwords): set them before logging in' : ''}`);
  if (report.kept.length) o.log.info(`roles that already existed, kept as they are (not altered): ${report.kept.join(', ')}`);
  if (done.keptTablespaces.length) o.log.info(`tablespaces that already existed, kept as they are: ${done.keptTablespaces.join(', ')}`);
  if (report.skippedMemberships.length) o.log.warn(`memberships not granted, their member existed already and is kept as it is: ${report.skippedMemberships.join('; ')}`);
  return report;
}

/**
 * The roles `privileges` names that the server of `conn` lacks, sorted (empty without a
 * record: then pg_restore's own error names the first one).
 */
export async function missingRoles(conn: DatabaseConnection, privileges: Privileges | undefined, signal?: AbortSignal): Promise<string[]> {
  if (!privileges) return [];
  return lackingRoles(privileges, await withClient(conn, signal, (c) => rolesOf(c)));
}

/** The names of every role of the server `client` is connected to (`pg_roles`). */
export async function rolesOf(client: pg.Client): Promise<Set<string>> {
  return new Set((await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((r) => r.rolname));
}

/** The roles `privileges` names that are not in `have`, sorted (empty without a record). */
export function lackingRoles(privileges: Privileges | undefined, have: Set<string>): string[] {
  return privileges ? referencedRoles(privileges).filter((r) => !have.has(r)) : [];
}

/** The problem line for roles missing before a database's restore. */
export function missingRolesProblem(database: string, roles: string[], haveGlobals: boolean): string {
  if (roles.length === 1) return `database ${database} cannot be restored with its owners and grants: ${missingRoleAdvice(roles[0]!, haveGlobals)}`;
  return `database ${database} cannot be restored with its owners and grants: roles ${roles.map((r) => `"${r}"`).join(', ')} do not exist on the target${haveGlobals ? ' and are not in the run\'s globals: create them' : ' and the backup\'s run has no globals: dump with globals (pg-backup dump stores them unless --no-globals) or create them first'}, or restore with --no-owner --no-acl`;
}

/** A pg_restore/psql failure that names a missing role, said with what to do; else undefined. */
export function missingRoleInFailure(message: string, haveGlobals: boolean): string | undefined {
  const m = /role "((?:[^"]|"")+)" does not exist/.exec(message);
  return m ? missingRoleAdvice(m[1]!, haveGlobals) : undefined;
}

/** At most this many privilege differences are listed one by one; the rest are counted. */
const MAX_LISTED = 20;

/**
 * Captures the privileges of the restored database `conn` and compares them with the dump's
 * record ({@link comparePrivileges}); logs the verdict. `withDatabase`: the restore brought the
 * database's own properties (`--create`). With `client` (a connection to `conn` the caller owns),
 * the privileges are read on it instead of a connection of their own.
 * @returns the differences, at most {@link MAX_LISTED} lines and one `… and N more`.
 */
export async function checkPrivileges(conn: DatabaseConnection, recorded: Privileges, o: { withDatabase: boolean; log: Logger; label?: string; signal?: AbortSignal; client?: pg.Client }): Promise<string[]> {
  const restored = o.client ? await capturePrivileges(o.client) : await withClient(conn, o.signal, (c) => capturePrivileges(c));
  const diffs = comparePrivileges(recorded, restored, { database: o.withDatabase });
  const label = o.label ? `${o.label}: ` : '';
  if (!diffs.length) o.log.info(`${label}privileges: owners, grants, default privileges, row-level security policies and ${o.withDatabase ? 'database and role settings' : 'objects\' settings'} match the dump's record (${Object.keys(recorded.owners).length} owners)`);
  else o.log.info(`${label}privileges: ${diffs.length} difference${diffs.length > 1 ? 's' : ''} from the dump's record`);
  return diffs.length > MAX_LISTED ? [...diffs.slice(0, MAX_LISTED), `… and ${diffs.length - MAX_LISTED} more privilege differences`] : diffs;
}

/** The one-line reason of an error. */
export function reasonOf(err: unknown): string {
  return messageOf(err).split('\n').map((l) => l.trim()).filter(Boolean).join(' | ');
}

/**
 * Databases every server has, restored like pg_dumpall restores them: into the existing (empty)
 * database, without `--create` (so their own properties are not restored).
 */
export const BUILT_IN_DATABASES = new Set(['postgres', 'template1']);
