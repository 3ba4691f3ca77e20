import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startFakeGitHub } from '../infra/fake-github.ts';
import { createDatabase, dbUrl, need, runActionBundle, s3Get, s3Location, s3Put } from '../helpers.ts';

const storageInputs = () => ({
  endpoint: need('PGB_TEST_S3_ENDPOINT'),
  'aws-access-key-id': need('PGB_TEST_S3_ACCESS_KEY'),
  'aws-secret-access-key': need('PGB_TEST_S3_SECRET_KEY'),
});
const noAwsEnv = { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_ENDPOINT_URL_S3: undefined };

describe('GitHub issue when a drill fails (real @actions/github client, fake REST server on loopback)', () => {
  it('opens one issue, comments instead of duplicating, then comments and closes when the drill passes', async () => {
    const gh = await startFakeGitHub('acme', 'shop');
    try {
      const db = await createDatabase('issue');
      const to = s3Location('issue');
      const dumped = await runActionBundle('dump', { 'database-url': dbUrl(db), to, service: 'api', environment: 'production', ...storageInputs() }, noAwsEnv);
      assert.equal(dumped.code, 0, dumped.stdout);
      const key = dumped.outputs['backup-key']!;
      const good = await s3Get(to, key);
      const env = {
        ...noAwsEnv,
        GITHUB_REPOSITORY: 'acme/shop',
        GITHUB_API_URL: gh.url,
        GITHUB_SERVER_URL: 'https://github.example',
        GITHUB_RUN_ID: '4242',
      };
      const drillInputs = { from: to, service: 'api', environment: 'production', database: db, 'github-token': gh.token, 'issue-on-failure': 'true', 'issue-label': 'backup-drill-failure', ...storageInputs() };

      await s3Put(to, key, good.subarray(0, good.length - 10)); // truncated
      const first = await runActionBundle('drill', drillInputs, env);
      assert.equal(first.code, 1, first.stdout);
      assert.ok(first.stdout.includes(`::add-mask::${gh.token}`), 'the token is masked');
      assert.equal(gh.issues.length, 1);
      const issue = gh.issues[0]!;
      assert.equal(issue.title, `Backup drill failed: api/production/${db}`);
      assert.deepEqual(issue.labels, [{ name: 'backup-drill-failure' }]);
      assert.match(issue.body, /size mismatch/);
      assert.match(issue.body, /https:\/\/github\.example\/acme\/shop\/actions\/runs\/4242/);
      assert.ok(issue.body.includes(first.outputs['drill-log-uri']!), 'names the drill log');
      assert.equal(first.outputs['issue-number'], '1');

      const second = await runActionBundle('drill', drillInputs, env);
      assert.equal(second.code, 1);
      assert.equal(gh.issues.length, 1, 'no duplicate issue');
      assert.equal(issue.comments.length, 1);
      assert.match(issue.comments[0]!, /failed again/);

      await s3Put(to, key, good);
      const third = await runActionBundle('drill', drillInputs, env);
      assert.equal(third.code, 0, third.stdout);
      assert.equal(issue.state, 'closed');
      assert.equal(issue.state_reason, 'completed');
      assert.match(issue.comments.at(-1)!, /passed/);
      assert.ok(gh.requests.some((r) => r.startsWith('GET /repos/acme/shop/issues?') && r.includes('labels=backup-drill-failure')));
      // The summary shows the RTO trend of the three drills, read back from the bucket.
      assert.equal((third.summary.match(/<td>(OK|FAILED)<\/td>/g) ?? []).length, 3);
    } finally {
      await gh.close();
    }
  });

  it('a failing freshness check opens an issue too; a bad token only warns', async () => {
    const gh = await startFakeGitHub('acme', 'shop');
    try {
      const env = { ...noAwsEnv, GITHUB_REPOSITORY: 'acme/shop', GITHUB_API_URL: gh.url };
      const inputs = { from: s3Location('fresh'), level: 'none', 'max-age': '30h', service: 'api', environment: 'staging', database: 'app', ...storageInputs() };
      const r = await runActionBundle('verify', { ...inputs, 'github-token': gh.token }, env);
      assert.equal(r.code, 1, r.stdout);
      assert.equal(gh.issues.length, 1);
      assert.equal(gh.issues[0]!.title, 'Backup verify failed: api/staging/app');
      assert.match(gh.issues[0]!.body, /no complete backup at all for api\/staging\/app: backups are overdue/);

      const denied = await runActionBundle('verify', { ...inputs, 'github-token': 'wrong-token-xyz' }, env);
      assert.equal(denied.code, 1, 'the verdict is the check\'s, not the issue\'s');
      assert.match(denied.stdout, /::warning::could not update the failure issue on GitHub: Bad credentials/);
      assert.equal(gh.issues.length, 1);
    } finally {
      await gh.close();
    }
  });
});
