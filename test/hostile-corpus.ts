// One hostile corpus for every sink (src/text/sinks.ts): names and fields as someone who can
// write to the bucket, or create a table in the database, would choose them. Each entry is a
// string as it reaches pg-backup (a decoded key segment, a manifest field, a table name).

/** What each entry attacks. */
export const HOSTILE = {
  newline: 'line1\nline2',
  carriageReturn: 'shown\rhidden',
  /** OSC 52: writes "pwned" to the terminal's clipboard. */
  osc52: 'a\x1b]52;c;cHduZWQ=\x07b',
  clearScreen: 'c\x1b[2Jd',
  /** On a line of its own in the runner log: every later workflow command is ignored. */
  stopCommands: 'x\n::stop-commands::pgbstoptoken',
  /** A percent-encoded line break, as a key segment carries it. */
  percentNewline: 'y%0A::error::pgbinjected',
  addMask: 'z\r::add-mask::pgbmasked',
  legacyCommand: 'w ##[error]pgblegacy',
  mention: 'team @org/team and @user',
  slackBroadcast: 'ping <!channel> now',
  slackLink: 'see <https://evil.example|x>',
  backticks: 'tick ``` `x` ```` end',
  markdownLink: 'click](javascript:alert(1))',
  image: '![i](https://evil.example/x.png)',
  html: '<img src=x onerror=alert(1)>',
  rtl: 'abc\u202egnp.exe',
  discord: '@everyone @here <@123456>',
} as const;

export type HostileName = keyof typeof HOSTILE;

/** Every corpus value. */
export const HOSTILE_VALUES: string[] = Object.values(HOSTILE);

/**
 * Raw forms that must never reach a sink as they are (whatever the sink): the control
 * characters and line-starting commands. Per-sink markup forms are checked by each test.
 */
export const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/; // eslint-disable-line no-control-regex
