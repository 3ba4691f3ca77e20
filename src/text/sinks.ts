/**
 * One way out for untrusted text, one function per sink.
 *
 * A name or field read from a bucket or a database (a service, environment or database name
 * decoded from a key, a table name, a manifest's `server.version`, a drill reason, a key itself)
 * is data, not markup. The same string is harmless in one sink and dangerous in another:
 * `<!channel>` is text on a terminal and a ping in Slack; `::stop-commands::x` is text in
 * Markdown and switches off every later workflow command at the start of a runner log line.
 * So every such value passes through the function of the sink it is written to, at the moment
 * it is written:
 *
 * | sink | function | what it stops |
 * |---|---|---|
 * | terminal (stderr lines, stdout tables) | {@link terminalText} | control characters: C0, DEL, C1 (ESC sequences such as OSC 52 clipboard writes, clear screen), bidi overrides, line separators; shown escaped (`\n`, `\x1b`, `\u202e`) |
 * | terminal JSON (`--json`) | {@link terminalJson} | the same characters left raw by `JSON.stringify`, as `\uXXXX` (still JSON, same value) |
 * | GitHub Actions runner log | {@link runnerLogText} | a workflow command: `::name::` at the start of a line (after the runner's trim), `##[name]` anywhere, a line break |
 * | GitHub Markdown prose (issue body) | {@link markdownText} | HTML, links, images, autolinks, emphasis, mentions, line breaks |
 * | GitHub Markdown code span | {@link markdownCode} | a backtick ending the span, mentions, line breaks |
 * | HTML inside GitHub Markdown (job summary tables) | {@link githubHtmlText} | tags, entities, mentions, line breaks |
 * | GitHub issue title | {@link issueTitleText} | line breaks, control characters, over-long titles, mentions |
 * | Slack `text` (mrkdwn) | {@link slackText} | `&`, `<`, `>`: links `<url\|label>`, `<!channel>`, `<@U…>` |
 * | Microsoft Teams `text` | {@link teamsText} | HTML, Markdown links and emphasis, `<at>` mentions |
 * | Discord `content` | {@link discordText} | Markdown (masked links), `@everyone` / `@here`, `<@…>` mentions |
 * | any other JSON receiver's `text` | {@link chatText} | Slack's three characters and `@channel`-style mentions (Mattermost, Rocket.Chat) |
 *
 * The HTML status page escapes with its own `esc` (src/status/html.ts) and passes data as JSON
 * with `<`, `>`, `&`, U+2028 and U+2029 escaped.
 *
 * Sources: the runner's command parser (actions/runner `src/Runner.Common/ActionCommand.cs`:
 * `TryParseV2` trims leading white space, then needs `::`; the legacy `TryParse` finds `##[`
 * anywhere in a line; `ProcessInvoker` splits output on CR, LF and CRLF); `@actions/core`'s
 * `escapeData` (`%`, CR, LF) for a command's data; CommonMark 0.31 §2.4 (any ASCII punctuation
 * may be backslash-escaped) and §6.1 (a code span ends at a backtick string of the same length;
 * one leading and trailing space is stripped); GitHub's mention filter skips `code`; Slack
 * "Formatting text for app surfaces" (escape `&`, `<`, `>` only); Discord's `allowed_mentions`;
 * Unicode TR 36 and CVE-2021-42574 for bidi controls.
 */

/**
 * Characters no sink shows raw: C0 controls, DEL, C1 controls, ALM, LRM, RLM, the line and
 * paragraph separators, the bidi embeddings and overrides (U+202A–U+202E) and isolates
 * (U+2066–U+2069).
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/** {@link UNSAFE} without C0, which `JSON.stringify` already escapes. */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** `\n`, `\r`, `\t`, `\xNN` below U+0100, `\uNNNN` above. */
function visible(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

/**
 * Text for a terminal (or a plain-text file read in one): every control character, bidi
 * control and line separator shown escaped (`a\nb`, `\x1b]52;c;…\x07`, `\u202e`), so a value
 * can neither move the cursor, clear the screen, write the clipboard (OSC 52), reorder what is
 * shown nor start a line of its own. Backslashes are kept as they are (the escape is for the
 * eye, not reversible). A string without such characters comes back unchanged.
 */
export function terminalText(text: string): string {
  return text.replace(UNSAFE, visible);
}

/**
 * `JSON.stringify(value, null, indent)` for a terminal: the DEL, C1, bidi and separator
 * characters that JSON leaves raw become `\uXXXX` escapes (C0 controls are escaped by JSON
 * already). Still valid JSON; it parses to the same value.
 */
export function terminalJson(value: unknown, indent: number | undefined = 2): string {
  const json = JSON.stringify(value, null, indent) ?? 'null';
  return json.replace(UNSAFE_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * One line for the GitHub Actions runner log (`core.info`, the data of `core.warning`,
 * `core.error`, `core.setFailed`, a group's name): {@link terminalText} (so no CR or LF can start
 * a line of its own), a leading `::` (after white space, which the runner trims) written
 * `\x3a:`, and every `##[` written `##\x5b`, so the line is never a workflow command:
 * not `::stop-commands::`, `::add-mask::`, `::error::`, nor the legacy `##[set-output …]`.
 */
export function runnerLogText(text: string): string {
  return terminalText(text)
    .replace(/##\[/g, '##\\x5b')
    .replace(/^(\s*):(?=:)/, '$1\\x3a');
}

/** A zero-width space after `@` when a name follows: GitHub, Mattermost and Discord then see no mention. */
function breakMentions(text: string, zeroWidthSpace: string): string {
  return text.replace(/@(?=[\p{L}\p{N}_-])/gu, `@${zeroWidthSpace}`);
}

/** Inline Markdown punctuation, backslash-escaped anywhere in prose. */
const MARKDOWN_INLINE = /[\\`*_[\]!|~$]/g;

/**
 * Prose for GitHub-flavoured Markdown (an issue's body, a cell of a Markdown table):
 * {@link terminalText} (no line break, so no new block); `&`, `<`, `>` as entities (no HTML, no
 * `<https://…>` autolink); the inline punctuation `` \ ` * _ [ ] ! | ~ $ `` backslash-escaped
 * (CommonMark §2.4: no link, image, emphasis, code span, table cell break or math); `:` before
 * `/` and `.` after `www` escaped (no GFM extended autolink); a block marker at the start (`#`,
 * `-`, `+`, `=`, `1.`) escaped (no heading or list); and a zero-width space (`&#8203;`) after
 * `@` (no `@user` / `@org/team` mention). Renders as the text it was.
 */
export function markdownText(text: string): string {
  const escaped = terminalText(text)
    .replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'))
    .replace(MARKDOWN_INLINE, (c) => `\\${c}`)
    .replace(/:(?=\/)/g, '\\:')
    .replace(/\b(www)\./gi, '$1\\.')
    .replace(/^(\s*)([#+=-]|\d+[.)])/, (_, space: string, marker: string) => `${space}${marker.replace(/[#+=.)-]/, (c) => `\\${c}`)}`);
  return breakMentions(escaped, '&#8203;');
}

/**
 * A GitHub-flavoured Markdown inline code span holding `text` literally: fenced with one backtick
 * more than the longest backtick run inside (CommonMark §6.1), padded with a space when the text
 * starts or ends with a backtick or space; {@link terminalText} first (a code span cannot hold
 * a line break) and a zero-width space after `@` (as Dependabot does). `inTable`: `|` written
 * `\|`, which a GFM table removes before it parses the cell. Empty text gives an empty string.
 */
export function markdownCode(text: string, options: { inTable?: boolean } = {}): string {
  let body = breakMentions(terminalText(text), '\u200b');
  if (!body) return '';
  const longest = Math.max(0, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = '`'.repeat(longest + 1);
  const pad = body.startsWith('`') || body.endsWith('`') || (body.startsWith(' ') && body.endsWith(' ') && body.trim() !== '') ? ' ' : '';
  if (options.inTable) body = body.replace(/\|/g, '\\|');
  return `${fence}${pad}${body}${pad}${fence}`;
}

/**
 * A fenced code block (CommonMark §4.5) holding `text` as one line ({@link terminalText}): the
 * fence is one backtick longer than the longest backtick run inside (at least three), so no line
 * of the text can close it; `info` names the language (`sh`). Ends with the closing fence, no
 * line break after it.
 */
export function markdownCodeBlock(text: string, info = ''): string {
  const body = breakMentions(terminalText(text), '\u200b');
  const longest = Math.max(2, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = '`'.repeat(longest + 1);
  return `${fence}${info}\n${body}\n${fence}`;
}

/**
 * Text inside HTML that GitHub renders from Markdown (a job summary's `<td>` and `<p>`, as
 * `core.summary` writes them): {@link terminalText} (a blank line would end the HTML block and
 * let Markdown in), `& < > " '` as entities, and a zero-width space (`&#8203;`) after `@`; `[`,
 * `]` and backticks as entities too, so the text stays inert even where it is read as Markdown.
 */
export function githubHtmlText(text: string): string {
  const escaped = terminalText(text).replace(/[&<>"'[\]`]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '[': '&#91;', ']': '&#93;', '`': '&#96;' })[c]!);
  return breakMentions(escaped, '&#8203;');
}

/** GitHub's limit on an issue title, in characters. */
export const ISSUE_TITLE_MAX = 256;

/** A GitHub issue title: plain text on one line ({@link terminalText}), mentions broken, at most {@link ISSUE_TITLE_MAX} characters. */
export function issueTitleText(text: string): string {
  const title = breakMentions(terminalText(text), '\u200b');
  return title.length > ISSUE_TITLE_MAX ? `${title.slice(0, ISSUE_TITLE_MAX - 1)}…` : title;
}

/**
 * A value in Slack's `text` (mrkdwn): {@link terminalText}, then `&`, `<`, `>` as `&amp;`,
 * `&lt;`, `&gt;` — the only three characters Slack asks to escape — so no `<url|label>` link,
 * `<!channel>` / `<!here>` or `<@U…>` mention can be formed.
 */
export function slackText(text: string): string {
  return terminalText(text).replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}

/**
 * A value in the `text` of a receiver whose format is unknown (the generic JSON webhook): Slack's
 * escaping ({@link slackText}, which Slack-compatible receivers such as Mattermost and
 * Rocket.Chat share) and a zero-width space after `@` (their `@channel`, `@all`, `@here`).
 */
export function chatText(text: string): string {
  return breakMentions(slackText(text), '\u200b');
}

/**
 * A value in a Microsoft Teams message's `text` (Markdown with an HTML subset): `&`, `<`, `>` as
 * entities (no tags, no `<at>` mention), Markdown punctuation backslash-escaped (no link,
 * emphasis or heading), a zero-width space after `@`.
 */
export function teamsText(text: string): string {
  return breakMentions(
    terminalText(text).replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;')).replace(/[\\`*_[\](){}#+\-.!|~]/g, (c) => `\\${c}`),
    '\u200b',
  );
}

/**
 * A value in a Discord message's `content`: Markdown punctuation and `<` backslash-escaped (no
 * masked link, no `<@id>` / `<#id>` mention, no formatting), a zero-width space after `@` (no
 * `@everyone` / `@here`). The body also carries `allowed_mentions: { parse: [] }`, so Discord
 * pings no one whatever the text says.
 */
export function discordText(text: string): string {
  return breakMentions(terminalText(text).replace(/[\\`*_[\](){}#+\-.!|~<>:]/g, (c) => `\\${c}`), '\u200b');
}
