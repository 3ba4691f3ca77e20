import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { createDatabase, dbUrl, need, root, runActionBundle, s3Location } from '../helpers.ts';
import { actionlint } from '../infra/actionlint.ts';
import { environmentProblems, jobFacts, readmeEnvironmentSettings } from '../infra/workflow-contexts.ts';
import { readmeWorkflow, workflowSources, type WorkflowSource } from '../infra/workflow-files.ts';
import { evaluateTemplate, parseWorkflowFile } from '../infra/workflow-parser.ts';

const workflowFiles = async () => [
  ...(await readdir(path.join(root, '.github/workflows'))).map((f) => `.github/workflows/${f}`),
  ...(await readdir(path.join(root, 'docs/examples'))).filter((f) => /\.ya?ml$/.test(f)).map((f) => `docs/examples/${f}`),
];

/** Reads one of this repository's workflows by its path. */
const loadWorkflow = (file: string): WorkflowSource => ({ file, text: readFileSync(path.join(root, file), 'utf8') });

type Step = { id?: string; uses?: string; run?: string; with?: Record<string, string>; env?: Record<string, string> };

describe('workflows', () => {
  it('pass actionlint 1.7 with .github/actionlint.yaml, nothing filtered', async () => {
    const findings: string[] = [];
    for (const file of await workflowFiles()) {
      for (const r of await actionlint(await readFile(path.join(root, file), 'utf8'), path.join(root, file))) findings.push(`${file}:${r.line}:${r.column} [${r.kind}] ${r.message}`);
    }
    // The README's quick start, linted as the file a user would add.
    const readme = readmeWorkflow();
    for (const r of await actionlint(readme.text, path.join(root, '.github/workflows/backups.yml'))) findings.push(`${readme.file}:${r.line}:${r.column} [${r.kind}] ${r.message}`);
    assert.deepEqual(findings, []);
  });

  it('actionlint reads the project configuration and still finds mistakes', async () => {
    const file = path.join(root, 'docs/examples/private-database.yml');
    const source = await readFile(file, 'utf8');
    assert.match(source, /db-network/);
    assert.deepEqual(await actionlint(source, file), [], 'the self-hosted label is declared in .github/actionlint.yaml');
    const broken = `${source.replace('db-network', 'no-such-label')}`;
    const findings = await actionlint(broken, file);
    assert.ok(findings.some((f) => f.kind === 'runner-label' && /no-such-label/.test(f.message)), JSON.stringify(findings));
  });

  it('pass our actions only inputs they declare, and every required one', async () => {
    const actions: Record<string, { inputs: Record<string, { required?: boolean }> }> = {};
    for (const name of ['dump', 'verify', 'drill', 'prune']) actions[name] = parse(await readFile(path.join(root, 'actions', name, 'action.yml'), 'utf8'));
    let checked = 0;
    for (const file of await workflowFiles()) {
      const wf = parse(await readFile(path.join(root, file), 'utf8'));
      for (const [jobName, job] of Object.entries<{ steps?: Step[] }>(wf.jobs ?? {})) {
        for (const step of job.steps ?? []) {
          const m = /(?:^\.\/|\/)actions\/(dump|verify|drill|prune)(?:@|$)/.exec(step.uses ?? '');
          if (!m) continue;
          const declared = actions[m[1]!]!.inputs;
          for (const key of Object.keys(step.with ?? {})) assert.ok(key in declared, `${file} job ${jobName}: input "${key}" is not declared by actions/${m[1]}`);
          for (const [key, spec] of Object.entries(declared)) if (spec.required) assert.ok(key in (step.with ?? {}), `${file} job ${jobName}: required input "${key}" of actions/${m[1]} is missing`);
          checked++;
        }
      }
    }
    assert.ok(checked >= 7, `checked ${checked} steps`);
  });

  it('reusable workflows declare typed, described inputs and set the job environment from an input', async () => {
    for (const name of ['backup', 'drill', 'snapshot']) {
      const wf = parse(await readFile(path.join(root, `.github/workflows/${name}.yml`), 'utf8'));
      const call = wf.on.workflow_call;
      assert.ok(call, `${name} is reusable`);
      for (const [input, spec] of Object.entries<{ type?: string; description?: string }>(call.inputs)) {
        assert.ok(spec.type && spec.description, `${name}.${input}`);
      }
      const job = Object.values<{ environment?: string }>(wf.jobs)[0]!;
      assert.equal(job.environment, '${{ inputs.environment }}');
      // drill.yml declares its drill job's permissions (its attest job takes the caller's grant: id-token, attestations).
      const declared = name === 'drill' ? wf.jobs.drill.permissions : wf.permissions;
      assert.ok(declared && !('write-all' in wf), 'minimal permissions');
      if (name !== 'drill') {
        const concurrency = (job as { concurrency?: { group: string; 'cancel-in-progress': boolean } }).concurrency!;
        assert.equal(concurrency['cancel-in-progress'], false, 'a running dump is never cancelled');
        assert.match(concurrency.group, /inputs\.environment/);
      }
    }
    const backup = parse(await readFile(path.join(root, '.github/workflows/backup.yml'), 'utf8'));
    assert.match(backup.jobs.backup.concurrency.group, /inputs\.databases/, 'matrix jobs over databases do not share one group');
    const drill = parse(await readFile(path.join(root, '.github/workflows/drill.yml'), 'utf8'));
    assert.equal(drill.permissions, undefined);
    assert.deepEqual(drill.jobs.drill.permissions, { contents: 'read', issues: 'write' });
    // The attest job: opt-in, after the drill even when it failed, actions/attest pinned by its full commit SHA, no permissions of its own.
    assert.equal(drill.on.workflow_call.inputs.attest.default, false);
    assert.equal(drill.jobs.attest.permissions, undefined);
    assert.match(drill.jobs.attest.if, /^always\(\) && inputs\.attest && /);
    const attest = drill.jobs.attest.steps[0];
    assert.match(attest.uses, /^actions\/attest@[0-9a-f]{40}$/);
    assert.equal(attest.with['predicate-type'], 'https://pg-backup-actions.dev/drill/v1');
    assert.equal(attest.with['subject-digest'], '${{ needs.drill.outputs.subject-digest }}');
  });
});

describe('workflows as GitHub reads them (@actions/workflow-parser)', () => {
  const settings = readmeEnvironmentSettings();

  it('the README names the environment secrets and variables of its quick start', () => {
    assert.deepEqual(settings, { secrets: ['DATABASE_URL', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'], vars: ['BACKUP_BUCKET_URL', 'BACKUP_S3_ENDPOINT'] });
  });

  it('every workflow, example and the README\'s quick start parse with no error', async () => {
    const errors: string[] = [];
    for (const source of workflowSources()) errors.push(...(await parseWorkflowFile(source.file, source.text)).errors.map((e) => `${source.file}: ${e}`));
    assert.deepEqual(errors, []);
    // The parser does report mistakes: an unknown key and a context a key does not allow.
    const broken = await parseWorkflowFile('broken.yml', 'on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    environment: ${{ steps.x.outputs.y }}\n    stepz: []\n');
    assert.ok(broken.errors.some((e) => /stepz/.test(e)), broken.errors.join('; '));
    assert.ok(broken.errors.some((e) => /steps/.test(e)), broken.errors.join('; '));
  });

  it('every environment secret and variable the README names is read where it exists', async () => {
    const problems: string[] = [];
    for (const source of workflowSources()) problems.push(...(await environmentProblems(source, settings, loadWorkflow)).problems);
    assert.deepEqual(problems, []);
    // The quick start itself: each name it tells users to create reaches a job that runs in the environment.
    const { resolved } = await environmentProblems(readmeWorkflow(), settings, loadWorkflow);
    assert.deepEqual([...resolved].sort(), [...settings.secrets.map((n) => `secrets.${n}`), ...settings.vars.map((n) => `vars.${n}`)].sort());
  });

  it('the reusable workflows run in the caller\'s environment and read the README\'s settings there', async () => {
    for (const file of ['.github/workflows/backup.yml', '.github/workflows/drill.yml', '.github/workflows/snapshot.yml']) {
      const jobs = await jobFacts(loadWorkflow(file));
      assert.ok(jobs.length > 0 && jobs.every((j) => j.hasEnvironment), `${file}: every job declares environment:`);
      assert.ok(jobs.some((j) => j.vars.has('BACKUP_BUCKET_URL')), `${file} falls back to vars.BACKUP_BUCKET_URL`);
      assert.ok(jobs.some((j) => j.vars.has('BACKUP_S3_ENDPOINT')), `${file} falls back to vars.BACKUP_S3_ENDPOINT`);
    }
  });

  it('finds a workflow that reads environment settings where they are empty', async () => {
    // The quick start as it was: values from the calling job, secrets mapped without inherit.
    const before: WorkflowSource = {
      file: 'before.yml',
      text: [
        'on: workflow_dispatch',
        'jobs:',
        '  backup:',
        '    uses: pg-backup-actions/pg-backup-actions/.github/workflows/backup.yml@v1',
        '    with: { environment: production, service: api, to: "${{ vars.BACKUP_BUCKET_URL }}" }',
        '    secrets:',
        '      DATABASE_URL: ${{ secrets.DATABASE_URL }}',
        '  status:',
        '    runs-on: ubuntu-24.04',
        '    steps:',
        '      - env: { FROM: "${{ vars.BACKUP_BUCKET_URL }}" }',
        '        run: echo "$FROM"',
      ].join('\n'),
    };
    const { problems, resolved } = await environmentProblems(before, settings, loadWorkflow);
    assert.deepEqual(problems, [
      'before.yml job backup: vars.BACKUP_BUCKET_URL, secrets.DATABASE_URL read in a job that calls a reusable workflow; it has no environment, so they are empty there',
      'before.yml job backup: .github/workflows/backup.yml job backup reads the environment secrets DATABASE_URL, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, which resolve only with secrets: inherit',
      'before.yml job status: vars.BACKUP_BUCKET_URL read in a job without environment:, where environment-scoped settings are empty',
    ]);
    assert.ok(!resolved.has('secrets.DATABASE_URL'));
  });
});

/**
 * Runs one job of a reusable workflow the way the runner would, for the steps we own: each
 * `uses: …/actions/<name>` step runs that action's bundle with `INPUT_*`, `GITHUB_OUTPUT` and
 * `GITHUB_STEP_SUMMARY`; `run:` steps run in bash; then the job's and the workflow's outputs are
 * evaluated.
 */
async function runReusableWorkflow(file: string, inputs: Record<string, string>, secrets: Record<string, string>, extraEnv: Record<string, string | undefined>, vars: Record<string, string> = {}) {
  const wf = parse(await readFile(path.join(root, file), 'utf8'));
  const [jobId, job] = Object.entries<{ steps: Step[]; outputs?: Record<string, string> }>(wf.jobs)[0]!;
  const defaults = Object.fromEntries(Object.entries<{ default?: string }>(wf.on.workflow_call.inputs).map(([k, v]) => [k, v.default ?? '']));
  // A self-hosted runner: install-pg-client's `auto` installs nothing here.
  const ctx: Record<string, unknown> = { inputs: { ...defaults, ...inputs }, secrets, vars, steps: {}, github: { sha: 'abc123' }, runner: { environment: 'self-hosted' } };
  const env = { GITHUB_ACTIONS: 'true', GITHUB_SHA: 'abc123', GITHUB_REF: 'refs/heads/main', GITHUB_ACTOR: 'octocat', GITHUB_REPOSITORY: 'acme/shop', GITHUB_RUN_ID: '77', GITHUB_WORKFLOW: wf.name, ...extraEnv };
  const logs: string[] = [];
  for (const step of job.steps) {
    const m = /\/actions\/(dump|verify|drill)@/.exec(step.uses ?? '');
    if (m) {
      const withInputs: Record<string, string> = {};
      for (const [k, v] of Object.entries(step.with ?? {})) withInputs[k] = await evaluateTemplate(String(v), ctx);
      const result = await runActionBundle(m[1] as 'dump' | 'verify' | 'drill', withInputs, env);
      logs.push(result.stdout);
      assert.equal(result.code, 0, `${file} step ${step.id ?? m[1]} failed:\n${result.stdout}`);
      if (step.id) (ctx.steps as Record<string, unknown>)[step.id] = { outputs: result.outputs };
    } else if (step.run) {
      const stepEnv: Record<string, string> = {};
      for (const [k, v] of Object.entries(step.env ?? {})) stepEnv[k] = await evaluateTemplate(String(v), ctx);
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn('bash', ['-e', '-c', step.run!], { env: { ...process.env, ...stepEnv } });
        let text = '';
        child.stdout.on('data', (d) => (text += d));
        child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`run step failed: ${String(code)}: ${text.trim()}`))));
      });
      logs.push(out);
    }
  }
  const jobOutputs: Record<string, string> = {};
  for (const [k, v] of Object.entries(job.outputs ?? {})) jobOutputs[k] = await evaluateTemplate(v, ctx);
  const outputs: Record<string, string> = {};
  for (const [k, v] of Object.entries<{ value: string }>(wf.on.workflow_call.outputs ?? {})) outputs[k] = await evaluateTemplate(v.value, { jobs: { [jobId!]: { outputs: jobOutputs } } });
  return { outputs, logs: logs.join('\n') };
}

describe('reusable workflows, run through the action bundles against PostgreSQL + Ceph RGW', () => {
  const s3 = () => ({ S3_ACCESS_KEY_ID: need('PGB_TEST_S3_ACCESS_KEY'), S3_SECRET_ACCESS_KEY: need('PGB_TEST_S3_SECRET_KEY') });
  const noAwsEnv = { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_ENDPOINT_URL_S3: undefined };

  it('backup.yml: dump + verify produce backup-uri, manifest-uri and restore-command', async () => {
    const db = await createDatabase('wfbackup');
    const to = s3Location('wfbackup');
    const { outputs } = await runReusableWorkflow('.github/workflows/backup.yml', { environment: 'production', service: 'api', to, endpoint: need('PGB_TEST_S3_ENDPOINT') }, { DATABASE_URL: dbUrl(db), ...s3() }, noAwsEnv);
    assert.match(outputs['backup-uri']!, new RegExp(`^${to}/api/production/${db}/.*\\.dump\\.zst$`));
    assert.equal(outputs['manifest-uri'], outputs['backup-uri']!.replace('.dump.zst', '.manifest.json'));
    assert.match(outputs['restore-command']!, /^npx pg-backup restore --from s3:\/\/\S+ --backup \S+\.dump\.zst --target-url "\$TARGET_DATABASE_URL"$/);
  });

  it('backup.yml: without a "to" input, backs up to the environment\'s BACKUP_BUCKET_URL; with neither, stops with one line naming both', async () => {
    const db = await createDatabase('wfvars');
    const to = s3Location('wfvars');
    const vars = { BACKUP_BUCKET_URL: to, BACKUP_S3_ENDPOINT: need('PGB_TEST_S3_ENDPOINT') };
    const { outputs } = await runReusableWorkflow('.github/workflows/backup.yml', { environment: 'production', service: 'api' }, { DATABASE_URL: dbUrl(db), ...s3() }, noAwsEnv, vars);
    assert.match(outputs['backup-uri']!, new RegExp(`^${to}/api/production/${db}/.*\\.dump\\.zst$`));
    await assert.rejects(
      runReusableWorkflow('.github/workflows/backup.yml', { environment: 'production', service: 'api' }, { DATABASE_URL: dbUrl(db), ...s3() }, noAwsEnv),
      /::error::no bucket: set the variable BACKUP_BUCKET_URL in the environment production, or pass the input 'to'/,
    );
    await assert.rejects(
      runReusableWorkflow('.github/workflows/backup.yml', { environment: 'production', service: 'api' }, s3(), noAwsEnv, vars),
      /::error::no DATABASE_URL: create the secret DATABASE_URL in the environment production and call this workflow with 'secrets: inherit'/,
    );
  });

  it('backup.yml: a write-only writer dumps, a separate read-only reader verifies (two credential sets)', async () => {
    const { randomBytes } = await import('node:crypto');
    const { run: runCmd, s3Client } = await import('../helpers.ts');
    const { CreateBucketCommand, PutBucketPolicyCommand } = await import('@aws-sdk/client-s3');
    const { writerBucketPolicy } = await import('../../src/storage/policies.ts');
    const conf = need('PGB_TEST_RGW_CONF');
    for (const [uid, key] of [['wfwriter', 'WFWRITERKEY'], ['wfreader', 'WFREADERKEY']]) {
      const r = await runCmd('radosgw-admin', ['-c', conf, 'user', 'create', `--uid=${uid}`, `--display-name=${uid}`, `--access-key=${key}`, `--secret-key=${key}SECRET`]);
      assert.ok(r.code === 0 || /exists/.test(r.stderr), r.stderr);
    }
    const bucket = `wf2-${randomBytes(4).toString('hex')}`;
    const client = s3Client();
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    await client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(writerBucketPolicy(bucket, 'arn:aws:iam:::user/wfwriter', ['arn:aws:iam:::user/wfreader'])) }));
    client.destroy();
    const db = await createDatabase('wfsplit');
    const to = `s3://${bucket}/pg`;
    const secrets = { DATABASE_URL: dbUrl(db), S3_WRITER_ACCESS_KEY_ID: 'WFWRITERKEY', S3_WRITER_SECRET_ACCESS_KEY: 'WFWRITERKEYSECRET', S3_READER_ACCESS_KEY_ID: 'WFREADERKEY', S3_READER_SECRET_ACCESS_KEY: 'WFREADERKEYSECRET' };
    const { outputs } = await runReusableWorkflow('.github/workflows/backup.yml', { environment: 'production', service: 'api', to, endpoint: need('PGB_TEST_S3_ENDPOINT') }, secrets, noAwsEnv);
    assert.match(outputs['backup-uri']!, /\.dump\.zst$/);
    // The same run with the writer's keys alone cannot verify: the reader's are what made it pass.
    const alone = { ...secrets, S3_READER_ACCESS_KEY_ID: '', S3_READER_SECRET_ACCESS_KEY: '' };
    await assert.rejects(runReusableWorkflow('.github/workflows/backup.yml', { environment: 'production', service: 'api', to, endpoint: need('PGB_TEST_S3_ENDPOINT') }, alone, noAwsEnv), /access denied/);
  });

  it('snapshot.yml: records reason, commit, ref, actor and migration head, and verifies before succeeding', async () => {
    const db = await createDatabase('wfsnap');
    const { sql, s3Get } = await import('../helpers.ts');
    await sql(db, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); INSERT INTO alembic_version VALUES ('0041')");
    const to = s3Location('wfsnap');
    const { outputs, logs } = await runReusableWorkflow('.github/workflows/snapshot.yml', { environment: 'production', service: 'api', to, reason: 'before migration 0042', endpoint: need('PGB_TEST_S3_ENDPOINT') }, { DATABASE_URL: dbUrl(db), ...s3() }, noAwsEnv);
    assert.match(logs, /Snapshot verified\. To roll back: npx pg-backup restore/);
    const manifestKey = outputs['backup-uri']!.slice(to.length + 1).replace('.dump.zst', '.manifest.json');
    const manifest = JSON.parse((await s3Get(to, manifestKey)).toString());
    assert.deepEqual(manifest.context, { reason: 'before migration 0042', gitSha: 'abc123', gitRef: 'refs/heads/main', actor: 'octocat', workflow: 'pg-backup pre-migration snapshot', runUrl: 'https://github.com/acme/shop/actions/runs/77' });
    assert.deepEqual(manifest.migrationHead, { table: 'public.alembic_version', head: '0041' });
  });

  it('drill.yml: restores the latest backup and archives the drill log', async () => {
    const db = await createDatabase('wfdrill');
    const to = s3Location('wfdrill');
    const dumped = await runActionBundle('dump', { 'database-url': dbUrl(db), to, service: 'api', environment: 'staging', endpoint: need('PGB_TEST_S3_ENDPOINT'), 'aws-access-key-id': need('PGB_TEST_S3_ACCESS_KEY'), 'aws-secret-access-key': need('PGB_TEST_S3_SECRET_KEY') }, noAwsEnv);
    assert.equal(dumped.code, 0, dumped.stdout);
    const { logs } = await runReusableWorkflow('.github/workflows/drill.yml', { environment: 'staging', service: 'api', database: db, from: to, endpoint: need('PGB_TEST_S3_ENDPOINT'), 'max-rpo': '1h' }, s3(), { ...noAwsEnv, GITHUB_TOKEN: undefined });
    assert.match(logs, /restore drill OK/);
  });
});
