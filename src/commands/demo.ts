import type { Logger } from '../log.ts';
import { CheckFailedError } from '../errors.ts';
import { startThrowawayCluster } from '../postgres/cluster.ts';
import { withDatabase } from '../postgres/connection.ts';
import { connect } from '../postgres/server.ts';
import { drill } from './drill.ts';
import { dump } from './dump.ts';
import { list } from './list.ts';
import { verify } from './verify.ts';

/**
 * A small shop database: tables with foreign keys, a sequence-backed key, an index, a view, a
 * function and a few thousand rows. Used by `pg-backup demo` and the tests.
 */
export const SAMPLE_SQL = `
CREATE TABLE customers (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE products (sku text PRIMARY KEY, title text NOT NULL, price_cents integer NOT NULL CHECK (price_cents >= 0));
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id), placed_at timestamptz NOT NULL, note text);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders(id), sku text NOT NULL REFERENCES products(sku), quantity integer NOT NULL, PRIMARY KEY (order_id, sku));
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE VIEW order_totals AS
  SELECT o.id, sum(i.quantity * p.price_cents) AS total_cents FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.sku = i.sku GROUP BY o.id;
CREATE FUNCTION customer_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM customers';
INSERT INTO customers (email, name, created_at)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g, timestamptz '2026-01-01' + g * interval '1 hour' FROM generate_series(1, 2000) g;
INSERT INTO products SELECT 'SKU-' || g, 'Product ' || g, 100 + g * 7 FROM generate_series(1, 50) g;
INSERT INTO orders (customer_id, placed_at, note)
  SELECT 1 + (g * 7919) % 2000, timestamptz '2026-02-01' + g * interval '5 minutes', CASE WHEN g % 10 = 0 THEN 'gift ' || md5(g::text) END FROM generate_series(1, 5000) g;
INSERT INTO order_items SELECT o, 'SKU-' || (1 + (o * 31 + k) % 50), 1 + k FROM generate_series(1, 5000) o, generate_series(0, 2) k;
`;

/**
 * Why the demo may run its clusters as the user's own OS user when neither root nor sudo is
 * there: it restores only the sample data it made itself, never a backup from elsewhere.
 */
const SAME_USER_REASON = 'the demo restores only the sample data it made itself';

/** What the demo did. */
export interface DemoSummary {
  database: string;
  backupUri: string;
  sizeBytes: number;
  sha256: string;
  rtoMs: number;
  tables: number;
  drillLogUri: string | undefined;
}

/**
 * The embedded default, end to end with no external services: starts a throwaway PostgreSQL,
 * creates the sample `shop` database, dumps it to `bucket` (default a local `file://`
 * directory), lists it, verifies it and drills it; then removes the cluster.
 * @throws CheckFailedError if verify or the drill fails.
 */
export async function demo(options: { bucket: string; logger: Logger; signal?: AbortSignal }): Promise<DemoSummary> {
  const { logger } = options;
  const source = await logger.group('starting a throwaway PostgreSQL with a sample database', async () => {
    const cluster = await startThrowawayCluster({ minMajor: 0, logger, allowSameOsUser: true, sameOsUserReason: SAME_USER_REASON });
    try {
      const admin = await connect(cluster.connection, 'pg-backup demo');
      await admin.query('CREATE DATABASE shop');
      await admin.end();
      const shop = await connect(withDatabase(cluster.connection, 'shop'), 'pg-backup demo');
      await shop.query(SAMPLE_SQL);
      await shop.end();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  });
  try {
    const databaseUrl = withDatabase(source.connection, 'shop').url;
    const dumped = await logger.group(`dump → ${options.bucket}`, () =>
      dump({ databaseUrl, to: options.bucket, service: 'demo', environment: 'local', logger, signal: options.signal }),
    );
    const listed = await list({ from: options.bucket, filter: { service: 'demo', environment: 'local', database: 'shop' } });
    logger.info(`list: ${listed.length} complete backup(s) of demo/local/shop, newest ${listed[0]?.key}`);
    const verified = await logger.group('verify', () => verify({ from: options.bucket, backup: dumped.objectKey, logger, signal: options.signal, allowSameOsUser: true, sameOsUserReason: SAME_USER_REASON }));
    if (!verified.ok) throw new CheckFailedError(`verify failed: ${verified.reason}`);
    const drilled = await logger.group('drill', () => drill({ from: options.bucket, backup: dumped.objectKey, logger, signal: options.signal, allowSameOsUser: true, sameOsUserReason: SAME_USER_REASON }));
    if (!drilled.ok) throw new CheckFailedError(`drill failed: ${drilled.reason}`);
    return {
      database: 'shop',
      backupUri: dumped.backupUri,
      sizeBytes: dumped.manifest.object.sizeBytes,
      sha256: dumped.manifest.object.sha256,
      rtoMs: drilled.rtoMs,
      tables: drilled.tables.length,
      drillLogUri: drilled.drillLogUri,
    };
  } finally {
    await source.stop();
  }
}
