import { randomBytes } from 'node:crypto';
import { dbUrl, sql } from '../helpers.ts';

/** A login role with a random name on the shared test server, and URLs that connect as it. */
export interface TestRole {
  name: string;
  password: string;
  /** Databases (not owned by the role) where it may own objects: DROP OWNED there on removal. */
  databases: string[];
  /** The URL of `database` on the test server, connecting as this role. */
  url(database: string): string;
}

/**
 * Creates a random-named role on the shared server (roles are cluster-wide: never a fixed
 * name), `attributes` e.g. `LOGIN CREATEDB`, and registers its removal with `after` (t.after):
 * the databases it owns are dropped first, then what it owns in `databases`, then the role.
 */
export async function createRole(label: string, after: (fn: () => Promise<void>) => void, attributes = 'LOGIN'): Promise<TestRole> {
  const name = `${label}_${randomBytes(3).toString('hex')}`;
  const password = `pw_${randomBytes(6).toString('hex')}`;
  await sql('postgres', `CREATE ROLE ${name} ${attributes} PASSWORD '${password}'`);
  after(async () => {
    const owned = await sql<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = '${name}')`);
    for (const d of owned) await sql('postgres', `DROP DATABASE "${d.datname}" WITH (FORCE)`);
    for (const d of role.databases) await sql(d, `DROP OWNED BY ${name} CASCADE`).catch(() => undefined);
    await sql('postgres', `DROP ROLE IF EXISTS ${name}`);
  });
  const role: TestRole = {
    databases: [],
    name,
    password,
    url(database: string) {
      const u = new URL(dbUrl(database));
      u.username = name;
      u.password = password;
      return u.href;
    },
  };
  return role;
}
