// Preloaded (`node --import`) into a CLI child by the soak test and the benchmark: when the process exits, appends
// its peak resident set size in KiB (`process.resourceUsage().maxRSS`) to the file named by
// PGB_RSS_FILE. Children (pg_dump, zstd, postgres) are separate processes and not counted.
// Plain JavaScript on purpose: a .ts preload makes Node load its WebAssembly TypeScript
// stripper into the measured process, which added 12-22 MiB to the peak RSS it reported for a
// 1 GB dump (116-121 MiB with this file, 133-138 with the .ts one, alternated).
import { appendFileSync } from 'node:fs';

const file = process.env.PGB_RSS_FILE;
if (file) process.on('exit', () => appendFileSync(file, `${process.resourceUsage().maxRSS}\n`));
