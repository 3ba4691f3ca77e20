// Untrusted text has one way out per sink (src/text/sinks.ts), end to end: one hostile corpus
// (test/hostile-corpus.ts) as table names in a real database, and as service, environment and
// database names, server.version, reason and row counts in a manifest forged in the bucket by
// someone who can write to it; then list, prune, verify, drill and status (CLI), the drill
// action's real bundle (runner log read with the runner's own command rules, job summary), the
// failure issue (fake GitHub REST server on loopback), the status page and Markdown, and a
// webhook (loopback receiver). And webhook / healthcheck URLs with user:password@.
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { encodeSegment } from '../../src/backup/keys.ts';
import { cli, createDatabase, dbUrl, fileLocation, runActionBundle, sql } from '../helpers.ts';
import { startFakeGitHub, type FakeGitHub } from '../infra/fake-github.ts';
import { HOSTILE, RAW_CONTROL } from '../hostile-corpus.ts';
import { runnerCommands, runnerLines } from '../runner-commands.ts';

/** Table names from the corpus (PostgreSQL identifiers: up to 63 bytes, no NUL). */
const TABLES = [HOSTILE.stopCommands, HOSTILE.osc52, HOSTILE.mention, HOSTILE.slackBroadcast, HOSTILE.slackLink, HOSTILE.backticks, HOSTILE.markdownLink, HOSTILE.rtl, HOSTILE.legacyCommand, HOSTILE.addMask, HOSTILE.html, HOSTILE.clearScreen];
/** The table whose row count the forged manifest gets wrong, so the drill fails naming it. */
const WRONG = HOSTILE.slackBroadcast;

/**
 * Labels of the forged backup, as decoded from its key: the key's segments carry the line breaks
 * percent-encoded (`%0A`; storage refuses raw control characters in a key).
 */
const SERVICE_SEGMENT = 'shopx%0A::stop-commands::pgbstoptoken';
const SERVICE = decodeURIComponent(SERVICE_SEGMENT);
const ENV_SEGMENT = 'prod%0A::error::pgbinjected';
const ENVIRONMENT = decodeURIComponent(ENV_SEGMENT);
const DATABASE = `db <!channel> @org/team \x1b[2J\u202e`;
const SERVER_VERSION = `15.0${HOSTILE.addMask}\n::stop-commands::pgbstoptoken2 ##[add-mask]pgblegacy`;
const REASON = `${HOSTILE.mention} ${HOSTILE.slackLink} ${HOSTILE.markdownLink}`;

/** Tokens that appear in the corpus' command payloads: none may reach a workflow command. */
const PAYLOAD = /pgbstoptoken|pgbinjected|pgbmasked|pgblegacy/;

/** Markup that must not survive outside a code span in GitHub Markdown, nor anywhere in chat text. */
const LIVE_MARKUP = [/<!channel>/, /<https:\/\/evil/, /<img/i, /\]\(javascript:/, /@org\/team/, /@user\b/, /(?<!\\)!\[i\]/];

/** `body` with every CommonMark inline code span replaced by `CODE` (fence = a backtick run, closed by a run of the same length). */
function withoutCodeSpans(body: string): string {
  let out = '';
  let i = 0;
  while (i < body.length) {
    if (body[i] === '\\' && body[i + 1] === '`') {
      out += '\\`';
      i += 2;
      continue;
    }
    if (body[i] !== '`') {
      out += body[i++];
      continue;
    }
    const open = /^`+/.exec(body.slice(i))![0];
    let j = i + open.length;
    let close = -1;
    while (j < body.length) {
      const k = body.indexOf('`', j);
      if (k < 0) break;
      const run = /^`+/.exec(body.slice(k))![0];
      if (run.length === open.length) {
        close = k;
        break;
      }
      j = k + run.length;
    }
    if (close < 0) {
      out += open;
      i += open.length;
      continue;
    }
    out += 'CODE';
    i = close + open.length;
  }
  return out;
}

/** A loopback HTTP receiver: records requests; answers 500 under /fail (echoing the URL, as some servers do), else 200. */
async function receiver() {
  const requests: { url: string; body: string; authorization?: string }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests.push({ url: req.url!, body, authorization: req.headers.authorization });
      if (req.url!.startsWith('/fail')) {
        res.statusCode = 500;
        res.end(`no such hook: ${req.url}`);
      } else res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, port, requests, close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }) };
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;

describe('untrusted text: one hostile corpus through every sink', () => {
  let location: string;
  let root: string;
  let work: string;
  let realKey: string;
  let forgedKey: string;
  let gh: FakeGitHub;
  let hooks: Awaited<ReturnType<typeof receiver>>;

  before(async () => {
    gh = await startFakeGitHub('acme', 'shop');
    hooks = await receiver();
    work = await mkdtemp(path.join(os.tmpdir(), 'pgb-hostile-'));
    const db = await createDatabase('hostile', false);
    await sql(db, TABLES.map((t) => `CREATE TABLE ${quote(t)} (id int); INSERT INTO ${quote(t)} VALUES (1);`).join('\n'));
    location = await fileLocation();
    root = fileURLToPath(location);
    const dumped = await cli(['dump', '--to', location, '--service', 'shop', '--environment', 'prod', '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(dumped.code, 0, dumped.stderr);
    const result = JSON.parse(dumped.stdout);
    realKey = result.backupUri.slice(location.length + 1);
    const manifestKey = result.manifestUri.slice(location.length + 1);
    const manifest = JSON.parse(await readFile(path.join(root, manifestKey), 'utf8'));
    assert.deepEqual(manifest.tables.map((t: { table: string }) => t.table).sort(), [...TABLES].sort(), 'the real dump recorded every hostile table name');

    // The forged backup: the same dump object under hostile labels, with hostile manifest fields.
    const oldId: string = manifest.id;
    const id = `${encodeSegment(DATABASE)}${oldId.slice(oldId.indexOf('-'))}`;
    const dir = [SERVICE_SEGMENT, ENV_SEGMENT, encodeSegment(DATABASE), ...manifestKey.split('/').slice(3, 6)].join('/');
    await mkdir(path.join(root, dir), { recursive: true });
    forgedKey = `${dir}/${id}.dump.zst`;
    await copyFile(path.join(root, realKey), path.join(root, forgedKey));
    const forged = {
      ...manifest,
      id,
      service: SERVICE,
      environment: ENVIRONMENT,
      database: DATABASE,
      object: { ...manifest.object, name: `${id}.dump.zst` },
      server: { ...manifest.server, version: SERVER_VERSION },
      context: { ...manifest.context, reason: REASON },
      tables: manifest.tables.map((t: { table: string; rows: number }) => (t.table === WRONG ? { ...t, rows: 2 } : t)),
    };
    await writeFile(path.join(root, dir, `${id}.manifest.json`), JSON.stringify(forged));
  });

  after(async () => {
    await gh?.close();
    await hooks?.close();
    if (root) await rm(root, { recursive: true, force: true });
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** No control character, and no line that is a workflow command, in a terminal's output. */
  function assertTerminalSafe(text: string, what: string) {
    assert.doesNotMatch(text, RAW_CONTROL, `${what}: a raw control character`);
    for (const line of runnerLines(text)) assert.doesNotMatch(line, /^\s*::/, `${what}: ${line}`);
  }

  it('CLI: list, prune, ambiguous latest, verify, drill and status print names escaped', { timeout: 240_000 }, async () => {
    const list = await cli(['list', '--from', location]);
    assert.equal(list.code, 0, list.stderr);
    assertTerminalSafe(list.stdout + list.stderr, 'list');
    assert.equal(list.stdout.trimEnd().split('\n').length, 4, 'a header, one line per backup and the real run\'s globals: a line break in a name is shown, not printed');
    assert.ok(list.stdout.includes('shopx\\n::stop-commands::pgbstoptoken/prod\\n::error::pgbinjected/db <!channel> @org/team \\x1b[2J\\u202e'), list.stdout);
    const json = await cli(['list', '--from', location, '--json']);
    assert.doesNotMatch(json.stdout, RAW_CONTROL);
    assert.ok(JSON.parse(json.stdout).some((b: { database: string }) => b.database === DATABASE), '--json keeps the value itself');

    const prune = await cli(['prune', '--from', location, '--keep-last', '1']);
    assert.equal(prune.code, 0, prune.stderr);
    assertTerminalSafe(prune.stdout + prune.stderr, 'prune');
    assert.ok(prune.stdout.includes('\\x1b[2J'));

    const ambiguous = await cli(['verify', '--from', location, '--level', 'checksum']);
    assert.equal(ambiguous.code, 2, ambiguous.stderr);
    assertTerminalSafe(ambiguous.stderr, 'ambiguous latest');
    assert.equal(ambiguous.stderr.trimEnd().split('\n').length, 1, ambiguous.stderr);
    assert.match(ambiguous.stderr, /"latest" is ambiguous: .*shopx\\n::stop-commands::pgbstoptoken/);

    const verify = await cli(['verify', '--from', location, '--backup', forgedKey, '--level', 'checksum']);
    assert.equal(verify.code, 0, verify.stderr);
    assertTerminalSafe(verify.stderr, 'verify');

    const drill = await cli(['drill', '--from', location, '--backup', forgedKey]);
    assert.equal(drill.code, 1, drill.stderr);
    assertTerminalSafe(drill.stderr, 'drill');
    assert.ok(drill.stderr.includes(`PostgreSQL 15.0z\\r::add-mask::pgbmasked\\n::stop-commands::pgbstoptoken2`), 'server.version shown escaped');
    assert.match(drill.stderr, /drill failed: .*ping <!channel> now/);

    const html = path.join(work, 'status.html');
    const md = path.join(work, 'status.md');
    const status = await cli(['status', '--from', location, '--html', html, '--markdown', md]);
    assertTerminalSafe(status.stdout + status.stderr, 'status');
    assert.ok(status.stdout.includes('@org/team \\x1b[2J\\u202e'), status.stdout);
    const statusJson = await cli(['status', '--from', location, '--json']);
    assert.doesNotMatch(statusJson.stdout, RAW_CONTROL);
    assert.ok(JSON.parse(statusJson.stdout).databases.some((d: { database: string }) => d.database === DATABASE));
    const page = await readFile(html, 'utf8');
    for (const live of [/<!channel>/, /<https:\/\/evil/]) assert.doesNotMatch(page, live, 'the HTML page escapes (src/status/html.ts)');
    assert.ok(page.includes('&lt;!channel&gt;'));
    const markdown = await readFile(md, 'utf8');
    assert.doesNotMatch(markdown, RAW_CONTROL);
    for (const live of LIVE_MARKUP) assert.doesNotMatch(withoutCodeSpans(markdown), live, 'status Markdown');
    assert.ok(markdown.includes('db &lt;\\!channel&gt; @&#8203;org/team \\\\x1b\\[2J\\\\u202e'), markdown);
  });

  it('actions/drill: no workflow command from the corpus, summary, failure issue and webhook escaped', { timeout: 240_000 }, async () => {
    const hookUrl = `${hooks.url}/hook/generic`;
    const r = await runActionBundle('drill', {
      from: location, backup: forgedKey, 'github-token': gh.token, 'issue-on-failure': 'true', 'notify-url': hookUrl, 'notify-on': 'always',
    }, { GITHUB_REPOSITORY: 'acme/shop', GITHUB_API_URL: gh.url, GITHUB_SERVER_URL: 'https://github.example', GITHUB_RUN_ID: '4242' });
    assert.equal(r.code, 1, r.stdout);

    // The runner log, read as the runner reads it.
    const log = r.stdout + r.stderr;
    assert.doesNotMatch(log, RAW_CONTROL);
    const commands = runnerCommands(log);
    for (const c of commands) {
      assert.ok(['add-mask', 'group', 'endgroup', 'error', 'warning', 'debug'].includes(c.command), `unexpected command ${c.command}: ${c.line}`);
      assert.doesNotMatch(c.command === 'add-mask' ? c.data : '', PAYLOAD, `a mask from the corpus: ${c.line}`);
    }
    assert.ok(commands.some((c) => c.command === 'add-mask' && c.data === '/hook/generic'), 'the webhook URL\'s path is masked');
    const errors = commands.filter((c) => c.command === 'error');
    assert.ok(errors.length >= 1 && errors.every((e) => /^restore drill failed: /.test(e.data)), errors.map((e) => e.line).join('\n'));
    assert.ok(log.includes('PostgreSQL 15.0z\\r\\x3a:add-mask::pgbmasked') || log.includes('PostgreSQL 15.0z\\r::add-mask::pgbmasked\\n::stop-commands::pgbstoptoken2'), 'server.version shown escaped in the log');
    // A corpus payload may be shown (escaped) in a line or in an annotation's or group's text, never be a command of its own.
    for (const line of runnerLines(log)) if (!/^::(add-mask|group|endgroup|error|warning|debug)::/.test(line)) assert.equal(runnerCommands(line).length, 0, line);
    assert.ok(PAYLOAD.test(log), 'the payloads were there to be stopped');

    // The job summary (HTML inside Markdown).
    assert.doesNotMatch(r.summary, RAW_CONTROL);
    for (const live of LIVE_MARKUP) assert.doesNotMatch(r.summary, live, 'job summary');
    assert.ok(r.summary.includes('ping &lt;!channel&gt; now'), r.summary);
    assert.ok(r.summary.includes('team @&#8203;org/team and @&#8203;user'), 'table names in the summary, mentions broken');

    // The failure issue.
    assert.equal(gh.issues.length, 1);
    const issue = gh.issues[0]!;
    assert.doesNotMatch(issue.title, RAW_CONTROL);
    assert.ok(!issue.title.includes('\n') && issue.title.length <= 256);
    assert.ok(issue.title.startsWith('Backup drill failed: shopx\\n::stop-commands::pgbstoptoken/prod\\n::error::pgbinjected/db <!channel> @\u200borg/team'), issue.title);
    assert.doesNotMatch(issue.body, RAW_CONTROL);
    const outside = withoutCodeSpans(issue.body);
    for (const live of LIVE_MARKUP) assert.doesNotMatch(outside, live, `issue body: ${issue.body}`);
    assert.match(outside, /\*\*Reason:\*\* .*ping &lt;\\!channel&gt; now/);
    assert.ok(issue.body.includes('**`shopx\\n::stop-commands::pgbstoptoken/prod\\n::error::pgbinjected/db <!channel> @\u200borg/team \\x1b[2J\\u202e`**'), issue.body);
    for (const line of issue.body.split('\n')) assert.doesNotMatch(line, /^\s*::/);

    // The webhook (generic JSON: Slack-like text, raw values as JSON fields).
    const posted = hooks.requests.filter((q) => q.url === '/hook/generic');
    assert.equal(posted.length, 1);
    const message = JSON.parse(posted[0]!.body);
    assert.equal(message.database, DATABASE, 'the JSON field is the value itself');
    assert.doesNotMatch(message.text, RAW_CONTROL);
    for (const live of LIVE_MARKUP) assert.doesNotMatch(message.text, live, `webhook text: ${message.text}`);
    assert.equal(message.text.split('\n').length, 2, 'the verdict line and the run URL: no line from the corpus');
    assert.ok(message.text.includes('ping &lt;!channel&gt; now'));
  });

  it('actions/verify and actions/prune: runner log and job summary escaped', { timeout: 120_000 }, async () => {
    const verified = await runActionBundle('verify', { from: location, backup: forgedKey, level: 'checksum', 'issue-on-failure': 'false' });
    const pruned = await runActionBundle('prune', { from: location, 'keep-last': '1' });
    for (const [what, r] of [['verify', verified], ['prune', pruned]] as const) {
      assert.equal(r.code, 0, `${what}: ${r.stdout}`);
      const log = r.stdout + r.stderr;
      assert.doesNotMatch(log, RAW_CONTROL, what);
      for (const c of runnerCommands(log)) {
        assert.ok(['add-mask', 'group', 'endgroup', 'warning', 'debug'].includes(c.command), `${what}: unexpected command ${c.command}: ${c.line}`);
        assert.doesNotMatch(c.command === 'add-mask' ? c.data : '', PAYLOAD, `${what}: a mask from the corpus: ${c.line}`);
      }
      assert.doesNotMatch(r.summary, RAW_CONTROL, what);
      for (const live of LIVE_MARKUP) assert.doesNotMatch(r.summary, live, `${what} summary`);
    }
    assert.ok(verified.summary.includes('shopx%250A::stop-commands::pgbstoptoken'), verified.summary);
    assert.ok(pruned.summary.includes('shopx\\n::stop-commands::pgbstoptoken/prod\\n::error::pgbinjected/db &lt;!channel&gt; @&#8203;org/team \\x1b&#91;2J\\u202e'), pruned.summary);
  });
});

describe('webhook and healthcheck URLs with credentials', () => {
  let hooks: Awaited<ReturnType<typeof receiver>>;
  let location: string;
  let key: string;
  before(async () => {
    hooks = await receiver();
    const db = await createDatabase('credurl', false);
    location = await fileLocation();
    const dumped = await cli(['dump', '--to', location, '--json'], { DATABASE_URL: dbUrl(db) });
    assert.equal(dumped.code, 0, dumped.stderr);
    key = JSON.parse(dumped.stdout).backupUri.slice(location.length + 1);
  });
  after(async () => {
    await hooks?.close();
    if (location) await rm(fileURLToPath(location), { recursive: true, force: true });
  });

  it('user:password@ becomes HTTP Basic auth and the request is delivered', { timeout: 60_000 }, async () => {
    const r = await cli([
      'verify', '--from', location, '--backup', key, '--level', 'checksum', '--notify-on', 'always',
      '--notify-url', `http://hook%20user:p%40ss:word@127.0.0.1:${hooks.port}/hook/T0/B0/tok123?token=q1`,
      '--healthcheck-url', `http://hc:hcpw@127.0.0.1:${hooks.port}/hc/0f2c-uuid`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /warning/, r.stderr);
    const hook = hooks.requests.find((q) => q.url === '/hook/T0/B0/tok123?token=q1')!;
    assert.ok(hook, JSON.stringify(hooks.requests.map((q) => q.url)));
    assert.equal(hook.authorization, `Basic ${Buffer.from('hook user:p@ss:word').toString('base64')}`);
    const pings = hooks.requests.filter((q) => q.url.startsWith('/hc/0f2c-uuid'));
    assert.equal(pings.length, 2, 'start and success');
    for (const p of pings) assert.equal(p.authorization, `Basic ${Buffer.from('hc:hcpw').toString('base64')}`);
  });

  it('a failing delivery warns with scheme://host:port only: no path, query, user or password', { timeout: 60_000 }, async () => {
    const r = await cli([
      'verify', '--from', location, '--backup', key, '--level', 'checksum', '--notify-on', 'always', '--notify-timeout', '2s',
      '--notify-url', `http://hookuser:hookpass@127.0.0.1:${hooks.port}/fail/T9/B9/secrettok?token=qsecret`,
      '--healthcheck-url', `http://127.0.0.1:${hooks.port}/fail/hc-uuid-7e57?k=v`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith('warning:'));
    assert.ok(warnings.some((w) => w.startsWith(`warning: webhook notification (verify) not delivered to http://127.0.0.1:${hooks.port} (HTTP 500`)), r.stderr);
    assert.ok(warnings.some((w) => w.startsWith(`warning: healthcheck ping (start) not delivered to http://127.0.0.1:${hooks.port} (HTTP 500`)), r.stderr);
    for (const secret of ['secrettok', 'qsecret', 'hookuser', 'hookpass', 'T9', 'hc-uuid-7e57', 'k=v', '/fail']) assert.ok(!r.stderr.includes(secret), `${secret} in: ${r.stderr}`);
  });
});
