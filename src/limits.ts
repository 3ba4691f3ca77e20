/**
 * The most databases `dump --parallel-databases` (action input `parallel-databases`) runs at
 * once: each is its own pg_dump, compressor and upload, with its own server connections. Kept in
 * a module of its own so that the CLI's `--help` can show it without loading the dump.
 */
export const MAX_PARALLEL_DATABASES = 16;
