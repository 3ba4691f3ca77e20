/**
 * Text from a bucket (names, reasons, keys) on a terminal: C0 and C1 control characters and DEL
 * (escape sequences, carriage returns that overwrite a line) are shown as `\xNN`, so a hostile
 * report cannot move the cursor, recolour or hide output. Newlines are kept only where the
 * caller writes them (this is applied per line).
 */
export function terminalText(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
