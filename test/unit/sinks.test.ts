// The one way out for untrusted text (src/text/sinks.ts): the hostile corpus and random strings
// through each sink, checked the way each sink's reader parses it (the runner's command parser,
// CommonMark code spans, Slack's and Discord's markup).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  chatText, discordText, githubHtmlText, issueTitleText, markdownCode, markdownCodeBlock, markdownText, runnerLogText, slackText, teamsText, terminalJson, terminalText,
} from '../../src/text/sinks.ts';
import { webhookBody, webhookFormat, webhookMessage } from '../../src/notify/webhook.ts';
import type { RunReport } from '../../src/notify/report.ts';
import { HOSTILE, HOSTILE_VALUES, RAW_CONTROL } from '../hostile-corpus.ts';
import { parseRunnerCommand, runnerCommands, runnerLines } from '../runner-commands.ts';

/** Strings rich in what the sinks escape. */
const hostileString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.array(fc.constantFrom(...HOSTILE_VALUES, '::', '##[', '`', '@', '<', '>', '&', '|', '\n', '\r', ' ', '\u00a0', '\u0085', '\u2028', '\u202e', '\x1b', 'a', 'error::x', 'stop-commands::t'), { maxLength: 12 }).map((a) => a.join('')),
);

const ZWSP = '\u200b';

/**
 * The literal text of a CommonMark inline code span at the start of `s` (§6.1): a backtick string
 * opens, the next backtick string of the same length closes, line endings become spaces, and one
 * space is stripped from each side when both sides have one and the content is not all spaces.
 */
function readCodeSpan(s: string): { content: string; rest: string } {
  const open = /^`+/.exec(s)![0];
  let i = open.length;
  for (;;) {
    const next = s.indexOf('`', i);
    assert.ok(next >= 0, `unclosed code span in ${JSON.stringify(s)}`);
    const run = /^`+/.exec(s.slice(next))![0];
    if (run.length === open.length) {
      let content = s.slice(open.length, next).replace(/\n/g, ' ');
      if (content.startsWith(' ') && content.endsWith(' ') && content.trim() !== '') content = content.slice(1, -1);
      return { content, rest: s.slice(next + run.length) };
    }
    i = next + run.length;
  }
}

describe('terminal', () => {
  it('shows every control character, bidi control and separator escaped; leaves other text alone', () => {
    assert.equal(terminalText(HOSTILE.osc52), 'a\\x1b]52;c;cHduZWQ=\\x07b');
    assert.equal(terminalText(HOSTILE.clearScreen), 'c\\x1b[2Jd');
    assert.equal(terminalText(HOSTILE.newline), 'line1\\nline2');
    assert.equal(terminalText(HOSTILE.carriageReturn), 'shown\\rhidden');
    assert.equal(terminalText(HOSTILE.rtl), 'abc\\u202egnp.exe');
    assert.equal(terminalText('\u0085\u009b\u2028\u2029\u2066\u200f\x7f\t'), '\\x85\\x9b\\u2028\\u2029\\u2066\\u200f\\x7f\\t');
    assert.equal(terminalText('café 数据库 📦 a\\b'), 'café 数据库 📦 a\\b');
    fc.assert(fc.property(hostileString, (s) => !RAW_CONTROL.test(terminalText(s)) && !/[\n\t]/.test(terminalText(s))));
  });

  it('JSON stays JSON, parses to the same value, and carries no raw C1, bidi or separator', () => {
    fc.assert(fc.property(hostileString, (s) => {
      const json = terminalJson({ name: s, list: [s] });
      return !RAW_CONTROL.test(json) && JSON.parse(json).name === s && JSON.parse(json).list[0] === s;
    }));
    assert.ok(terminalJson({ n: HOSTILE.rtl }).includes('\\u202e'));
  });
});

describe('runner log', () => {
  it('the port of the runner parser sees the corpus raw as commands (the check is not vacuous)', () => {
    const raw = runnerCommands(`info ${HOSTILE.stopCommands}\n${decodeURIComponent(HOSTILE.percentNewline)}\n${HOSTILE.addMask}\n${HOSTILE.legacyCommand}\n\u00a0::error::spaced`);
    assert.deepEqual(raw.map((c) => c.command), ['stop-commands', 'error', 'add-mask', 'error', 'error']);
  });

  it('no value makes a line, a command, or a legacy command, wherever it sits in the message', () => {
    for (const v of HOSTILE_VALUES) {
      for (const message of [v, `table ${v}: rows differ`, decodeURIComponent(v.replace(/%(?![0-9A-F]{2})/g, '%25'))]) {
        const line = runnerLogText(message);
        assert.equal(runnerLines(line).length, 1, JSON.stringify(line));
        assert.equal(parseRunnerCommand(line), undefined, JSON.stringify(line));
      }
    }
    assert.equal(runnerLogText('::stop-commands::x'), '\\x3a:stop-commands::x');
    assert.equal(runnerLogText('  ::error::x'), '  \\x3a:error::x');
    assert.equal(runnerLogText('a ##[error]b'), 'a ##\\x5berror]b');
    fc.assert(fc.property(hostileString, hostileString, (a, b) => {
      const line = runnerLogText(`${a}${b}`);
      return runnerLines(line).length === 1 && parseRunnerCommand(line) === undefined;
    }));
  });
});

describe('GitHub Markdown', () => {
  it('a code span holds any text literally: fence longer than every backtick run, padded when needed', () => {
    fc.assert(fc.property(hostileString, (s) => {
      const span = markdownCode(s);
      const expected = terminalText(s).replace(/@(?=[\p{L}\p{N}_-])/gu, `@${ZWSP}`);
      if (expected === '') return span === '';
      const { content, rest } = readCodeSpan(span);
      return content === expected && rest === '' && !span.includes('\n');
    }));
    assert.equal(markdownCode('a`b'), '``a`b``');
    assert.equal(markdownCode('`x`'), '`` `x` ``');
    assert.equal(markdownCode(HOSTILE.backticks), '`````tick ``` `x` ```` end`````');
    assert.equal(markdownCode('a|b', { inTable: true }), '`a\\|b`');
  });

  it('prose: no HTML, link, image, autolink, mention, code span or line break survives', () => {
    for (const v of HOSTILE_VALUES) {
      const md = markdownText(v);
      assert.ok(!RAW_CONTROL.test(md) && !md.includes('\n'), md);
      assert.doesNotMatch(md, /<|>/, 'no raw angle bracket');
      assert.doesNotMatch(md, /(?<!\\)\[|(?<!\\)\]/, 'every bracket escaped');
      assert.doesNotMatch(md, /(?<!\\)`/, 'every backtick escaped');
      assert.doesNotMatch(md, /@[\p{L}\p{N}_-]/u, 'no mention');
      assert.doesNotMatch(md, /https?:\/\//, 'no autolink');
    }
    assert.equal(markdownText(HOSTILE.mention), 'team @&#8203;org/team and @&#8203;user');
    assert.equal(markdownText(HOSTILE.slackBroadcast), 'ping &lt;\\!channel&gt; now');
    assert.equal(markdownText(HOSTILE.markdownLink), 'click\\](javascript:alert(1))');
    assert.equal(markdownText('# title'), '\\# title');
    assert.equal(markdownText('see www.evil.example'), 'see www\\.evil.example');
    assert.equal(markdownText('row count of public.orders is 10'), 'row count of public.orders is 10', 'ordinary text unchanged');
    const block = markdownCodeBlock('run ```` this', 'sh');
    assert.equal(block, '`````sh\nrun ```` this\n`````');
  });

  it('HTML in a job summary: entities, no tag, no mention, one line', () => {
    for (const v of HOSTILE_VALUES) {
      const html = githubHtmlText(v);
      assert.doesNotMatch(html, /[<>"']|@[\p{L}\p{N}_-]/u, html);
      assert.ok(!RAW_CONTROL.test(html) && !html.includes('\n'));
    }
    assert.equal(githubHtmlText(HOSTILE.html), '&lt;img src=x onerror=alert(1)&gt;');
  });

  it('issue titles: one plain line, at most 256 characters', () => {
    const title = issueTitleText(`Backup drill failed: ${HOSTILE_VALUES.join('/')}`);
    assert.ok(!RAW_CONTROL.test(title) && !title.includes('\n') && title.length <= 256);
    assert.doesNotMatch(title, /@[\p{L}\p{N}_-]/u);
  });
});

describe('chat', () => {
  it("Slack: only &, < and > escaped, as Slack asks: no link, no <!channel>, no <@U…>", () => {
    assert.equal(slackText(HOSTILE.slackBroadcast), 'ping &lt;!channel&gt; now');
    assert.equal(slackText(HOSTILE.slackLink), 'see &lt;https://evil.example|x&gt;');
    assert.equal(slackText('a & b *c*'), 'a &amp; b *c*');
    fc.assert(fc.property(hostileString, (s) => !/[<>]/.test(slackText(s)) && !/&(?!amp;|lt;|gt;)/.test(slackText(s)) && !RAW_CONTROL.test(slackText(s))));
    assert.equal(chatText('@channel'), `@${ZWSP}channel`, 'the generic format also breaks @channel (Mattermost, Rocket.Chat)');
  });

  it('Teams and Discord: no tag, link or mention', () => {
    for (const v of HOSTILE_VALUES) {
      for (const out of [teamsText(v), discordText(v)]) {
        assert.doesNotMatch(out, /(?<!\\)[[\]<]|@(everyone|here|org|user)\b/i, out);
        assert.ok(!RAW_CONTROL.test(out) && !out.includes('\n'));
      }
    }
    assert.equal(discordText(HOSTILE.discord), `@${ZWSP}everyone @${ZWSP}here \\<@${ZWSP}123456\\>`);
  });

  it('the body of each receiver: Slack and Teams text escaped for them, Discord with allowed_mentions, raw values as JSON fields', () => {
    const report: RunReport = {
      command: 'drill', ok: false, reason: `row count of public.${HOSTILE.slackBroadcast} differs`, startedAt: new Date(0), finishedAt: new Date(1000),
      targets: [{ labels: { service: HOSTILE.mention, environment: 'prod', database: HOSTILE.newline }, ok: false, reason: `row count of public.${HOSTILE.slackBroadcast} differs` }],
    };
    assert.equal(webhookFormat('https://hooks.slack.com/services/T0/B0/x'), 'slack');
    assert.equal(webhookFormat('https://acme.webhook.office.com/webhookb2/x'), 'teams');
    assert.equal(webhookFormat('https://discord.com/api/webhooks/1/x'), 'discord');
    assert.equal(webhookFormat('https://discord.com/api/webhooks/1/x/slack'), 'json');
    assert.equal(webhookFormat('https://chat.example/hooks/x'), 'json');
    const slack = webhookBody(report, 'slack') as { text: string; database: string };
    assert.equal(slack.text, '❌ pg-backup drill FAILED: team @org/team and @user/prod/line1\\nline2: FAILED: row count of public.ping &lt;!channel&gt; now differs');
    assert.equal(slack.database, HOSTILE.newline, 'the JSON fields carry the value itself (JSON escapes it)');
    const discord = webhookBody(report, 'discord') as { content: string; allowed_mentions: unknown };
    assert.deepEqual(discord.allowed_mentions, { parse: [] });
    assert.doesNotMatch(discord.content, /<!channel>|@org/);
    assert.equal(Object.keys(discord).sort().join(), 'allowed_mentions,content');
    const teams = webhookBody(report, 'teams') as { text: string };
    assert.doesNotMatch(teams.text, /<!channel>|@org|\n.*\n/);
    assert.equal(webhookMessage(report).text.split('\n').length, 1, 'a line break in a name stays in its line');
  });
});
