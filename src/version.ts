import pkg from '../package.json' with { type: 'json' };

/** This tool's name and version, as recorded in every manifest and drill report. */
export const TOOL = { name: pkg.name, version: pkg.version } as const;
