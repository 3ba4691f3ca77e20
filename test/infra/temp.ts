// Temp directories a test file makes and removes when it ends: each helper below makes one as
// its namesake in test/helpers.ts (or mkdtemp) does, and a root-level `after` hook, registered
// once in the importing test file's process, removes them all. For tests that make a location
// or directory and do not remove it themselves; scripts/test.ts fails a run that leaves one.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fakePgBin, fileLocation } from '../helpers.ts';

const made: string[] = [];
after(async () => {
  for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** Removes `dir` (a directory or a file) when the test file ends; returns it. */
export function removeAfterFile(dir: string): string {
  made.push(dir);
  return dir;
}

/** A fresh `file://` bucket directory (as `fileLocation`), removed when the test file ends. */
export async function tempLocation(): Promise<string> {
  const location = await fileLocation();
  removeAfterFile(fileURLToPath(location));
  return location;
}

/** A fresh directory `os.tmpdir()/<prefix>XXXXXX` (as `mkdtemp`), removed when the test file ends. */
export async function tempDir(prefix: string): Promise<string> {
  return removeAfterFile(await mkdtemp(path.join(os.tmpdir(), prefix)));
}

/** A PG_BIN_DIR with a scripted pg_dump (as `fakePgBin`), removed when the test file ends. */
export async function tempFakePgBin(body: string): Promise<string> {
  return removeAfterFile(await fakePgBin(body));
}
