import type pg from 'pg';

/** The migration head a schema-migration tool recorded in the database. */
export interface MigrationHead {
  /** The tool's table, e.g. `public.alembic_version`. */
  table: string;
  /** The newest applied migration (several alembic heads are joined with `,`). */
  head: string;
}

/**
 * Migration tables of the common tools and how to read their newest applied migration, in
 * the order they are looked for. Each query reads `%s` = the quoted table name.
 */
const TOOLS: { table: string; query: string }[] = [
  { table: 'alembic_version', query: 'SELECT string_agg(version_num::text, \',\' ORDER BY version_num) AS head FROM %s' },
  { table: 'flyway_schema_history', query: 'SELECT version::text AS head FROM %s WHERE success AND version IS NOT NULL ORDER BY installed_rank DESC LIMIT 1' },
  { table: '_prisma_migrations', query: 'SELECT migration_name::text AS head FROM %s WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY finished_at DESC, migration_name DESC LIMIT 1' },
  { table: 'django_migrations', query: "SELECT app || '.' || name AS head FROM %s ORDER BY id DESC LIMIT 1" },
  { table: 'knex_migrations', query: 'SELECT name::text AS head FROM %s ORDER BY id DESC LIMIT 1' },
  // Rails (timestamp strings) and golang-migrate (one bigint row): the greatest version.
  { table: 'schema_migrations', query: 'SELECT max(version::text) AS head FROM %s' },
];

/**
 * Finds the migration head of alembic, Flyway, Prisma, Django, Knex, Rails or golang-migrate,
 * whichever table exists (first in that order; tables in `search_path` schemas first). Runs in
 * the client's current transaction, so inside a dump's snapshot it reads the dumped state.
 * Returns undefined when no migration table exists or it is empty. Pass `inTransaction` when the
 * client is inside a transaction that must survive a failing probe (it then uses a savepoint).
 */
export async function findMigrationHead(client: pg.Client, inTransaction = false): Promise<MigrationHead | undefined> {
  const { rows } = await client.query<{ schema: string; table: string }>(
    `SELECT n.nspname AS schema, c.relname AS table
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])
        AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      ORDER BY array_position($1::text[], c.relname::text), (n.nspname = ANY(current_schemas(false))) DESC, n.nspname`,
    [TOOLS.map((t) => t.table)],
  );
  for (const row of rows) {
    const tool = TOOLS.find((t) => t.table === row.table)!;
    const qualified = `${client.escapeIdentifier(row.schema)}.${client.escapeIdentifier(row.table)}`;
    try {
      if (inTransaction) await client.query('SAVEPOINT pgb_migration_head');
      const result = await client.query<{ head: string | null }>(tool.query.replace('%s', qualified));
      if (inTransaction) await client.query('RELEASE SAVEPOINT pgb_migration_head');
      const head = result.rows[0]?.head;
      if (head) return { table: `${row.schema}.${row.table}`, head };
    } catch {
      // A table of that name with other columns: not this tool's.
      if (inTransaction) await client.query('ROLLBACK TO SAVEPOINT pgb_migration_head');
    }
  }
  return undefined;
}
