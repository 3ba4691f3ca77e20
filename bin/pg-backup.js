#!/usr/bin/env node
// pg-backup CLI launcher. Runs the TypeScript sources directly with Node's type stripping
// (Node 22.18+/23.6+; the project targets Node 24, which `npm ci` installs as node_modules/.bin/node
// and `npx pg-backup` puts first on the PATH).
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18) || (major === 23 && minor < 6)) {
  process.stderr.write(`pg-backup: needs Node.js 24 (this is ${process.versions.node}): run "npm ci" in the repository, then "npx pg-backup …"\n`);
  process.exit(2);
}
const { main } = await import('../src/cli/main.ts');
const code = await main(process.argv);
process.stdout.write('', () => process.exit(code));
