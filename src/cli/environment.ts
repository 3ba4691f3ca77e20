/**
 * One environment variable (or a family of them) that `pg-backup` reads, for the CLI reference
 * (docs/reference/cli.md, rendered by scripts/docs.ts). `names` are the exact variable names;
 * `default` is what applies when none is set (empty: nothing); `use` says what it sets.
 * test/unit/reference-docs.test.ts fails when a `PG_BACKUP_*` or `PGB_*` variable named in
 * src/ or bin/ is missing here.
 */
export interface EnvironmentVariable {
  group: string;
  names: string[];
  default: string;
  use: string;
}

/** Every environment variable the CLI reads, grouped as the reference page shows them. */
export const ENVIRONMENT: readonly EnvironmentVariable[] = [
  { group: 'database', names: ['DATABASE_URL'], default: '', use: 'the database of `dump` when no `--database-url` is given: a `postgresql://` URL or a libpq `key=value` string. Prefer it to `--database-url`: a command line is visible to other users of the machine' },
  { group: 'database', names: ['PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE', 'PGSSLMODE'], default: 'libpq defaults', use: "libpq's variables, when neither `--database-url` nor `DATABASE_URL` is given (and `PGSSLMODE` & co. alongside a URL)" },
  { group: 'database', names: ['PGCONNECT_TIMEOUT'], default: '`15` (seconds)', use: 'limit to connect to a database; past it the command stops with one line (exit 2)' },
  { group: 'storage', names: ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'], default: "the AWS SDK's chain (profiles, web identity, instance role)", use: 'S3 credentials' },
  { group: 'storage', names: ['AWS_REGION', 'AWS_DEFAULT_REGION'], default: '`us-east-1`', use: 'S3 region, when no `--region` is given' },
  { group: 'storage', names: ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'], default: 'AWS S3', use: 'S3 endpoint (R2, Spaces, MinIO, B2, Ceph), when no `--endpoint` is given; custom endpoints get path-style addressing and no optional CRC32 checksum headers' },
  { group: 'storage', names: ['AWS_CA_BUNDLE'], default: "Node's trusted CAs (and `NODE_EXTRA_CA_CERTS`)", use: "a PEM file of CA certificates to trust for an HTTPS S3 endpoint (a MinIO or Ceph behind your own CA, a network that re-signs TLS): added to Node's trusted CAs for the process's TLS connections once an `s3://` location is opened (Node 24.5+). The AWS CLI's variable, where it replaces the default bundle instead. An endpoint whose certificate no trusted CA signed fails with one line naming it (exit 2)" },
  { group: 'S3 network limits', names: ['PG_BACKUP_S3_CONNECT_TIMEOUT'], default: '`10s`', use: 'limit to open a connection to the store' },
  { group: 'S3 network limits', names: ['PG_BACKUP_S3_FIRST_BYTE_TIMEOUT'], default: '`20s`', use: "limit for an answer to start (requests that carry a part are bounded by the idle limit instead)" },
  { group: 'S3 network limits', names: ['PG_BACKUP_S3_IDLE_TIMEOUT'], default: '`20s`', use: 'limit with no byte moving either way' },
  { group: 'S3 network limits', names: ['PG_BACKUP_S3_READ_IDLE_TIMEOUT'], default: '`120s`', use: "idle limit while an object's body is read, and for CompleteMultipartUpload" },
  { group: 'S3 network limits', names: ['PG_BACKUP_S3_MAX_ATTEMPTS'], default: '`4`', use: "attempts per request (the SDK's standard retries: backoff with jitter)" },
  { group: 'S3 reads', names: ['PG_BACKUP_S3_READ_RANGE_SIZE'], default: '`8MiB` (`64KiB`–`1GiB`)', use: '`verify`, `restore` and `drill` read an object larger than one range as ranged GETs (one GET for a smaller one), every range pinned to the first answer\'s ETag (`If-Match`: an object replaced mid-read fails with one line, exit 1); a range whose body breaks off is resumed where it broke, within `PG_BACKUP_S3_MAX_ATTEMPTS`' },
  { group: 'S3 reads', names: ['PG_BACKUP_S3_READ_CONCURRENCY'], default: '`1` (at most `32`)', use: 'ranges in flight: above 1, ranges are read ahead in parallel, one more after two ranges in a row during which the reader waited on the network over half the time (for a link where one connection is the bottleneck, e.g. a distant region). Memory: at most concurrency × range size' },
  { group: 'protection', names: ['PG_BACKUP_SSE_C_KEY'], default: '', use: 'the SSE-C key (base64, e.g. `openssl rand -base64 32`) for `--sse sse-c`; every later read needs the same variable' },
  { group: 'protection', names: ['PG_BACKUP_AGE_RECIPIENTS'], default: '', use: '`dump`: age public keys to encrypt to (comma-, space- or newline-separated), when no `--age-recipient` is given' },
  { group: 'protection', names: ['PG_BACKUP_AGE_IDENTITY', 'PG_BACKUP_AGE_IDENTITY_FILE'], default: '', use: 'the age identity (secret key) text, or a file holding it, for reading encrypted backups, when no `--age-identity-file` is given' },
  { group: 'protection', names: ['PG_BACKUP_READER_AWS_ACCESS_KEY_ID', 'PG_BACKUP_READER_AWS_SECRET_ACCESS_KEY', 'PG_BACKUP_READER_AWS_SESSION_TOKEN'], default: "the dump's credentials", use: "read-only credentials for `dump --verify`, so the dump's own can be write-only" },
  { group: 'protection', names: ['PG_BACKUP_MIRROR_AWS_ACCESS_KEY_ID', 'PG_BACKUP_MIRROR_AWS_SECRET_ACCESS_KEY', 'PG_BACKUP_MIRROR_AWS_SESSION_TOKEN'], default: "the AWS SDK's chain", use: 'credentials of the mirror location (`dump --mirror-to`, `mirror --to`)' },
  { group: 'evidence', names: ['PG_BACKUP_SIGN_KEY_FILE'], default: '', use: '`drill`: Ed25519 PEM private key that signs the drill\'s in-toto statement, when no `--sign-key` is given (docs/evidence.md)' },
  { group: 'alerts', names: ['PG_BACKUP_NOTIFY_URL'], default: '', use: 'webhook for `--notify-url` (dump, verify, drill, prune)' },
  { group: 'alerts', names: ['PG_BACKUP_HEALTHCHECK_URL'], default: '', use: 'healthchecks.io check URL for `--healthcheck-url` (dump, verify, drill, prune)' },
  { group: 'PostgreSQL programs', names: ['PG_BIN_DIR'], default: 'the usual places, then `PATH`', use: 'directory of `pg_dump`/`pg_restore`/`psql`/`initdb`/`pg_ctl` (searched alone when set; several separated by `:`)' },
  { group: 'throwaway clusters', names: ['PG_BACKUP_WORK_DIR'], default: 'the temp dir', use: 'parent directory of downloads, spools and throwaway clusters, when no `--work-dir` is given' },
  { group: 'throwaway clusters', names: ['PG_BACKUP_CLUSTER_USER'], default: '`pg-backup-drill`, created on demand', use: 'unprivileged OS user that runs throwaway clusters (and a physical drill\'s checks) when `pg-backup` is root or has passwordless sudo; code restored from a backup runs as this user (docs/drills.md, "Who runs the throwaway cluster")' },
  { group: 'throwaway clusters', names: ['PG_BACKUP_PGBACKREST_USER'], default: '`postgres`', use: 'physical drill as root: OS user that runs the restored server during WAL replay, whose restore_command reads the pgBackRest repository' },
  { group: 'throwaway clusters', names: ['PG_BACKUP_POSTGRES_CACHE'], default: '`${XDG_CACHE_HOME:-~/.cache}/pg-backup/postgres`; as root `/var/cache/pg-backup/postgres`', use: 'where server binaries fetched for `drill --postgres-version` are kept' },
  { group: 'settings', names: ['PG_BACKUP_CONFIG'], default: '`./pg-backup.yml` if present', use: 'the settings file (docs/configuration.md), when no `--config` is given; flags and the other variables win over its settings' },
  { group: 'output', names: ['NO_COLOR'], default: '', use: '`status`: no colours on a terminal' },
  { group: 'output', names: ['PG_BACKUP_DEBUG'], default: '', use: 'any value: print the stack trace of an unexpected error (never of a usage mistake)' },
  { group: 'launcher', names: ['PGB_CLI_SOURCES'], default: '', use: '`1`: run the TypeScript sources, not the bundle `dist/cli.js`' },
  { group: 'launcher', names: ['PGB_TRACE_LAUNCHER'], default: '', use: '`1`: say on stderr which entry (bundle or sources) runs' },
  { group: 'launcher', names: ['PGB_HEAP_CAP'], default: '', use: "`0`: run node without the memory settings the launcher gives it: V8's young generation capped at 1 MiB (`--max-semi-space-size=1`) and glibc's `MALLOC_ARENA_MAX=2` (for this process only; its children do not inherit it)" },
  { group: 'launcher', names: ['PGB_MALLOC_ARENA'], default: '', use: "set by the launcher's shebang line and restart, not by users: `1` marks `MALLOC_ARENA_MAX` as the launcher's own, which it then takes out of the environment pg_dump, zstd and PostgreSQL inherit" },
  { group: 'tests', names: ['PGB_LEFTOVER_MARK'], default: '', use: 'set by the tests, not by users: a random marker that reaches every child process (the throwaway server\'s scrubbed environment keeps it) so a test finds what a run left behind' },
  { group: 'launcher', names: ['PGB_WARM_COMPILE_CACHE'], default: '', use: "`1`: compile the bundle into V8's compile cache (`dist/compile-cache/`) and record it, then exit; `npm run build` and `npm ci` do it, so that `dump` can read the cache without writing a file" },
];
