/**
 * Import rules for src/ (docs/architecture.md, "Layers"), checked by `npx depcruise src` and by
 * test/unit/import-rules.test.ts: no import circle, and lower layers never import higher ones.
 */
const higher = {
  'src/(backup|postgres|storage)/': '^src/(cli|github|commands|physical)/',
  'src/storage/': '^src/(backup|postgres|physical|notify|status)/',
};
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import circle (type-only imports included) makes the load order and the layering unclear.',
      from: { path: '^(src|test/fixtures/import-circle)/' },
      to: { circular: true },
    },
    ...Object.entries(higher).map(([from, to]) => ({
      name: `no-upward-import-${from.replace(/[^a-z|]/g, '')}`,
      severity: 'error',
      comment: 'Dependencies point down only: actions and CLI → commands → postgres/backup → storage.',
      from: { path: `^${from}` },
      to: { path: to },
    })),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
