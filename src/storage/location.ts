import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../errors.ts';

/** A parsed storage location: `s3://BUCKET/PREFIX` or `file:///DIR`. */
export type Location =
  | { driver: 's3'; bucket: string; prefix: string }
  | { driver: 'file'; root: string };

/**
 * S3 bucket naming rules (3–63 characters of lowercase letters, digits, dots and hyphens,
 * starting and ending with a letter or digit). Source: AWS S3 User Guide, "Bucket naming rules".
 * Some S3-compatible stores accept more, but every one accepts these.
 */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Parses a location URL given by `--to` / `--from`.
 * @throws UsageError naming the problem and the accepted forms.
 */
export function parseLocation(url: string): Location {
  const hint = 'use s3://BUCKET/PREFIX or file:///ABSOLUTE/DIR';
  if (!url || !url.trim()) throw new UsageError(`no storage location given: ${hint}`);
  if (url.startsWith('s3://')) {
    const rest = url.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash === -1 ? rest : rest.slice(0, slash);
    const prefix = slash === -1 ? '' : rest.slice(slash + 1);
    if (!BUCKET.test(bucket)) {
      throw new UsageError(`invalid bucket name ${JSON.stringify(bucket)} in ${url}: bucket names are 3-63 lowercase letters, digits, dots or hyphens; ${hint}`);
    }
    const segments = prefix.split('/').filter((s) => s !== '');
    if (segments.some((s) => s === '.' || s === '..') || /[\\\u0000-\u001f]/.test(prefix)) {
      throw new UsageError(`invalid prefix ${JSON.stringify(prefix)} in ${url}: no "." or ".." segments, backslashes or control characters`);
    }
    return { driver: 's3', bucket, prefix: segments.join('/') };
  }
  if (url.startsWith('file://')) {
    let root: string;
    try {
      root = fileURLToPath(url);
    } catch {
      throw new UsageError(`invalid file URL ${JSON.stringify(url)}: ${hint}`);
    }
    if (!path.isAbsolute(root)) throw new UsageError(`file URL must name an absolute directory: ${hint}`);
    return { driver: 'file', root: path.resolve(root) };
  }
  throw new UsageError(`unsupported storage location ${JSON.stringify(url)}: ${hint}`);
}
