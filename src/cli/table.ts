/**
 * Aligned text tables for the terminal: a header row, then one row per item, columns separated
 * by two spaces and padded to the widest cell, as `kubectl get`, `docker ps` and `aws … --output
 * table` print them. `list` and `prune` use it.
 *
 * Widths are display columns, not UTF-16 units: a label read from a bucket may hold CJK
 * characters or emoji (two columns each), combining marks and zero-width characters (none);
 * see {@link displayWidth}. No borders and no colours, so the output pastes into an issue and
 * pipes into `awk`/`cut` unchanged (`--json` is the machine-readable form).
 */

/** One column: its header and how its cells align (`right` for numbers and sizes). */
export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/** A row of cells (one per column), or a line printed as is between rows (a group's heading). */
export type Row = string[] | { line: string };

/** The last column is not padded (no trailing spaces); the gap between columns, in columns. */
const GAP = '  ';

/**
 * Renders `rows` under a header row, each cell padded to its column's width.
 * @returns the lines, without newlines; just the header when there are no rows.
 * @throws Error (a bug) when a row has another number of cells than there are columns.
 */
export function renderTable(columns: Column[], rows: Row[]): string[] {
  const cells = rows.filter((r): r is string[] => Array.isArray(r));
  for (const r of cells) if (r.length !== columns.length) throw new Error(`table row has ${r.length} cells, expected ${columns.length}`);
  const widths = columns.map((c, i) => Math.max(displayWidth(c.header), ...cells.map((r) => displayWidth(r[i]!))));
  const format = (r: string[]) =>
    r
      .map((cell, i) => {
        const last = i === r.length - 1;
        const pad = ' '.repeat(widths[i]! - displayWidth(cell));
        return columns[i]!.align === 'right' ? pad + cell : last ? cell : cell + pad;
      })
      .join(GAP)
      .trimEnd();
  return [format(columns.map((c) => c.header)), ...rows.map((r) => (Array.isArray(r) ? format(r) : r.line))];
}

/** The grapheme segmenter, made on first use (ICU's set-up costs ~9 ms of CPU, which `--help` and an ASCII table do not need). */
let segmenter: Intl.Segmenter | undefined;

/**
 * Columns a string takes on a terminal: per grapheme cluster (Intl.Segmenter), 0 for control
 * and zero-width characters and combining marks, 2 for East Asian Wide and Fullwidth characters
 * (Unicode UAX #11: the CJK, Hangul, Kana and fullwidth-form blocks) and emoji presented as
 * emoji (flags too), else 1. The same rules as the `string-width` package, for the characters a backup
 * label can hold; escape sequences are not expected (labels are escaped before they get here).
 */
export function displayWidth(text: string): number {
  // Printable ASCII (most labels, keys and dates): one column per character, by the rules below.
  if (/^[\x20-\x7e]*$/.test(text)) return text.length;
  segmenter ??= new Intl.Segmenter('en', { granularity: 'grapheme' });
  let width = 0;
  for (const { segment } of segmenter.segment(text)) {
    const cp = segment.codePointAt(0)!;
    // eslint-disable-next-line no-control-regex
    if (/^[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]/.test(segment) || /^\p{Mn}/u.test(segment)) continue;
    const emoji = /\p{Regional_Indicator}/u.test(segment) || (/\p{Extended_Pictographic}/u.test(segment) && (/\uFE0F/.test(segment) || /\p{Emoji_Presentation}/u.test(segment)));
    width += emoji || isWide(cp) ? 2 : 1;
  }
  return width;
}

/** East Asian Wide (W) and Fullwidth (F) ranges of UAX #11 (EastAsianWidth.txt), the blocks in use. */
function isWide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) || // Hangul Jamo initials
    (cp >= 0x2e80 && cp <= 0x303e) || // CJK radicals, Kangxi, CJK symbols and punctuation
    (cp >= 0x3041 && cp <= 0x33ff) || // Hiragana, Katakana, Bopomofo, Hangul compatibility, CJK compatibility
    (cp >= 0x3400 && cp <= 0x4dbf) || // CJK extension A
    (cp >= 0x4e00 && cp <= 0x9fff) || // CJK unified ideographs
    (cp >= 0xa000 && cp <= 0xa4cf) || // Yi
    (cp >= 0xa960 && cp <= 0xa97f) || // Hangul Jamo extended-A
    (cp >= 0xac00 && cp <= 0xd7a3) || // Hangul syllables
    (cp >= 0xf900 && cp <= 0xfaff) || // CJK compatibility ideographs
    (cp >= 0xfe30 && cp <= 0xfe4f) || // CJK compatibility forms
    (cp >= 0xff00 && cp <= 0xff60) || // fullwidth forms
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1b000 && cp <= 0x1b2ff) || // Kana supplement and extensions
    (cp >= 0x20000 && cp <= 0x3fffd) // CJK extensions B–H, compatibility supplement
  );
}
