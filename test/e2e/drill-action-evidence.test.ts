// The drill action's evidence, through its bundle as the runner runs it (npm run build first):
// with `sign-key` it writes a signed statement that `evidence verify --public-key` accepts, and
// its outputs are exactly what drill.yml hands actions/attest — subject name and digest, and the
// stored report as predicate — i.e. the same statement GitHub signs keylessly (which needs GitHub
// and Sigstore, so it cannot run here). `evidence verify --github-owner` is then run against a
// stand-in `gh` that answers as `gh attestation verify --format json` does for that statement:
// it checks that the object pg-backup downloads has the subject's digest and that the owner and
// predicate type are passed. The real keyless verification is GitHub's; this tests our side.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { EnvelopeSchema } from '../../src/evidence/dsse.ts';
import { cli, createDatabase, dumpWithCli, fileLocation, run, runActionBundle } from '../helpers.ts';

let to: string;
let dir: string;
let keys: string;
let dumped: { manifest: any; objectKey: string };

before(async () => {
  const db = await createDatabase('attest');
  to = await fileLocation();
  dir = fileURLToPath(to);
  dumped = await dumpWithCli(db, to);
  keys = await mkdtemp(path.join(os.tmpdir(), 'pgb-attest-'));
  assert.equal((await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', path.join(keys, 'k.pem')])).code, 0);
  assert.equal((await run('openssl', ['pkey', '-in', path.join(keys, 'k.pem'), '-pubout', '-out', path.join(keys, 'k.pub')])).code, 0);
}, { timeout: 120_000 });
after(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(keys, { recursive: true, force: true });
});

describe('drill action evidence', () => {
  it('signs with sign-key and outputs the statement actions/attest signs', { timeout: 240_000 }, async () => {
    const pem = await readFile(path.join(keys, 'k.pem'), 'utf8');
    const r = await runActionBundle('drill', { from: to, backup: 'latest', 'sign-key': pem }, { GITHUB_ACTIONS: 'true', GITHUB_REPOSITORY: 'acme/shop', GITHUB_RUN_ID: '77', GITHUB_SERVER_URL: 'https://github.com' });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const body = pem.split('\n')[1]!;
    assert.ok(r.stdout.split('\n').includes(`::add-mask::${body}`), 'the key\'s line is masked on its own');
    assert.ok(!r.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::')).some((l) => l.includes(body)), 'the key is in no other log line');
    const o = r.outputs;
    assert.equal(o.result, 'ok');
    assert.equal(o['subject-name'], dumped.objectKey);
    assert.equal(o['subject-digest'], `sha256:${dumped.manifest.object.sha256}`);
    const report = JSON.parse(o['drill-report']!);
    assert.equal(report.runner.github.runUrl, 'https://github.com/acme/shop/actions/runs/77');

    // The statement pg-backup signed with the key: the same subject and predicate as the attest inputs.
    const envelope = EnvelopeSchema.parse(JSON.parse(await readFile(path.join(dir, o['drill-evidence-uri']!.slice(to.length + 1)), 'utf8')));
    assert.equal(envelope.signatures.length, 1);
    const statement = JSON.parse(Buffer.from(envelope.payload, 'base64').toString());
    assert.deepEqual(statement.subject, [{ name: o['subject-name'], digest: { sha256: o['subject-digest']!.slice('sha256:'.length) } }]);
    assert.deepEqual(statement.predicate, report);
    assert.equal(statement.predicateType, 'https://pg-backup-actions.dev/drill/v1');
    const v = await cli(['evidence', 'verify', '--from', to, '--public-key', path.join(keys, 'k.pub')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^signed OK /m);

    // --github-owner through a stand-in gh answering for the statement actions/attest would sign.
    const bin = await mkdtemp(path.join(os.tmpdir(), 'pgb-gh-'));
    try {
      const attested = { _type: 'https://in-toto.io/Statement/v1', subject: [{ name: o['subject-name'], digest: { sha256: o['subject-digest']!.slice(7) } }], predicateType: 'https://pg-backup-actions.dev/drill/v1', predicate: report };
      await writeFile(path.join(bin, 'statement.json'), JSON.stringify([{ verificationResult: { statement: attested } }]));
      await writeFile(path.join(bin, 'args'), '');
      await writeFile(path.join(bin, 'gh'), `#!/bin/sh
[ "$1" = "--version" ] && { echo "gh version 2.0.0 (stand-in)"; exit 0; }
echo "$@" >> "${bin}/args"
[ "$1 $2" = "attestation verify" ] || exit 3
digest=$(sha256sum "$3" | cut -d' ' -f1)
[ "$digest" = "${dumped.manifest.object.sha256}" ] && [ "$5" = "acme" ] || { echo "Error: no attestations found for $digest" >&2; exit 1; }
cat "${bin}/statement.json"
`);
      await chmod(path.join(bin, 'gh'), 0o755);
      const env = { PATH: `${bin}:${process.env.PATH}` };
      let g = await cli(['evidence', 'verify', '--from', to, '--github-owner', 'acme'], env);
      assert.equal(g.code, 0, g.stdout + g.stderr);
      assert.match(g.stdout, /^signed OK .*attested by a workflow of acme/m);
      assert.match(await readFile(path.join(bin, 'args'), 'utf8'), /^attestation verify \S+ --owner acme --predicate-type https:\/\/pg-backup-actions\.dev\/drill\/v1 --format json$/m);
      g = await cli(['evidence', 'verify', '--from', to, '--github-owner', 'intruders'], env);
      assert.equal(g.code, 1);
      assert.match(g.stdout, /^NOT ATTESTED .*no attestations found/m);
      // An attestation whose predicate is not the stored report.
      await writeFile(path.join(bin, 'statement.json'), JSON.stringify([{ verificationResult: { statement: { ...attested, predicate: { ...report, ok: false } } } }]));
      g = await cli(['evidence', 'verify', '--from', to, '--github-owner', 'acme'], env);
      assert.equal(g.code, 1);
      assert.match(g.stdout, /^FORGED \(report differs from its signed statement\) /m);
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
  });
});
