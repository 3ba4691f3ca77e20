import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ENVIRONMENT } from '../../src/cli/environment.ts';
import { REFERENCE_PAGES, referencePages } from '../../scripts/docs.ts';
import { root, run } from '../helpers.ts';

/**
 * The reference pages cannot fall out of step with the program and the actions: each must be
 * exactly what `npm run docs` renders from the commander definitions and actions/*\/action.yml,
 * what `pg-backup <command> --help` prints must be the options the page documents, and every
 * PG_BACKUP_* / PGB_* variable the code reads must be on the page. A new, renamed or removed
 * option, input, output or variable without `npm run docs` fails here.
 */
describe('docs/reference', () => {
  const pages = referencePages();

  for (const [file, text] of pages) {
    it(`${file} is what npm run docs renders`, () => {
      const committed = readFileSync(path.join(root, file), 'utf8');
      assert.ok(committed === text, `${file} is stale: run npm run docs and commit it`);
    });
  }

  /** Option flags per command, from the committed CLI page's tables. */
  function documentedOptions(): Map<string, string[]> {
    const byCommand = new Map<string, string[]>();
    let command: string | undefined;
    for (const line of readFileSync(path.join(root, REFERENCE_PAGES.cli), 'utf8').split('\n')) {
      const heading = /^## pg-backup (\S+)$/.exec(line);
      if (heading) byCommand.set((command = heading[1]!), []);
      else if (line.startsWith('## ')) command = undefined;
      const row = /^\| `(-[^`]+)` \|/.exec(line);
      if (command && row) byCommand.get(command)!.push(row[1]!);
    }
    return byCommand;
  }

  /** Runs the CLI as a user does (bin/pg-backup.js), for its help text. */
  async function help(args: string[]): Promise<string> {
    const r = await run(process.execPath, [path.join(root, 'bin/pg-backup.js'), ...args], { env: { DATABASE_URL: undefined } });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  it('documents every command pg-backup --help lists, and no other', async () => {
    const listed = [...(await help(['--help'])).matchAll(/^ {2}([a-z]+) \[options\]/gm)].map((m) => m[1]!);
    assert.ok(listed.length >= 10, 'the help lists the commands');
    assert.deepEqual([...documentedOptions().keys()], listed);
  });

  it('pg-backup <command> --help prints exactly the options the page documents', async () => {
    for (const [command, documented] of documentedOptions()) {
      assert.ok(documented.length, `${command}: the page lists its options`);
      const text = await help([command, '--help']);
      const printed = [...text.matchAll(/^ {2}(-\S.*?)(?: {2,}|$)/gm)].map((m) => m[1]!).filter((f) => f !== '-h, --help');
      assert.deepEqual(printed, documented, `${command}: --help and docs/reference/cli.md list the same options, in the same order`);
    }
  });

  it('names every PG_BACKUP_* and PGB_* variable the code reads', () => {
    const files = [
      ...readdirSync(path.join(root, 'src'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => path.join(root, 'src', f)),
      path.join(root, 'bin/pg-backup.js'),
    ];
    const read = new Set<string>();
    for (const file of files) for (const m of readFileSync(file, 'utf8').matchAll(/\b(?:PG_BACKUP|PGB)_[A-Z0-9_]*[A-Z0-9]\b/g)) read.add(m[0]);
    assert.ok(read.has('PG_BACKUP_WORK_DIR') && read.has('PGB_CLI_SOURCES'), 'the scan finds variables');
    const documented = new Set(ENVIRONMENT.flatMap((v) => v.names));
    const cliPage = pages.get(REFERENCE_PAGES.cli)!;
    const missing = [...read].filter((name) => !documented.has(name) || !cliPage.includes(`\`${name}\``)).sort();
    assert.deepEqual(missing, [], 'add them to src/cli/environment.ts, then run npm run docs');
  });

  it('documents every input and output of every action', () => {
    const actionsPage = pages.get(REFERENCE_PAGES.actions)!;
    for (const dir of readdirSync(path.join(root, 'actions'))) {
      const yml = readFileSync(path.join(root, 'actions', dir, 'action.yml'), 'utf8');
      const section = actionsPage.split(`\n## actions/${dir}\n`)[1]?.split('\n## ')[0];
      assert.ok(section, `the page has a section for actions/${dir}`);
      // Top-level keys of `inputs:` and `outputs:` (two-space indent), read without the YAML parser the script uses.
      for (const block of ['inputs', 'outputs']) {
        const body = yml.split(new RegExp(`^${block}:\\n`, 'm'))[1]?.split(/^\S/m)[0] ?? '';
        const names = [...body.matchAll(/^ {2}([a-z0-9-]+):/gm)].map((m) => m[1]!);
        assert.ok(names.length, `actions/${dir} declares ${block}`);
        for (const name of names) assert.match(section, new RegExp(`^\\| \`${name}\` \\|`, 'm'), `actions/${dir} ${block.slice(0, -1)} ${name} is documented`);
      }
    }
  });

  it('the README leads to the reference pages and the architecture', () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    for (const link of [REFERENCE_PAGES.cli, REFERENCE_PAGES.actions, 'docs/architecture.md', 'docs/runbooks.md', 'docs/performance.md', 'docs/security.md']) {
      assert.ok(readme.includes(`](${link}`), `README links ${link}`);
    }
  });
});
