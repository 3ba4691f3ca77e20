import { readFile, stat } from 'node:fs/promises';
import { execa } from 'execa';
import type { ResolvedBackup } from '../backup/catalog.ts';
import { downloadArchive } from '../backup/readback.ts';
import { CheckFailedError, redact } from '../errors.ts';
import type { Storage } from '../storage/index.ts';
import type { PgBinary } from './binaries.ts';
import { libpqEnv, type DatabaseConnection } from './connection.ts';
import { feedRestricted, type SqlReplay } from './plain-sql.ts';
import { connect } from './server.ts';

/**
 * Restoring a run's globals (`pg_dumpall --globals-only`: roles, their attributes and
 * passwords, role settings, memberships, tablespaces, parameter grants) into a server, as
 * untrusted plain SQL:
 *
 * 1. the object is downloaded and matched against its manifest (size, SHA-256) before any byte
 *    is read as SQL ({@link fetchGlobals}), and must end with pg_dumpall's completion line;
 * 2. the SQL is split into statements and each is checked against what pg_dumpall
 *    `--globals-only` writes (`SET`, `CREATE ROLE`, `ALTER ROLE`, `COMMENT ON ROLE`,
 *    `SECURITY LABEL … ON ROLE`, role memberships `GRANT a TO b …`, `GRANT|REVOKE … ON
 *    PARAMETER`, `CREATE|ALTER TABLESPACE`, `GRANT|REVOKE … ON TABLESPACE`, `COMMENT ON
 *    TABLESPACE`) and pg_dump's own `\restrict KEY` / `\unrestrict KEY` lines: anything else
 *    refuses the whole object, nothing of it runs ({@link parseGlobalsSql});
 * 3. roles and tablespaces that already exist on the target are kept as they are: every
 *    statement about them (`CREATE ROLE x; ALTER ROLE x WITH …`, their settings, comments,
 *    memberships granted to them) is left out, and they are listed ({@link planGlobals});
 * 4. what is left is fed to psql in restricted mode (`\restrict` with a random key, so no psql
 *    meta-command can run: plain-sql.ts `feedRestricted`), one statement at a time without
 *    stopping at an error (`CREATE TABLESPACE` cannot run in a transaction block), and each
 *    error psql reports is tied back to its statement and said in plain words, naming the role
 *    or tablespace and what to do ({@link restoreGlobals}).
 */

/** The last line pg_dumpall writes to a complete dump. */
export const GLOBALS_TRAILER = '-- PostgreSQL database cluster dump complete';

/** What one statement of globals SQL is about. */
export type GlobalsStatementKind = 'set' | 'role' | 'membership' | 'parameter' | 'tablespace';

/** One statement of globals SQL, classified. */
export interface GlobalsStatement {
  kind: GlobalsStatementKind;
  /** The statement, ending with `;`. */
  sql: string;
  /** Its first line in the object (1-based). */
  line: number;
  /** `role`: the role; `membership`: the member; `tablespace`: the tablespace. */
  subject?: string;
  /** `CREATE ROLE` / `CREATE TABLESPACE`. */
  creates?: boolean;
  /** `membership`: the roles granted. */
  granted?: string[];
  /** `CREATE TABLESPACE`: its location (the directory on the source's server). */
  location?: string;
}

const IDENT = String.raw`("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const IDENT_LIST = String.raw`(${IDENT}(?:\s*,\s*${IDENT})*)`;

/** An identifier as written by pg_dumpall (`fmtId`): quoted (`""` for `"`) or a plain lower-case name. */
export function unquoteIdent(text: string): string {
  return text.startsWith('"') ? text.slice(1, -1).replace(/""/g, '"') : text.toLowerCase();
}

/** A name as an SQL identifier (double quotes, `""` for `"`). */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string as an SQL literal (standard conforming strings: `''` for `'`). */
function quoteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** Classifies one statement; undefined when pg_dumpall --globals-only does not write such a statement. */
function classify(sql: string, line: number): GlobalsStatement | undefined {
  const s = sql.replace(/\s+/g, ' ');
  let m: RegExpExecArray | null;
  if (/^SET [a-z_]+ = [^;]*;$/i.test(s) || /^SELECT pg_catalog\.set_config\('search_path', '', false\);$/.test(s)) return { kind: 'set', sql, line };
  if ((m = new RegExp(`^CREATE ROLE ${IDENT};$`).exec(s))) return { kind: 'role', sql, line, subject: unquoteIdent(m[1]!), creates: true };
  if ((m = new RegExp(`^ALTER ROLE ${IDENT} `).exec(s))) return { kind: 'role', sql, line, subject: unquoteIdent(m[1]!) };
  if ((m = new RegExp(`^COMMENT ON ROLE ${IDENT} IS `).exec(s))) return { kind: 'role', sql, line, subject: unquoteIdent(m[1]!) };
  if ((m = new RegExp(`^SECURITY LABEL FOR ${IDENT} ON ROLE ${IDENT} IS `).exec(s))) return { kind: 'role', sql, line, subject: unquoteIdent(m[2]!) };
  if ((m = new RegExp(`^GRANT ${IDENT_LIST} TO ${IDENT}(?: WITH [A-Z ,]+)?(?: GRANTED BY ${IDENT})?;$`).exec(s))) {
    const granted = [...m[1]!.matchAll(new RegExp(IDENT, 'g'))].map((g) => unquoteIdent(g[0]));
    return { kind: 'membership', sql, line, subject: unquoteIdent(m[m.length - 2]!), granted };
  }
  if (/^(?:GRANT|REVOKE) [A-Z ,]+ ON PARAMETER [a-z_.]+ (?:TO|FROM) /.test(s)) return { kind: 'parameter', sql, line };
  if ((m = new RegExp(`^CREATE TABLESPACE ${IDENT} OWNER ${IDENT} LOCATION '((?:[^']|'')*)'(?: WITH \\([^;]*\\))?;$`).exec(s))) {
    return { kind: 'tablespace', sql, line, subject: unquoteIdent(m[1]!), creates: true, location: m[3]!.replace(/''/g, "'") };
  }
  if ((m = new RegExp(`^(?:ALTER TABLESPACE ${IDENT} |(?:GRANT|REVOKE) [A-Z ,]+ ON TABLESPACE ${IDENT} |COMMENT ON TABLESPACE ${IDENT} IS |SECURITY LABEL FOR ${IDENT} ON TABLESPACE ${IDENT} IS )`).exec(s))) {
    return { kind: 'tablespace', sql, line, subject: unquoteIdent((m[1] ?? m[2] ?? m[3] ?? m[5])!) };
  }
  return undefined;
}

/**
 * Splits globals SQL into statements, keeping single-quoted strings (with `''`, and `E'…'`
 * with backslash escapes), double-quoted names and `--` comments apart, and classifies each
 * ({@link GlobalsStatement}). A line starting with `\` between statements is a psql
 * meta-command: only pg_dump's own `\restrict KEY` and `\unrestrict KEY` (letters and digits)
 * are taken, and left out.
 * @throws CheckFailedError when the SQL lacks pg_dumpall's completion line, holds another
 *   meta-command, an unterminated statement, or a statement pg_dumpall --globals-only does not
 *   write (naming its line); nothing of it has run.
 */
export function parseGlobalsSql(sql: string): GlobalsStatement[] {
  const refuse = (why: string) => new CheckFailedError(`the globals SQL ${why}: it was not written by pg_dumpall --globals-only as it is, or was altered; nothing of it ran`);
  if (!sql.includes(GLOBALS_TRAILER)) throw new CheckFailedError(`the globals SQL does not end with "${GLOBALS_TRAILER}": the object is truncated; nothing of it ran`);
  const out: GlobalsStatement[] = [];
  let line = 1;
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const ch = sql[i]!;
    if (ch === '\n') {
      line++;
      i++;
      continue;
    }
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (sql.startsWith('--', i)) {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl;
      continue;
    }
    if (ch === '\\') {
      const nl = sql.indexOf('\n', i);
      const text = sql.slice(i, nl < 0 ? n : nl).replace(/\r$/, '');
      if (!/^\\(?:restrict|unrestrict) [A-Za-z0-9]+\s*$/.test(text)) throw refuse(`holds the psql meta-command ${JSON.stringify(text.slice(0, 60))} at line ${line}`);
      i = nl < 0 ? n : nl;
      continue;
    }
    // A statement: up to its `;` outside quotes.
    const start = i;
    const startLine = line;
    let done = false;
    while (i < n && !done) {
      const c = sql[i]!;
      if (c === '\n') line++;
      if (c === "'") {
        const escapes = /[Ee]/.test(sql[i - 1] ?? '') && !/[A-Za-z0-9_$]/.test(sql[i - 2] ?? '');
        i++;
        for (;;) {
          if (i >= n) throw refuse(`has an unterminated string from line ${startLine}`);
          const d = sql[i]!;
          if (d === '\n') line++;
          if (escapes && d === '\\') {
            if (sql[i + 1] === '\n') line++;
            i += 2;
            continue;
          }
          if (d === "'") {
            if (sql[i + 1] === "'") {
              i += 2;
              continue;
            }
            i++;
            break;
          }
          i++;
        }
        continue;
      }
      if (c === '"') {
        const end = sql.indexOf('"', i + 1);
        if (end < 0) throw refuse(`has an unterminated name from line ${startLine}`);
        for (let j = i; j < end; j++) if (sql[j] === '\n') line++;
        i = end + 1;
        continue;
      }
      if (c === '-' && sql[i + 1] === '-') {
        const nl = sql.indexOf('\n', i);
        i = nl < 0 ? n : nl;
        continue;
      }
      if (c === ';') done = true;
      i++;
    }
    if (!done) throw refuse(`has an unterminated statement from line ${startLine}`);
    const text = sql.slice(start, i);
    const statement = classify(text, startLine);
    if (!statement) throw refuse(`holds a statement pg_dumpall --globals-only does not write, at line ${startLine}: ${JSON.stringify(text.replace(/\s+/g, ' ').slice(0, 80))}`);
    out.push(statement);
  }
  return out;
}

/** What {@link planGlobals} decided. */
export interface GlobalsPlan {
  /** The statements to run, in order. */
  statements: GlobalsStatement[];
  /** Roles the globals create. */
  createRoles: string[];
  /** Roles of the globals that exist on the target already: kept as they are, never altered. */
  keptRoles: string[];
  /** Memberships left out because their member existed already (`GRANT a TO b`, as `a → b`). */
  skippedMemberships: string[];
  /** Tablespaces the globals create, with the location used. */
  createTablespaces: { name: string; location: string }[];
  /** Tablespaces that exist on the target already: kept as they are. */
  keptTablespaces: string[];
}

/**
 * Decides what of `statements` runs on a target that has `existing` roles and tablespaces:
 * every statement about an existing role or tablespace is left out (it is kept as it is, and
 * listed), and so is a membership granted to an existing role. `relocate` gives a tablespace
 * another location (a drill puts them under its throwaway cluster); the `CREATE TABLESPACE`
 * is then rewritten with it.
 */
export function planGlobals(statements: GlobalsStatement[], existing: { roles: Set<string>; tablespaces: Set<string> }, relocate?: (name: string, location: string) => string): GlobalsPlan {
  const plan: GlobalsPlan = { statements: [], createRoles: [], keptRoles: [], skippedMemberships: [], createTablespaces: [], keptTablespaces: [] };
  const keptRoles = new Set<string>();
  for (const st of statements) {
    if (st.kind === 'role') {
      if (existing.roles.has(st.subject!)) {
        keptRoles.add(st.subject!);
        continue;
      }
      if (st.creates) plan.createRoles.push(st.subject!);
    } else if (st.kind === 'membership') {
      if (existing.roles.has(st.subject!)) {
        plan.skippedMemberships.push(`${st.granted!.join(', ')} → ${st.subject}`);
        continue;
      }
    } else if (st.kind === 'tablespace') {
      if (existing.tablespaces.has(st.subject!)) {
        if (st.creates) plan.keptTablespaces.push(st.subject!);
        continue;
      }
      if (st.creates) {
        const location = relocate ? relocate(st.subject!, st.location!) : st.location!;
        plan.createTablespaces.push({ name: st.subject!, location });
        if (location !== st.location) {
          const owner = /OWNER ("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)/.exec(st.sql)![1]!;
          plan.statements.push({ ...st, sql: `CREATE TABLESPACE ${quoteIdent(st.subject!)} OWNER ${owner} LOCATION ${quoteLiteral(location)};` });
          continue;
        }
      }
    }
    plan.statements.push(st);
  }
  plan.keptRoles = [...keptRoles];
  return plan;
}

/**
 * Downloads a run's globals object into `scratch`, checking its size and SHA-256 against the
 * manifest (and decrypting, decompressing) before anything reads it, and returns the SQL text.
 * @throws CheckFailedError when the object does not match its manifest or is over 256 MiB.
 */
export async function fetchGlobals(storage: Storage, backup: ResolvedBackup, scratch: string, identities: string[] | undefined, signal?: AbortSignal): Promise<string> {
  const local = await downloadArchive(storage, backup, scratch, signal, identities);
  if (local.problems.length) throw new CheckFailedError(`the globals ${storage.uri(backup.objectKey)} cannot be used: ${local.problems.join('; ')}; nothing of it ran`);
  if ((await stat(local.path)).size > 256 * 1024 * 1024) throw new CheckFailedError(`the globals ${storage.uri(backup.objectKey)} hold over 256 MiB of SQL: not what pg_dumpall --globals-only writes; nothing of it ran`);
  return readFile(local.path, 'utf8');
}

/** What a drill or a server restore says about the globals it restored. */
export interface GlobalsReport {
  /** The globals' object URI, or undefined when the run has none. */
  uri?: string;
  created: string[];
  kept: string[];
  skippedMemberships: string[];
  tablespaces: string[];
  problems: string[];
}

/** What {@link restoreGlobals} did. */
export interface GlobalsRestoreResult extends Omit<GlobalsPlan, 'statements'> {
  /** Each statement the target refused, in plain words naming the role or tablespace and what to do. Empty on success. */
  problems: string[];
}

/**
 * Restores globals SQL into the server of `target` (a connection to any database there, e.g.
 * `postgres`, as a role that may create roles): parses and checks it ({@link parseGlobalsSql}),
 * leaves out what concerns existing roles and tablespaces ({@link planGlobals}), then feeds the
 * rest to `psql -X -q` in restricted mode ({@link feedRestricted}). psql goes on after an error
 * (no ON_ERROR_STOP, no single transaction: `CREATE TABLESPACE` cannot run in one); each error
 * is tied to its statement by the line psql names and becomes one problem.
 * @throws CheckFailedError when the SQL is refused (nothing ran).
 * @throws Error when psql cannot be started or is killed.
 */
export async function restoreGlobals(sql: string, target: DatabaseConnection, psql: PgBinary, options: { relocateTablespace?: (name: string, location: string) => string; signal?: AbortSignal } = {}): Promise<GlobalsRestoreResult> {
  const statements = parseGlobalsSql(sql);
  const client = await connect(target, 'pg-backup globals');
  let existing: { roles: Set<string>; tablespaces: Set<string> };
  try {
    const roles = await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles');
    const spaces = await client.query<{ spcname: string }>('SELECT spcname FROM pg_catalog.pg_tablespace');
    existing = { roles: new Set(roles.rows.map((r) => r.rolname)), tablespaces: new Set(spaces.rows.map((r) => r.spcname)) };
  } finally {
    await client.end().catch(() => undefined);
  }
  const plan = planGlobals(statements, existing, options.relocateTablespace);
  // psql's input: line 1 is `\restrict KEY` (feedRestricted), then one statement per line.
  const lines: { from: number; to: number; st: GlobalsStatement }[] = [];
  let text = '';
  let at = 2;
  for (const st of plan.statements) {
    const count = st.sql.split('\n').length;
    lines.push({ from: at, to: at + count - 1, st });
    text += `${st.sql}\n`;
    at += count;
  }
  const { statements: _run, ...rest } = plan;
  const result: GlobalsRestoreResult = { ...rest, problems: [] };
  if (!text) return result;
  let stderr = '';
  const child = execa(psql.path, ['-X', '-q', '-f', '-', `--dbname=${target.url}`], {
    env: { ...libpqEnv(target), PGAPPNAME: 'pg-backup globals' },
    stdin: 'pipe',
    stdout: 'ignore',
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
    cancelSignal: options.signal,
    forceKillAfterDelay: 5_000,
    maxBuffer: { stderr: 4 * 1024 * 1024 },
  });
  const done = child.then(
    (r) => {
      stderr = String(r.stderr ?? '');
    },
    (err: { stderr?: string; exitCode?: number; signal?: string; isCanceled?: boolean }) => {
      stderr = String(err.stderr ?? '');
      // psql exits 0 after SQL errors without ON_ERROR_STOP; 1-3 after fatal ones (connection, restricted mode).
      // psql's context lines (`LINE 1: ALTER ROLE … PASSWORD '…'`) may quote a password verifier: never shown.
      const said = stderr.trim().split('\n').filter((l) => !/^\s*LINE \d+:|PASSWORD|SCRAM-SHA-256\$|md5[0-9a-f]{32}|^\s*\^/i.test(l));
      throw new Error(redact(`psql ${err.isCanceled ? 'was stopped' : err.signal ? `was killed by ${err.signal}` : `exited with code ${err.exitCode}`}: ${said.slice(-3).join(' | ')}`));
    },
  );
  done.catch(() => undefined);
  const replay: SqlReplay = { stdin: child.stdin!, done, stop: () => void child.kill('SIGTERM') };
  const buffer = Buffer.from(text, 'utf8');
  await feedRestricted(replay, { buffer }, { ranges: [[0, buffer.length]] });
  for (const m of stderr.matchAll(/^psql:[^\n]*?:(\d+): ERROR: +([^\n]*)/gm)) {
    const lineNo = Number(m[1]);
    const st = lines.find((l) => lineNo >= l.from && lineNo <= l.to)?.st;
    result.problems.push(describeRefusal(st, m[2]!.trim().replace(/SCRAM-SHA-256\$\S+|md5[0-9a-f]{32}/g, '[password verifier]')));
  }
  return result;
}

/** One line for a statement the target refused: what it was about, PostgreSQL's reason, and what to do. */
function describeRefusal(st: GlobalsStatement | undefined, error: string): string {
  if (!st) return `the target refused a statement of the globals: ${error}`;
  const privilege = /permission denied|must be superuser|must have|only superusers|not allowed/i.test(error);
  if (st.kind === 'role') {
    const what = st.creates ? 'create role' : /^ALTER ROLE \S+ (?:IN DATABASE \S+ )?(?:SET|RESET) /i.test(st.sql) ? 'set a setting of role' : 'give the attributes (or password) of role';
    return `the target refused to ${what} ${st.subject}: ${error}${privilege ? `; create ${st.subject} yourself with what this server allows (e.g. CREATE ROLE ${quoteIdent(st.subject!)} LOGIN, without SUPERUSER/REPLICATION/BYPASSRLS on a managed server), then run restore --server again on a server without the run's databases` : ''}`;
  }
  if (st.kind === 'membership') return `the target refused the membership of ${st.subject} in ${st.granted!.join(', ')}: ${error}${privilege ? `; grant it yourself (GRANT ${st.granted!.map(quoteIdent).join(', ')} TO ${quoteIdent(st.subject!)}) as a role that may` : ''}`;
  if (st.kind === 'tablespace') {
    const where = st.location ? ` at ${st.location}` : '';
    return `the target refused tablespace ${st.subject}${where}: ${error}${st.creates ? `; make the directory on the target's host (empty, owned by the OS user that runs PostgreSQL) or create the tablespace yourself, then restore again` : ''}`;
  }
  return `the target refused "${st.sql.replace(/\s+/g, ' ').slice(0, 80)}": ${error}`;
}

/** Message for a role missing on the target while restoring a database: what to do. */
export function missingRoleAdvice(role: string, haveGlobals: boolean): string {
  return haveGlobals
    ? `role "${role}" does not exist on the target and is not in the run's globals: create it (CREATE ROLE ${quoteIdent(role)}), or restore with --no-owner --no-acl`
    : `role "${role}" does not exist on the target and the backup's run has no globals: dump with globals (pg-backup dump stores them unless --no-globals) or create the role (CREATE ROLE ${quoteIdent(role)}) first; --no-owner --no-acl restores without owners and grants`;
}
