// A bucket writer cannot break listings with an object named in a way the tool never names one:
// a key holding a control character, under the same prefix as real backups, is left out of the
// listing (Storage.list, isSafeKey) instead of failing `list`, `verify --backup latest` and
// `prune` for every backup beside it.
import assert from 'node:assert/strict';
import { rm, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cli, createDatabase, dbUrl, dumpWithCli, fileLocation, s3Env, s3Location, s3Put, sql } from '../helpers.ts';

describe('objects with unsafe keys beside real backups', () => {
  for (const kind of ['file', 's3'] as const) {
    it(`${kind}:// — list, verify latest and a prune plan still work and name only the real backup`, async (t) => {
      const db = await createDatabase('unsafekeys');
      t.after(() => sql('postgres', `DROP DATABASE IF EXISTS "${db}"`));
      const location = kind === 'file' ? await fileLocation() : s3Location('unsafe-keys');
      if (kind === 'file') t.after(() => rm(location.replace('file://', ''), { recursive: true, force: true }));
      const env = kind === 's3' ? s3Env() : {};
      const { manifest, manifestKey } = await (kind === 's3' ? dumpWithCliS3(db, location) : dumpWithCli(db, location));
      // A manifest key of the tool's own shape whose database segment carries raw control
      // characters (the tool writes such a name percent-encoded, never raw).
      const segments = manifestKey.split('/');
      segments[segments.length - 5] = `${segments[segments.length - 5]}\u001b]52;c;aGk=\u0007`;
      const hostileKey = segments.join('/');
      if (kind === 'file') {
        const dir = path.join(location.replace('file://', ''), path.posix.dirname(hostileKey));
        await mkdir(dir, { recursive: true });
        await writeFile(path.join(location.replace('file://', ''), hostileKey), '{}');
      } else {
        await s3Put(location, hostileKey, '{}');
      }
      const list = await cli(['list', '--from', location, '--json'], env);
      assert.equal(list.code, 0, list.stderr);
      const listed = JSON.parse(list.stdout) as { id: string }[];
      assert.deepEqual(listed.filter((b) => !b.id.startsWith('@globals-')).map((b) => b.id), [manifest.id]);
      const verify = await cli(['verify', '--from', location, '--backup', 'latest', '--level', 'checksum'], env);
      assert.equal(verify.code, 0, verify.stderr);
      const prune = await cli(['prune', '--from', location, '--keep-last', '1'], env);
      assert.equal(prune.code, 0, prune.stderr);
      assert.doesNotMatch(prune.stdout + prune.stderr, /\u001b|unsafe storage key/);
    });
  }
});

async function dumpWithCliS3(db: string, location: string) {
  const r = await cli(['dump', '--to', location, '--json'], { ...s3Env(), DATABASE_URL: dbUrl(db) });
  if (r.code !== 0) throw new Error(`dump failed: ${r.stderr}`);
  const manifest = JSON.parse(r.stdout);
  return { manifest, objectKey: manifest.backupUri.replace(`${location}/`, ''), manifestKey: manifest.manifestUri.replace(`${location}/`, '') };
}
