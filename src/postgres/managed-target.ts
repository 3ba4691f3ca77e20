import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { PROFILES, isPlatformRole, type Profile } from './profiles.ts';
import type { TocEntry } from './target.ts';

/** One archive entry the target will refuse, why, and what to do instead. */
export interface RefusedEntry {
  entry: TocEntry;
  /** e.g. `event trigger audit_ddl`, `extension pg_graphql`, `comment on extension pgcrypto`. */
  label: string;
  /** Why the target refuses it, e.g. `creating an event trigger needs a superuser`. */
  reason: string;
}

/** What {@link refusedEntries} needs to know about the restore. */
export interface ManagedRestore {
  /** `--no-owner`: no `ALTER … OWNER TO`. */
  noOwner: boolean;
  /** The target platform's profile (`--profile`), for its role and extension names in the advice. */
  profile?: Profile;
}

/**
 * Finds, before anything is written, the archive's entries that a target refuses when the
 * restoring role is not a superuser (the rule on managed platforms) or lacks an extension, from
 * the TOC and the target's catalog:
 * - `EVENT TRIGGER`: `CREATE EVENT TRIGGER` needs a superuser (PostgreSQL docs, "CREATE EVENT
 *   TRIGGER"; Cloud SQL's cloudsqlsuperuser and Supabase's postgres may, through the platform's
 *   own extension);
 * - `EXTENSION` not available on the target server, or untrusted (`trusted = false` in its
 *   control file) and not installed while the role is not a superuser ("CREATE EXTENSION");
 * - `COMMENT` on an extension that exists in the target owned by another role (`COMMENT ON
 *   EXTENSION` needs its ownership), or whose extension is refused;
 * - `SUBSCRIPTION` (a superuser, or `pg_create_subscription` from PostgreSQL 16), `FOREIGN DATA
 *   WRAPPER` (a superuser), and an untrusted `PROCEDURAL LANGUAGE`.
 * Ownership is checked by `preflightRestore` (target.ts); {@link platformOwnerHint} adds the
 * platform's name to its advice.
 * @returns the refused entries in TOC order (empty for a superuser with every extension).
 */
export async function refusedEntries(client: pg.Client, toc: readonly TocEntry[], restore: ManagedRestore): Promise<RefusedEntry[]> {
  const me = (await client.query<{ su: boolean; v: string }>("SELECT rolsuper AS su, current_setting('server_version_num') AS v FROM pg_roles WHERE rolname = current_user")).rows[0]!;
  const out: RefusedEntry[] = [];
  const extensions = toc.filter((e) => e.desc === 'EXTENSION').map((e) => e.name);
  const commented = toc.filter((e) => e.desc === 'COMMENT' && e.name.startsWith('EXTENSION ')).map((e) => e.name.slice('EXTENSION '.length));
  const names = [...new Set([...extensions, ...commented])];
  const ext = new Map<string, { installed: boolean; owned: boolean; available: boolean; untrusted: boolean }>();
  if (names.length) {
    const { rows } = await client.query<{ e: string; installed: boolean; owned: boolean; available: boolean; untrusted: boolean | null }>(
      `SELECT e, x.oid IS NOT NULL AS installed, COALESCE(pg_has_role(x.extowner, 'USAGE'), false) AS owned,
              EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = e) AS available,
              (SELECT v.superuser AND NOT v.trusted FROM pg_available_extension_versions v JOIN pg_available_extensions a ON a.name = v.name AND a.default_version = v.version WHERE v.name = e) AS untrusted
         FROM unnest($1::text[]) e LEFT JOIN pg_extension x ON x.extname = e`,
      [names],
    );
    for (const r of rows) ext.set(r.e, { installed: r.installed, owned: r.owned, available: r.available, untrusted: r.untrusted === true });
  }
  const platformOf = (extension: string) => Object.values(PROFILES).find((p) => p.platformExtensions.includes(extension));
  const refusedExtensions = new Set<string>();
  for (const e of toc) {
    if (e.desc === 'EXTENSION') {
      const x = ext.get(e.name)!;
      const platform = platformOf(e.name);
      const elsewhere = platform ? ` (a ${platform.title} extension: restore this backup into ${platform.title})` : '';
      if (!x.installed && !x.available) {
        refusedExtensions.add(e.name);
        out.push({ entry: e, label: `extension ${e.name}`, reason: `the target server does not have it${elsewhere}` });
      } else if (!x.installed && x.untrusted && !me.su) {
        refusedExtensions.add(e.name);
        out.push({ entry: e, label: `extension ${e.name}`, reason: `creating it needs a superuser: create it in the target first${restore.profile ? `, on ${restore.profile.title} as ${restore.profile.adminRole} or from its console` : ''}` });
      }
    } else if (e.desc === 'COMMENT' && e.name.startsWith('EXTENSION ')) {
      const name = e.name.slice('EXTENSION '.length);
      const x = ext.get(name)!;
      if (refusedExtensions.has(name)) out.push({ entry: e, label: `comment on extension ${name}`, reason: 'its extension is refused' });
      else if (x.installed && !x.owned && !me.su) out.push({ entry: e, label: `comment on extension ${name}`, reason: `COMMENT ON EXTENSION needs its ownership, and ${name} in the target belongs to another role` });
    } else if (!me.su && e.desc === 'EVENT TRIGGER') {
      out.push({ entry: e, label: `event trigger ${e.name}`, reason: 'creating an event trigger needs a superuser' });
    } else if (!me.su && e.desc === 'SUBSCRIPTION' && Number(me.v) < 160000) {
      out.push({ entry: e, label: `subscription ${e.name}`, reason: 'creating a subscription needs a superuser before PostgreSQL 16' });
    } else if (!me.su && e.desc === 'FOREIGN DATA WRAPPER') {
      out.push({ entry: e, label: `foreign data wrapper ${e.name}`, reason: 'creating a foreign data wrapper needs a superuser' });
    }
  }
  return out;
}

/**
 * The one-line advice for refused entries: each named with its reason (at most `shown`, then
 * "and N more"), then the ways out (`way`; default: `--skip-refused` to restore the rest, still
 * in one transaction, or a superuser).
 */
export function refusedMessage(refused: readonly RefusedEntry[], shown = 6, way?: string): string {
  const listed = refused.slice(0, shown).map((r) => `${r.label} (${r.reason})`).join(', ');
  const more = refused.length > shown ? ` and ${refused.length - shown} more` : '';
  return `the target refuses ${refused.length} entr${refused.length === 1 ? 'y' : 'ies'} of the backup: ${listed}${more}; ${way ?? `pass --skip-refused to restore everything else without ${refused.length === 1 ? 'it' : 'them'} (still in one transaction), or restore as a superuser`}`;
}

/**
 * When ownership is restored by a role that is not a superuser and the archive's owners include
 * a known platform's roles (`supabase_admin`, `rdsadmin`, `cloudsqladmin`…), the advice that goes
 * with the owner problem: which platform they belong to, and that `--profile` or `--no-owner`
 * restores without them. Undefined when no owner is a platform role.
 */
export function platformOwnerHint(toc: readonly TocEntry[], restore: ManagedRestore): string | undefined {
  if (restore.noOwner) return undefined;
  const owners = [...new Set(toc.map((e) => e.owner).filter(Boolean))];
  for (const p of Object.values(PROFILES)) {
    const theirs = owners.filter((o) => o !== p.adminRole && o !== 'postgres' && isPlatformRole(p, o));
    if (theirs.length) return `${theirs.slice(0, 3).join(', ')} ${theirs.length === 1 ? 'is a role' : 'are roles'} of ${p.title}, which owns objects in the backup: restore with --no-owner${restore.profile ? '' : ` (or --profile ${p.name} when the target is ${p.title})`}`;
  }
  return undefined;
}

/**
 * Writes a `pg_restore -L` list: the archive's `pg_restore --list` text with the lines of the
 * `skipped` entries commented out (`;`), order unchanged (so a streamed archive needs no seek),
 * into `dir`/restore.list. Source: PostgreSQL docs, pg_restore `--use-list`.
 * @returns the list file's path.
 */
export async function writeSkipList(listText: string, skipped: ReadonlySet<number>, dir: string): Promise<string> {
  const lines = listText.split('\n').map((line) => {
    const m = /^(\d+);/.exec(line);
    return m && skipped.has(Number(m[1])) ? `;${line}` : line;
  });
  const file = path.join(dir, 'restore.list');
  await writeFile(file, lines.join('\n'), { mode: 0o600 });
  return file;
}

/**
 * A drill of a managed platform's backup on a server without that platform's own extensions
 * (the throwaway cluster, or a plain `--target-url`): the missing extensions that belong to the
 * backup's platform (`profile`, else the manifest's `options.profile`) are left out of the
 * restore with their comments, through a `pg_restore -L` list written into `dir`; any other
 * missing extension stays a problem. Plain SQL has no TOC: nothing is left out.
 * @param listText the archive's `pg_restore --list` output.
 * @returns `skipped` (extension names), `remaining` (still missing), and `listFile` when something is left out.
 */
export async function skipPlatformExtensions(o: { listText: string | undefined; missing: readonly string[]; profile: Profile | undefined; dir: string }): Promise<{ skipped: string[]; remaining: string[]; listFile?: string }> {
  const { profile } = o;
  if (!profile || o.listText === undefined) return { skipped: [], remaining: [...o.missing] };
  const skipped = o.missing.filter((e) => profile.platformExtensions.includes(e));
  const remaining = o.missing.filter((e) => !skipped.includes(e));
  if (!skipped.length) return { skipped, remaining };
  const ids = new Set<number>();
  for (const line of o.listText.split('\n')) {
    const m = /^(\d+); \d+ \d+ (?:EXTENSION - (\S+)|COMMENT - EXTENSION (\S+))/.exec(line);
    if (m && skipped.includes((m[2] ?? m[3])!)) ids.add(Number(m[1]));
  }
  return { skipped, remaining, listFile: await writeSkipList(o.listText, ids, o.dir) };
}
