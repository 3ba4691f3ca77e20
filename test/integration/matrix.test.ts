import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cli, createDatabase, dumpWithCli, s3Location } from '../helpers.ts';
import { tempLocation } from '../infra/temp.ts';

// Every supported format x compression x storage driver: dump, verify, drill.
const formats = ['custom', 'plain', 'directory'];
const compressions = ['zstd', 'gzip:1', 'none'];
const drivers = ['s3', 'file'] as const;

describe('round trip matrix', () => {
  for (const format of formats) {
    for (const compression of compressions) {
      for (const driver of drivers) {
        it(`${format} × ${compression} × ${driver}: dump → verify → drill`, async () => {
          const db = await createDatabase('matrix');
          const to = driver === 's3' ? s3Location('matrix') : await tempLocation();
          const { manifest, objectKey } = await dumpWithCli(db, to, ['--compression', compression, '--format', format, ...(format === 'directory' ? ['--jobs', '2'] : [])]);
          assert.equal(manifest.format, format);
          assert.equal(manifest.compression.algorithm, compression.split(':')[0]);
          const base = { custom: '.dump', plain: '.sql', directory: '.dir' }[format]!;
          const suffix = format === 'directory' ? '' : { zstd: '.zst', gzip: '.gz', none: '' }[manifest.compression.algorithm as string]!;
          assert.ok(objectKey.endsWith(base + suffix), objectKey);
          if (format === 'directory') assert.ok(manifest.files.some((f: { name: string }) => f.name === 'toc.dat'));
          const v = await cli(['verify', '--from', to, '--backup', objectKey]);
          assert.equal(v.code, 0, v.stderr);
          const d = await cli(['drill', '--from', to, '--backup', objectKey, '--json']);
          assert.equal(d.code, 0, d.stderr);
          assert.equal(JSON.parse(d.stdout).tables.length, 4);
        });
      }
    }
  }
});
