// Shared helpers for the integration and end-to-end tests. The services come from
// scripts/test.ts (npm test); a missing variable fails the test instead of skipping it.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { SAMPLE_SQL } from '../src/commands/demo.ts';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A test-service variable set by scripts/test.ts; throws when missing (never skips). */
export function need(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with "npm test", which starts PostgreSQL and Ceph RGW`);
  return value;
}

export const s3Env = () => ({
  AWS_ACCESS_KEY_ID: need('PGB_TEST_S3_ACCESS_KEY'),
  AWS_SECRET_ACCESS_KEY: need('PGB_TEST_S3_SECRET_KEY'),
  AWS_ENDPOINT_URL_S3: need('PGB_TEST_S3_ENDPOINT'),
  AWS_REGION: 'us-east-1',
});

/** A fresh `s3://bucket/prefix` for one test. */
export function s3Location(label: string): string {
  return `s3://${need('PGB_TEST_S3_BUCKET')}/t-${label}-${randomBytes(4).toString('hex')}`;
}

/** The bucket directories {@link fileLocation} made in this process, removed when it exits. */
const fileBuckets = new Set<string>();

/**
 * A fresh `file://` bucket directory for one test. It is removed when the test file's process
 * exits, also when the file runs alone (`node --test file`), outside the per-file TMPDIR of
 * scripts/test.ts.
 */
export async function fileLocation(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-bucket-'));
  if (fileBuckets.size === 0) process.once('exit', () => fileBuckets.forEach((d) => rmSync(d, { recursive: true, force: true })));
  fileBuckets.add(dir);
  return `file://${dir}`;
}

export function s3Client(): S3Client {
  const env = s3Env();
  return new S3Client({
    endpoint: env.AWS_ENDPOINT_URL_S3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** Every key under an `s3://bucket/prefix` location (relative to the prefix). */
export async function s3Keys(location: string): Promise<string[]> {
  const [bucket, ...rest] = location.replace('s3://', '').split('/');
  const prefix = `${rest.join('/')}/`;
  const client = s3Client();
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.push(o.Key!.slice(prefix.length));
    token = page.NextContinuationToken;
  } while (token);
  client.destroy();
  return keys;
}

/** Multipart uploads still open under a location (there must be none after a failed dump). */
export async function openMultipartUploads(location: string): Promise<string[]> {
  const [bucket, ...rest] = location.replace('s3://', '').split('/');
  const client = s3Client();
  const out = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `${rest.join('/')}/` }));
  client.destroy();
  return (out.Uploads ?? []).map((u) => u.Key!);
}

/** The server's superuser URL (with password). */
export const adminUrl = () => need('PGB_TEST_PG_URL');

/** The URL of `database` on the test server. */
export function dbUrl(database: string): string {
  const u = new URL(adminUrl());
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.href;
}

/** Runs SQL on a database of the test server. */
export async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(database: string, text: string): Promise<T[]> {
  // Parts, not a URL: pg's URL parser leaves %24 or %2F in a database name encoded.
  const u = new URL(adminUrl());
  const client = new pg.Client({ host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), database });
  await client.connect();
  try {
    const r = await client.query<T>(text);
    return Array.isArray(r) ? (r.at(-1)?.rows ?? []) : r.rows;
  } finally {
    await client.end();
  }
}

/** Creates a uniquely named database, optionally loaded with the sample shop schema and data. */
export async function createDatabase(label: string, withSample = true): Promise<string> {
  const name = `${label}_${randomBytes(3).toString('hex')}`;
  await sql('postgres', `CREATE DATABASE "${name}"`);
  if (withSample) await sql(name, SAMPLE_SQL);
  return name;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion, collecting its output. */
export function run(cmd: string, args: string[], options: { env?: Record<string, string | undefined>; input?: string; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd ?? root, env: { ...process.env, ...options.env } as NodeJS.ProcessEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
    child.stdin.on('error', () => undefined); // a program that never reads its input
    child.stdin.end(options.input ?? '');
  });
}

/** Runs the CLI (`bin/pg-backup.js`) as a user would. */
export function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  return run(process.execPath, [path.join(root, 'bin/pg-backup.js'), ...args], { env: { ...s3Env(), DATABASE_URL: undefined, ...env } });
}

/** The result of running an action bundle as the runner does. */
export interface ActionRun extends RunResult {
  outputs: Record<string, string>;
  summary: string;
}

/**
 * Runs `actions/<name>/dist/index.js` the way the GitHub runner does: inputs as `INPUT_<NAME>`
 * variables (upper-cased, hyphens kept), outputs and summary through the files named by
 * `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY`. Defaults from action.yml are applied by the runner,
 * so tests pass them explicitly when they matter.
 */
export async function runActionBundle(name: 'dump' | 'verify' | 'drill' | 'prune', inputs: Record<string, string>, env: Record<string, string | undefined> = {}): Promise<ActionRun> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-action-'));
  const outputFile = path.join(dir, 'output');
  const summaryFile = path.join(dir, 'summary');
  await writeFile(outputFile, '');
  await writeFile(summaryFile, '');
  const inputEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(inputs)) inputEnv[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v;
  try {
    const result = await run(process.execPath, [path.join(root, 'actions', name, 'dist', 'index.js')], {
      env: { GITHUB_OUTPUT: outputFile, GITHUB_STEP_SUMMARY: summaryFile, DATABASE_URL: undefined, ...inputEnv, ...env },
    });
    return { ...result, outputs: parseOutputFile(await readFile(outputFile, 'utf8')), summary: await readFile(summaryFile, 'utf8') };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Parses the runner's `GITHUB_OUTPUT` file format (`name<<DELIM\nvalue\nDELIM`). */
export function parseOutputFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i]!);
    if (!m) continue;
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== m[2]; i++) value.push(lines[i]!);
    out[m[1]!] = value.join('\n');
  }
  return out;
}

/** sha256 of a file via sha256sum. */
export function execFileText(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => execFile(cmd, args, (err, stdout) => (err ? reject(err) : resolve(stdout))));
}

/** The newest Debian PostgreSQL bin directory on this machine. */
export async function realPgBin(): Promise<string> {
  const { readdir } = await import('node:fs/promises');
  const majors = (await readdir('/usr/lib/postgresql')).filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(a) - Number(b));
  if (!majors.length) throw new Error('no /usr/lib/postgresql/<major>/bin: install Debian postgresql');
  return `/usr/lib/postgresql/${majors.at(-1)}/bin`;
}

/**
 * A PG_BIN_DIR whose pg_dump is a shell script (`body`, with $REAL pointing at the real bin dir)
 * and whose other programs are the real ones. For simulating a failing or outdated pg_dump.
 */
export async function fakePgBin(body: string): Promise<string> {
  const { chmod, symlink } = await import('node:fs/promises');
  const real = await realPgBin();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-fakebin-'));
  for (const p of ['pg_restore', 'psql', 'initdb', 'pg_ctl', 'postgres']) await symlink(path.join(real, p), path.join(dir, p));
  await writeFile(path.join(dir, 'pg_dump'), `#!/bin/bash\nREAL=${real}\nif [ "$1" = "--version" ]; then exec "$REAL/pg_dump" --version; fi\n${body}\n`);
  await chmod(path.join(dir, 'pg_dump'), 0o755);
  await chmod(dir, 0o755);
  return dir;
}

/** Fills `big` with ~`megabytes` MB of base64 text that zstd cannot shrink much. */
export async function addBigTable(database: string, megabytes: number): Promise<void> {
  const rows = Math.ceil((megabytes * 1e6) / 180);
  await sql(database, `CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
    INSERT INTO big SELECT g, encode(sha512(g::text::bytea) || sha512((g + 1)::text::bytea), 'base64') FROM generate_series(1, ${rows}) g;`);
}

function splitLocation(location: string): { bucket: string; prefix: string } {
  const [bucket, ...rest] = location.replace('s3://', '').split('/');
  return { bucket: bucket!, prefix: rest.join('/') };
}

/** Reads an object under an `s3://` location. */
export async function s3Get(location: string, key: string): Promise<Buffer> {
  const { GetObjectCommand } = await import('@aws-sdk/client-s3');
  const { bucket, prefix } = splitLocation(location);
  const client = s3Client();
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}` }));
    return Buffer.from(await out.Body!.transformToByteArray());
  } finally {
    client.destroy();
  }
}

/** Writes (or with `undefined`, deletes) an object under an `s3://` location: for corrupting backups. */
export async function s3Put(location: string, key: string, body: Buffer | string | undefined): Promise<void> {
  const { DeleteObjectCommand, PutObjectCommand } = await import('@aws-sdk/client-s3');
  const { bucket, prefix } = splitLocation(location);
  const client = s3Client();
  try {
    if (body === undefined) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}` }));
    else await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}`, Body: body }));
  } finally {
    client.destroy();
  }
}

/** Dumps `database` to `to` with the CLI and returns the parsed `--json` manifest. */
export async function dumpWithCli(database: string, to: string, extra: string[] = []): Promise<{ manifest: any; objectKey: string; manifestKey: string }> {
  const r = await cli(['dump', '--to', to, '--json', ...extra], { DATABASE_URL: dbUrl(database) });
  if (r.code !== 0) throw new Error(`dump failed: ${r.stderr}`);
  const manifest = JSON.parse(r.stdout);
  const base = `${to}/`;
  return { manifest, objectKey: manifest.backupUri.replace(base, ''), manifestKey: manifest.manifestUri.replace(base, '') };
}
