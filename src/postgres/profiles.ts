import { UsageError } from '../errors.ts';

/** The managed platforms a profile exists for (`--profile`, action input `profile`, pg-backup.yml `profile`). */
export const PROFILE_NAMES = ['supabase', 'neon', 'rds', 'cloudsql', 'azure'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

/**
 * What a managed platform does differently, as far as a dump and a restore care. Every list
 * comes from the platform's own documentation or tooling (`sources`); a profile only sets
 * defaults: an explicit flag always wins (see {@link resolveDumpProfile} and
 * {@link resolveRestoreProfile}).
 */
export interface Profile {
  name: ProfileName;
  /** The platform's name as users know it. */
  title: string;
  /** Where each list below comes from. */
  sources: readonly string[];
  /**
   * Schemas the platform creates and manages itself in every database (psql patterns, as
   * `--exclude-schema` takes them): left out of the dump. Their objects are re-created by the
   * platform on a new project/instance; their rows are the platform's, not the application's.
   */
  excludeSchemas: readonly string[];
  /** Databases of the platform on every server (never the application's): for whole-server runs. */
  excludeDatabases: readonly string[];
  /**
   * Roles the platform creates on every server (regular expressions, anchored): objects owned by
   * them or granted to them restore only into that platform (or a server where they were created).
   */
  platformRoles: readonly string[];
  /**
   * Extensions only this platform ships (or manages itself): a restore elsewhere cannot create
   * them; restore such a backup into the platform, or leave them out of the restore (`-L`).
   */
  platformExtensions: readonly string[];
  /** The role an application's admin login is (or is a member of) on the platform: not a superuser. */
  adminRole: string;
  /**
   * Restore defaults into this platform as its admin login (not a superuser): `noOwner` (do not
   * restore ownership: the restoring role owns everything) and `noAcl` (do not restore grants),
   * each with the reason shown by `--profile` in the log.
   */
  restore: { noOwner: boolean; noAcl: boolean; why: string };
  /** How the profile is reported in one log line. */
  summary: string;
}

/**
 * Supabase. Source of the schema and role lists: the Supabase CLI's own `db dump`
 * (https://github.com/supabase/cli/blob/develop/pkg/migration/dump.go: `excludedSchemas`, the
 * schemas its data dump leaves out, and `reservedRoles`), and "Backup and Restore using the CLI"
 * (https://supabase.com/docs/guides/platform/migrating-within-supabase/backup-restore). As the
 * CLI's data dump does, `auth`, `storage`, `supabase_functions`, `cron`, `net` and `pgmq` are
 * kept (users, files' metadata, jobs and queues are the application's data); unlike it,
 * `supabase_migrations` is kept (the migration history is part of a backup) and so is
 * `extensions`: it holds only extension members, which pg_dump never dumps, and its CREATE
 * SCHEMA lets the backup's `CREATE EXTENSION … WITH SCHEMA extensions` restore on any server
 * (a drill's throwaway cluster included).
 */
const SUPABASE: Profile = {
  name: 'supabase',
  title: 'Supabase',
  sources: ['https://github.com/supabase/cli/blob/develop/pkg/migration/dump.go', 'https://supabase.com/docs/guides/platform/migrating-within-supabase/backup-restore'],
  excludeSchemas: [
    // Owned by extensions the platform installs.
    'graphql', 'graphql_public', 'pgsodium', 'pgsodium_masks', 'pgtle', 'repack', 'tiger', 'tiger_data', 'timescaledb_*', '_timescaledb_*', 'topology', 'vault',
    // Managed by Supabase.
    'etl', 'pgbouncer', 'realtime', '_analytics', '_realtime', '_supavisor',
  ],
  excludeDatabases: ['_supabase'],
  platformRoles: ['anon', 'authenticated', 'authenticator', 'cli_login_.*', 'dashboard_user', 'pgbouncer', 'postgres', 'service_role', 'supabase_.*', 'pgsodium_keyholder', 'pgsodium_keyiduser', 'pgsodium_keymaker', 'pgtle_admin'],
  platformExtensions: ['pg_graphql', 'pgsodium', 'supabase_vault', 'pgjwt', 'pg_net', 'pg_tle', 'wrappers', 'pg_jsonschema', 'pg_hashids', 'pgroonga', 'index_advisor', 'hypopg'],
  adminRole: 'postgres',
  restore: {
    noOwner: false,
    noAcl: false,
    why: 'the application\'s objects are owned by postgres, the login that restores them, and the grants to anon, authenticated and service_role (which every project has) are what the Data API and row-level security rely on',
  },
  summary: 'platform schemas left out (graphql, pgsodium, vault, realtime, …; auth and storage kept)',
};

/**
 * Neon. Sources: "Migrate data from Postgres with pg_dump and pg_restore"
 * (https://neon.com/docs/import/import-from-postgres: an unpooled connection string; ownership
 * to roles that do not exist in Neon fails) and "Manage roles"
 * (https://neon.com/docs/manage/roles: roles created in Neon are members of `neon_superuser`,
 * not superusers; `cloud_admin` is Neon's own superuser).
 */
const NEON: Profile = {
  name: 'neon',
  title: 'Neon',
  sources: ['https://neon.com/docs/import/import-from-postgres', 'https://neon.com/docs/manage/roles'],
  excludeSchemas: [],
  excludeDatabases: [],
  platformRoles: ['neon_superuser', 'cloud_admin', 'neon_service'],
  platformExtensions: ['neon', 'neon_utils', 'pg_session_jwt'],
  adminRole: 'neon_superuser',
  restore: {
    noOwner: true,
    noAcl: false,
    why: 'the restoring login is a member of neon_superuser, not a superuser: ALTER … OWNER TO another role needs membership in it, so ownership is left to the restoring role; grants are kept (the roles they name must exist, the pre-flight says which do not)',
  },
  summary: 'no platform schemas; restores without owners',
};

/**
 * Amazon RDS and Aurora PostgreSQL. Source: "Understanding the rds_superuser role"
 * (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Appendix.PostgreSQL.CommonDBATasks.Roles.rds_superuser.html):
 * the master user is `NOSUPERUSER` with `rds_superuser`; `rdsadmin` is the platform's own
 * superuser and database.
 */
const RDS: Profile = {
  name: 'rds',
  title: 'Amazon RDS / Aurora PostgreSQL',
  sources: ['https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Appendix.PostgreSQL.CommonDBATasks.Roles.rds_superuser.html'],
  excludeSchemas: [],
  excludeDatabases: ['rdsadmin'],
  platformRoles: ['rdsadmin', 'rds_.*', 'rdsrepladmin', 'rdstopmgr'],
  platformExtensions: ['aws_commons', 'aws_s3', 'aws_lambda', 'apg_plan_mgmt', 'aurora_stat_utils', 'rds_tools', 'pg_transport', 'rds_activity_stream'],
  adminRole: 'rds_superuser',
  restore: {
    noOwner: true,
    noAcl: false,
    why: 'the master user has rds_superuser, not superuser: it gives objects only to roles it is a member of, so ownership is left to the restoring role; grants are kept (the roles they name must exist)',
  },
  summary: 'no platform schemas (rdsadmin is its own database); restores without owners',
};

/**
 * Google Cloud SQL for PostgreSQL. Sources: "Export and import using pg_dump, pg_dumpall, and
 * pg_restore" (https://cloud.google.com/sql/docs/postgres/import-export/import-export-dmp: a dump
 * for Cloud SQL is made with `--no-owner` and `--no-acl`) and "About PostgreSQL users and roles"
 * (https://cloud.google.com/sql/docs/postgres/users: `cloudsqlsuperuser`, no superuser for
 * customers; `cloudsqladmin` is the platform's).
 */
const CLOUDSQL: Profile = {
  name: 'cloudsql',
  title: 'Google Cloud SQL for PostgreSQL',
  sources: ['https://cloud.google.com/sql/docs/postgres/import-export/import-export-dmp', 'https://cloud.google.com/sql/docs/postgres/users'],
  excludeSchemas: [],
  excludeDatabases: ['cloudsqladmin'],
  platformRoles: ['cloudsqladmin', 'cloudsqlagent', 'cloudsqlsuperuser', 'cloudsqlimportexport', 'cloudsqlreplica', 'cloudsqliamuser', 'cloudsqliamserviceaccount', 'cloudsqliamgroup', 'cloudsqlobservabilityadmin'],
  platformExtensions: ['google_ml_integration', 'google_columnar_engine'],
  adminRole: 'cloudsqlsuperuser',
  restore: {
    noOwner: true,
    noAcl: true,
    why: 'Google\'s own import instructions leave out ownership and grants (--no-owner --no-acl): the importing user is a cloudsqlsuperuser member, not a superuser',
  },
  summary: 'no platform schemas (cloudsqladmin is its own database); restores without owners and grants',
};

/**
 * Azure Database for PostgreSQL flexible server. Source: "Security in Azure Database for
 * PostgreSQL flexible server" / roles
 * (https://learn.microsoft.com/en-us/azure/postgresql/flexible-server/how-to-create-users: the
 * administrator is a member of `azure_pg_admin`, not a superuser; `azuresu` is the platform's
 * superuser, `azure_maintenance` and `azure_sys` its databases).
 */
const AZURE: Profile = {
  name: 'azure',
  title: 'Azure Database for PostgreSQL flexible server',
  sources: ['https://learn.microsoft.com/en-us/azure/postgresql/flexible-server/how-to-create-users'],
  excludeSchemas: [],
  excludeDatabases: ['azure_maintenance', 'azure_sys'],
  platformRoles: ['azuresu', 'azure_pg_admin', 'azure_superuser', 'replication', 'localadmin'],
  platformExtensions: ['azure', 'azure_ai', 'azure_storage', 'pg_azure_storage', 'pgms_wait_sampling', 'age'],
  adminRole: 'azure_pg_admin',
  restore: {
    noOwner: true,
    noAcl: false,
    why: 'the administrator is a member of azure_pg_admin, not a superuser: it gives objects only to roles it is a member of, so ownership is left to the restoring role; grants are kept (the roles they name must exist)',
  },
  summary: 'no platform schemas (azure_maintenance and azure_sys are their own databases); restores without owners',
};

/** Every profile by name. */
export const PROFILES: Readonly<Record<ProfileName, Profile>> = Object.freeze({ supabase: SUPABASE, neon: NEON, rds: RDS, cloudsql: CLOUDSQL, azure: AZURE });

/**
 * The profile of a name (trimmed, case-insensitive); undefined for an empty or absent name.
 * @throws UsageError for an unknown name, listing the known ones.
 */
export function findProfile(name: string | undefined): Profile | undefined {
  const n = name?.trim().toLowerCase();
  if (!n) return undefined;
  const p = (PROFILES as Record<string, Profile>)[n];
  if (!p) throw new UsageError(`unknown profile ${JSON.stringify(name)}: use one of ${PROFILE_NAMES.join(', ')}`);
  return p;
}

/** A dump's selection after its profile: what pg_dump gets, and what came from the profile. */
export interface ResolvedDumpProfile {
  /** The user's `--exclude-schema` patterns, then the profile's (without those the user includes). */
  excludeSchemas: string[];
  /** The profile's patterns that were added (for the log, and to keep quiet a pattern that matches nothing here). */
  fromProfile: string[];
}

/**
 * Applies a profile to a dump's schema filters: the profile's platform schemas are excluded,
 * except a schema the user names with `--schema` (an explicit flag wins: `--profile supabase
 * --schema realtime` dumps `realtime`). The user's own exclusions are kept first.
 */
export function resolveDumpProfile(profile: Profile | undefined, selection: { schemas?: readonly string[]; excludeSchemas?: readonly string[] }): ResolvedDumpProfile {
  const own = [...(selection.excludeSchemas ?? [])];
  if (!profile) return { excludeSchemas: own, fromProfile: [] };
  const included = new Set(selection.schemas ?? []);
  const fromProfile = profile.excludeSchemas.filter((s) => !included.has(s) && !own.includes(s));
  return { excludeSchemas: [...own, ...fromProfile], fromProfile };
}

/** A restore's owner and grant settings after its profile, and where each came from. */
export interface ResolvedRestoreProfile {
  noOwner: boolean;
  noAcl: boolean;
  /** One line for the log: what the profile set and why (absent without a profile). */
  note?: string;
}

/**
 * Applies a profile to a restore's `--no-owner` / `--no-acl`: an explicit choice (`true` or
 * `false`: `--no-owner` or `--owner`, `--no-acl` or `--acl`) wins; otherwise the profile's default
 * for restoring into that platform; without a profile, both false (PostgreSQL's own default).
 */
export function resolveRestoreProfile(profile: Profile | undefined, explicit: { noOwner?: boolean; noAcl?: boolean }): ResolvedRestoreProfile {
  const noOwner = explicit.noOwner ?? profile?.restore.noOwner ?? false;
  const noAcl = explicit.noAcl ?? profile?.restore.noAcl ?? false;
  if (!profile) return { noOwner, noAcl };
  const set = [explicit.noOwner === undefined && profile.restore.noOwner ? '--no-owner' : '', explicit.noAcl === undefined && profile.restore.noAcl ? '--no-acl' : ''].filter(Boolean);
  const note = `profile ${profile.name}: ${set.length ? `${set.join(' ')} by default` : 'owners and grants restored'} (${profile.restore.why})`;
  return { noOwner, noAcl, note };
}

/** Whether `role` is one of the profile's platform roles (its patterns, anchored). */
export function isPlatformRole(profile: Profile, role: string): boolean {
  return profile.platformRoles.some((p) => new RegExp(`^(?:${p})$`).test(role));
}

/**
 * Which known platform a set of role names comes from (a server's `pg_roles`, or a manifest's
 * `roles`): the profile with the most roles of its own among them (at least one distinctive
 * role: `rds_superuser`, `cloudsqlsuperuser`, `azure_pg_admin`, `neon_superuser`,
 * `supabase_admin`), or undefined.
 */
export function detectPlatform(roles: readonly string[]): Profile | undefined {
  const marks: Record<ProfileName, string> = { supabase: 'supabase_admin', neon: 'neon_superuser', rds: 'rds_superuser', cloudsql: 'cloudsqlsuperuser', azure: 'azure_pg_admin' };
  return Object.values(PROFILES).find((p) => roles.includes(marks[p.name]));
}
