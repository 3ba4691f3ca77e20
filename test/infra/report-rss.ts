// Preloaded (`node --import`) into a CLI child by the soak test: when the process exits, appends
// its peak resident set size in KiB (`process.resourceUsage().maxRSS`) to the file named by
// PGB_RSS_FILE. Children (pg_dump, zstd, postgres) are separate processes and not counted.
import { appendFileSync } from 'node:fs';

const file = process.env.PGB_RSS_FILE;
if (file) process.on('exit', () => appendFileSync(file, `${process.resourceUsage().maxRSS}\n`));
