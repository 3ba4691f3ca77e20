// Shared by test/integration/restore-table.test.ts and restore-swap.test.ts: a source database
// whose tables have what restore --table must bring along (an index, a foreign key among them
// and one to a table outside, a trigger with its function, serial and identity sequences, a
// comment, a grant to a role, an RLS policy), a second schema, and cleanup of databases and roles.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { createDatabase, sql } from './helpers.ts';

/** The source schema; `ROLE` is replaced by a random role name. */
export const SOURCE_SQL = `
  CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
  INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 40) g;
  CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id), note text, touched timestamptz);
  CREATE INDEX orders_note_idx ON orders (note);
  COMMENT ON TABLE orders IS 'every order';
  CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.touched := now(); RETURN NEW; END$$;
  CREATE TRIGGER orders_touch BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
  ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
  CREATE POLICY orders_all ON orders USING (true);
  GRANT SELECT ON orders TO ROLE;
  INSERT INTO orders (customer_id, note) SELECT 1 + g % 40, 'order ' || g FROM generate_series(1, 300) g;
  CREATE TABLE audit (id serial PRIMARY KEY, what text);
  INSERT INTO audit (what) SELECT 'event ' || g FROM generate_series(1, 25) g;
  CREATE SCHEMA sales;
  CREATE TABLE sales.regions (code text PRIMARY KEY, label text);
  INSERT INTO sales.regions VALUES ('eu', 'Europe'), ('us', 'United States');
  CREATE TABLE sales.targets (id serial PRIMARY KEY, region text REFERENCES sales.regions (code), amount int);
  INSERT INTO sales.targets (region, amount) SELECT CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 10) g;`;

/** A random role, dropped (with what it owns and its grants) after the test; returns its name. */
export async function randomRole(t: TestContext, databases: () => string[] | Promise<string[]>): Promise<string> {
  const role = `h26rst_${randomBytes(4).toString('hex')}`;
  await sql('postgres', `CREATE ROLE ${role} NOLOGIN`);
  t.after(async () => {
    for (const db of await databases()) await sql(db, `DROP OWNED BY ${role}`).catch(() => undefined);
    await sql('postgres', `DROP ROLE IF EXISTS ${role}`);
  });
  return role;
}

/** Databases to drop after the test (FORCE: a failed test may leave a session). */
export function dropAfter(t: TestContext): { add: (name: string) => string; all: () => string[] } {
  const names: string[] = [];
  t.after(async () => {
    for (const n of names.reverse()) await sql('postgres', `DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`).catch(() => undefined);
  });
  return { add: (n) => (names.push(n), n), all: () => [...names] };
}

/** A source database loaded with {@link SOURCE_SQL}, granting to `role`. */
export async function sourceDatabase(label: string, role: string): Promise<string> {
  const db = await createDatabase(label, false);
  await sql(db, SOURCE_SQL.replaceAll('ROLE', role));
  return db;
}

/**
 * Test-only path to a backup whose manifest disagrees with its archive: rewrites the row count
 * the manifest at `to`/`manifestKey` records for `table` (the archive is left as it is), as a
 * dump whose counts were taken wrong would be.
 */
export async function falsifyRowCount(to: string, manifestKey: string, schema: string, table: string, rows: number): Promise<void> {
  const file = `${fileURLToPath(to)}/${manifestKey}`;
  const manifest = JSON.parse(await readFile(file, 'utf8'));
  const entry = manifest.tables.find((x: { schema: string; table: string }) => x.schema === schema && x.table === table);
  if (!entry) throw new Error(`${schema}.${table} is not in the manifest`);
  entry.rows = rows;
  await writeFile(file, JSON.stringify(manifest, null, 2));
}
