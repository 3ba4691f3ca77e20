// Prints the release notes of one version: its section of CHANGELOG.md (Keep a Changelog:
// `## [X.Y.Z] - YYYY-MM-DD` up to the next `## [`), without the heading, for `gh release create
// --notes-file`. The release workflow runs it before anything is tagged or published.
//   node scripts/release-notes.ts 1.2.3 > notes.md
// Exit 2 with one line when the version is malformed, or CHANGELOG.md has no such section or an
// empty one.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The body of `version`'s section in a Keep a Changelog text (`## [1.2.3] - 2026-12-07` or
 * `## [1.2.3]`), trimmed; undefined when there is no such section.
 */
export function changelogSection(changelog: string, version: string): string | undefined {
  const lines = changelog.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`## [${version}]`) && /^## \[[^\]]+\](\s+-\s+\S.*)?\s*$/.test(l));
  if (start < 0) return undefined;
  const rest = lines.slice(start + 1);
  const end = rest.findIndex((l) => l.startsWith('## [') || /^\[[^\]]+\]:\s/.test(l));
  return rest.slice(0, end < 0 ? undefined : end).join('\n').trim();
}

/** A semantic version without a leading `v`: X.Y.Z, optionally a pre-release (`1.0.0-rc.1`). */
export const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$/;

if (import.meta.url === `file://${process.argv[1]}`) {
  const version = (process.argv[2] ?? '').replace(/^v/, '');
  if (!SEMVER.test(version)) {
    process.stderr.write(`release-notes: "${process.argv[2] ?? ''}" is not a version X.Y.Z\n`);
    process.exit(2);
  }
  const notes = changelogSection(readFileSync(path.join(root, 'CHANGELOG.md'), 'utf8'), version);
  if (!notes) {
    process.stderr.write(`release-notes: CHANGELOG.md has no ${notes === undefined ? '' : 'non-empty '}section "## [${version}] - YYYY-MM-DD": add it before releasing\n`);
    process.exit(2);
  }
  process.stdout.write(`${notes}\n`);
}
