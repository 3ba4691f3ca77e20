import { execa } from 'execa';
import { UsageError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { clearBinaryCache } from './binaries.ts';

/**
 * The shell script that installs `postgresql-client-<major>` from the PostgreSQL apt
 * repository (apt.postgresql.org, "PGDG"), as its documentation describes for Debian and
 * Ubuntu: the repository's signing key, a `-pgdg` source for this release, then the package.
 */
export function pgdgInstallScript(major: number): string {
  if (!Number.isInteger(major) || major < 9) throw new Error(`not a PostgreSQL major version: ${major}`);
  return [
    'set -euo pipefail',
    'install -d /usr/share/postgresql-common/pgdg',
    'curl -fsSLo /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc',
    '. /etc/os-release',
    'echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" > /etc/apt/sources.list.d/pgdg.list',
    'apt-get update -qq',
    `DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client-${major}`,
  ].join('\n');
}

/**
 * Installs `postgresql-client-<major>` (as root, or through passwordless `sudo`, as on
 * GitHub-hosted runners), then forgets the cached list of PostgreSQL programs so the new
 * pg_dump is found.
 * @throws UsageError when the installation fails, with apt's last line.
 */
export async function installPgClient(major: number, logger: Logger): Promise<void> {
  logger.info(`installing postgresql-client-${major} from the PostgreSQL apt repository`);
  const script = pgdgInstallScript(major);
  const asRoot = process.getuid?.() === 0;
  const r = await execa(asRoot ? 'bash' : 'sudo', asRoot ? ['-c', script] : ['-n', 'bash', '-c', script], { reject: false, all: true });
  if (r.exitCode !== 0) {
    const last = (r.all ?? '').trim().split('\n').pop() ?? '';
    throw new UsageError(`could not install postgresql-client-${major} (${last || `exit ${r.exitCode}`}): install it in an earlier step, or set PG_BIN_DIR`);
  }
  clearBinaryCache();
}
