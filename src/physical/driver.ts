import type { RecoveryTarget } from './target-time.ts';

/**
 * The seam between the physical drill (src/physical/drill.ts) and the backup tool that owns the
 * repository: pgBackRest today ({@link PgBackRestDriver} in pgbackrest.ts); a WAL-G or Barman
 * driver implements the same interface where its binary exists. A driver never writes to the
 * repository and never touches the source cluster: it reads the archive's facts, restores into
 * the data directory the drill gives it, and explains failures in its own words.
 */
export interface PhysicalDriver {
  /** The tool, e.g. `pgbackrest`. */
  readonly tool: string;
  /** What is restored, as one label in the drill folder: the pgBackRest stanza name. */
  readonly scope: string;
  /** For messages, e.g. `pgBackRest stanza "main"`. */
  describe(): string;
  /** The tool's version line, e.g. `pgBackRest 2.45`. @throws UsageError when the tool is not installed. */
  version(signal?: AbortSignal): Promise<string>;
  /** The repository's backups and WAL archive. @throws CheckFailedError with the tool's reason. */
  inspect(signal?: AbortSignal): Promise<ArchiveFacts>;
  /**
   * Restores into `request.dataDir` (absent or empty) and writes the recovery settings for
   * `request.target` (restore_command, target, promote at the target), tablespaces under
   * `request.tablespaceDir`. Options of the user's own configuration stay as they are.
   * @throws CheckFailedError with the tool's own reason in one line.
   */
  restore(request: RestoreRequest): Promise<RestoreOutcome>;
  /** Extra environment of the restored server (its restore_command runs the tool). */
  serverEnv(): Record<string, string>;
  /**
   * The tool's configuration files, which may hold the repository's credentials: the drill
   * warns when another OS user (the restored server's checks run as one) can read them.
   */
  credentialFiles?(): string[];
  /**
   * The tool's reason why WAL segment `segment` cannot be fetched (`undefined` when it can), asked
   * as the restored server's restore_command would ask (`dataDir`: the restored data directory;
   * the probe's copy lands beside it).
   */
  explainMissingWal(segment: string, dataDir: string, signal?: AbortSignal): Promise<string | undefined>;
  /** Checks every file of the repository (e.g. `pgbackrest verify`); returns the problems found. */
  verifyRepository(signal?: AbortSignal): Promise<RepositoryVerification>;
}

/** One physical backup in a repository. Times are UTC ISO 8601. */
export interface PhysicalBackup {
  /** The tool's name for it, e.g. pgBackRest's `20261202-092258F`. */
  label: string;
  /** `full`, `diff`, `incr`. */
  type: string;
  startedAt: string;
  stoppedAt: string;
  /** The first and last WAL segment the backup needs to be consistent. */
  walStart?: string;
  walStop?: string;
}

/** What a repository holds, as its tool reports it. */
export interface ArchiveFacts {
  /** The PostgreSQL major version of the backed-up cluster (a physical restore needs exactly it). */
  pgMajor: number;
  /** Oldest first. */
  backups: PhysicalBackup[];
  /** The oldest and newest WAL segment names in the archive (24 hex digits). */
  oldestWal?: string;
  newestWal?: string;
  /** When the newest segment was archived (the object's modification time), if known. */
  newestWalArchivedAt?: Date;
}

/** Input of {@link PhysicalDriver.restore}. */
export interface RestoreRequest {
  dataDir: string;
  tablespaceDir: string;
  target: RecoveryTarget;
  signal?: AbortSignal;
  /** Receives the tool's output lines, for the drill log. */
  onLine?: (line: string) => void;
}

/** Output of {@link PhysicalDriver.restore}. */
export interface RestoreOutcome {
  /** The backup the tool restored, when it says so. */
  backupLabel?: string;
}

/** Output of {@link PhysicalDriver.verifyRepository}. */
export interface RepositoryVerification {
  ok: boolean;
  problems: string[];
}
