// Signed drill results end to end: the CLI drill of a file:// backup (dumped from the shared
// PostgreSQL) with --sign-key writes the report, its log and a DSSE envelope beside them;
// `evidence verify --public-key` says `signed OK`; a report changed afterwards, a statement
// signed by another key, one about another backup's digest, and an unsigned drill are each
// named and exit 1; `status`/`prune --require-signed-drills` count only the signed drill.
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cli, createDatabase, dumpWithCli, fileLocation, run, sql } from '../helpers.ts';
import { drillEnvelopeLine } from '../../src/evidence/record.ts';
import { loadSigningKey } from '../../src/evidence/dsse.ts';
import { logicalSubject } from '../../src/evidence/statement.ts';

let to: string;
let dir: string;
let keys: string;
let database: string;
let first: { manifest: any; objectKey: string };
let second: { manifest: any; objectKey: string };

async function walk(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.relative(root, path.join(e.parentPath, e.name)));
  return out.sort();
}

before(async () => {
  database = await createDatabase('signed');
  to = await fileLocation();
  dir = fileURLToPath(to);
  first = await dumpWithCli(database, to);
  // Two dumps of the same data within one second can be byte for byte the same archive (same
  // sha256): a row more makes the second a different object, so "another digest" is one.
  await sql(database, 'CREATE TABLE signed_marker AS SELECT 1 AS n');
  second = await dumpWithCli(database, to);
  assert.notEqual(first.manifest.object.sha256, second.manifest.object.sha256);
  keys = await mkdtemp(path.join(os.tmpdir(), 'pgb-signkeys-'));
  for (const name of ['drill', 'intruder']) {
    assert.equal((await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', path.join(keys, `${name}.pem`)])).code, 0);
    assert.equal((await run('openssl', ['pkey', '-in', path.join(keys, `${name}.pem`), '-pubout', '-out', path.join(keys, `${name}.pub`)])).code, 0);
  }
}, { timeout: 120_000 });
after(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(keys, { recursive: true, force: true });
});

describe('signed drill results', () => {
  it('a drill with --sign-key is signed OK; changed, re-signed or re-pointed evidence is named and exits 1', { timeout: 240_000 }, async () => {
    const d = await cli(['drill', '--from', to, '--backup', first.manifest.id, '--sign-key', path.join(keys, 'drill.pem'), '--json']);
    assert.equal(d.code, 0, d.stderr);
    const drilled = JSON.parse(d.stdout);
    assert.equal(drilled.ok, true);
    assert.match(drilled.drillEvidenceUri, /-drill-\d{8}T\d{6}\.\d{3}Z\.intoto\.jsonl$/);
    const files = await walk(dir);
    const reportKey = files.find((f) => f.startsWith('drills/') && f.endsWith('Z.json'))!;
    const envelopeKey = reportKey.replace(/\.json$/, '.intoto.jsonl');
    assert.ok(files.includes(envelopeKey), files.join('\n'));
    assert.ok(files.includes(reportKey.replace(/\.json$/, '.log')));
    const report = JSON.parse(await readFile(path.join(dir, reportKey), 'utf8'));
    assert.equal(report.runner.node, process.version);
    assert.equal(typeof report.runner.os, 'string');

    const pub = path.join(keys, 'drill.pub');
    let v = await cli(['evidence', 'verify', '--from', to, '--public-key', pub]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, new RegExp(`^signed OK +default/default/${database} +${first.manifest.id} +drill \\S+ OK `, 'm'));
    const json = JSON.parse((await cli(['evidence', 'verify', '--from', to, '--public-key', pub, '--json'])).stdout);
    assert.deepEqual(json.reports.map((r: any) => r.label), ['signed OK']);

    // The intruder's key is not trusted.
    v = await cli(['evidence', 'verify', '--from', to, '--public-key', path.join(keys, 'intruder.pub')]);
    assert.equal(v.code, 1);
    assert.match(v.stdout, /^FORGED \(bad signature\) /m);

    // A report changed after the drill (row counts, the verdict): the signed predicate differs.
    const original = await readFile(path.join(dir, reportKey), 'utf8');
    await writeFile(path.join(dir, reportKey), original.replace(/"rtoMs": \d+/, '"rtoMs": 1'));
    v = await cli(['evidence', 'verify', '--from', to, '--public-key', pub]);
    assert.equal(v.code, 1);
    assert.match(v.stdout, /^FORGED \(report differs from its signed statement\) /m);
    assert.match(v.stderr, /evidence verify failed: 1 of 1 drill report not valid/);
    await writeFile(path.join(dir, reportKey), original);

    // The drill's key signing a statement about another digest (the second backup's).
    const goodEnvelope = await readFile(path.join(dir, envelopeKey), 'utf8');
    await writeFile(path.join(dir, envelopeKey), drillEnvelopeLine(original, { subject: logicalSubject(first.objectKey, second.manifest.object.sha256), signingKey: loadSigningKey(path.join(keys, 'drill.pem')) }));
    v = await cli(['evidence', 'verify', '--from', to, '--public-key', pub]);
    assert.equal(v.code, 1);
    assert.match(v.stdout, new RegExp(`^WRONG SUBJECT .*the statement is about sha256 ${second.manifest.object.sha256}, the backup's manifest says ${first.manifest.object.sha256}`, 'm'));
    await writeFile(path.join(dir, envelopeKey), goodEnvelope);

    // A second drill without a key: its statement exists, unsigned.
    const u = await cli(['drill', '--from', to, '--backup', second.manifest.id, '--json']);
    assert.equal(u.code, 0, u.stderr);
    v = await cli(['evidence', 'verify', '--from', to, '--public-key', pub, '--json']);
    assert.equal(v.code, 1);
    const byId = Object.fromEntries(JSON.parse(v.stdout).reports.map((r: any) => [r.backupId, r.label]));
    assert.deepEqual(byId, { [first.manifest.id]: 'signed OK', [second.manifest.id]: 'UNSIGNED' });
    // --backup narrows to one backup's drills.
    v = await cli(['evidence', 'verify', '--from', to, '--public-key', pub, '--backup', first.manifest.id]);
    assert.equal(v.code, 0, v.stdout + v.stderr);

    // status: with --require-signed-drills only the signed drill counts, the unsigned one is named.
    const s = await cli(['status', '--from', to, '--json', '--require-signed-drills', '--public-key', pub]);
    const fleet = JSON.parse(s.stdout);
    assert.equal(fleet.databases[0].lastDrill.backupId, first.manifest.id, s.stderr);
    assert.ok(fleet.warnings.some((w: string) => w.includes('is UNSIGNED')), JSON.stringify(fleet.warnings));
    const plain = JSON.parse((await cli(['status', '--from', to, '--json'])).stdout);
    assert.equal(plain.databases[0].lastDrill.backupId, second.manifest.id, 'without the option the newest drill counts');

    // prune: the unsigned drill proves nothing, the signed one does.
    const proofs = async (extra: string[]) => {
      const p = await cli(['prune', '--from', to, '--keep-last', '1', '--keep-proven', '2', '--json', ...extra]);
      // The database's group (the runs' globals are planned apart).
      const backups = JSON.parse(p.stdout).plan.groups.find((g: any) => g.database !== '@globals').backups;
      return { stderr: p.stderr, byId: Object.fromEntries(backups.map((b: any) => [b.id, b.proof ?? null])) };
    };
    const signedOnly = await proofs(['--require-signed-drills', '--public-key', pub]);
    assert.match(signedOnly.byId[first.manifest.id], /^drill OK /);
    assert.equal(signedOnly.byId[second.manifest.id], null);
    assert.match(signedOnly.stderr, /not counted: the drill report .* is UNSIGNED/);
    const any = await proofs([]);
    assert.match(any.byId[second.manifest.id], /^drill OK /, 'without the option the unsigned drill is proof');

    // Usage mistakes: no trust source; both; an unreadable key.
    for (const args of [[], ['--public-key', pub, '--github-owner', 'acme'], ['--public-key', path.join(keys, 'none.pub')]]) {
      const bad = await cli(['evidence', 'verify', '--from', to, ...args]);
      assert.equal(bad.code, 2, bad.stderr);
      assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    }
    // A wrong --from is a usage mistake, not "no evidence"; so for verify --recipients.
    for (const args of [['evidence', 'verify', '--public-key', pub], ['verify', '--recipients', '--require-recipient', 'age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq']]) {
      const wrong = await cli([...args, '--from', `${to}-missing`]);
      assert.equal(wrong.code, 2, wrong.stderr);
      assert.match(wrong.stderr, /does not exist: check --from/);
    }
    const noGh = await cli(['evidence', 'verify', '--from', to, '--github-owner', 'acme'], { PATH: path.dirname(process.execPath) });
    assert.equal(noGh.code, 2);
    assert.match(noGh.stderr, /GitHub CLI \(gh\) is not installed here/);
  });
});
