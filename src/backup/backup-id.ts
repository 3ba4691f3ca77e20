import { UsageError } from '../errors.ts';

// A backup named by its id: the manifest's `id`, which `pg-backup list --json` shows as `id`
// and drill reports as `backupId` (`<database>-<YYYYMMDDTHHMMSSZ>-<6 hex>`, the file name of
// the manifest without `.manifest.json`). Keys hold `/`; ids never do.

/** The suffixes of a backup's objects, which an id given as a file name may carry. */
const OBJECT_SUFFIX = /\.(?:manifest\.json|(?:dump|sql)(?:\.zst|\.gz)?(?:\.age)?|dir\/?)$/;

/**
 * True when `ref` names a backup by id rather than by key or URI: no `/` and not `latest`.
 * (`<id>.manifest.json` or `<id>.dump.zst`, a file name without its folders, counts as an id.)
 */
export function isBackupIdRef(ref: string): boolean {
  return ref !== 'latest' && !ref.includes('/');
}

/**
 * The manifest key of the backup whose id is `ref`, among `entries` (a listing of the scope:
 * the `--from` location narrowed by `--service/--environment/--database`).
 * @throws UsageError (exit 2, one line) when no backup in the listing has that id, or several do
 * (the same id under several services, environments or databases: copies), naming their keys.
 */
export function manifestKeyOfId(locationUrl: string, ref: string, entries: readonly { id: string; manifestKey: string }[], scope: { service?: string; environment?: string; database?: string } = {}): string {
  const id = ref.replace(OBJECT_SUFFIX, '');
  const matches = entries.filter((e) => e.id === id);
  const where = [scope.service, scope.environment, scope.database].filter(Boolean).join('/');
  if (matches.length === 0) {
    throw new UsageError(`no complete backup with id ${JSON.stringify(id)} under ${locationUrl}${where ? ` for ${where}` : ''}: copy an id or key from "pg-backup list", or give --backup latest`);
  }
  if (matches.length > 1) {
    throw new UsageError(`backup id ${JSON.stringify(id)} is ambiguous: ${matches.length} backups under ${locationUrl} have it (${matches.slice(0, 3).map((m) => m.manifestKey).join(', ')}${matches.length > 3 ? ', …' : ''}); give the key instead, or narrow with --service/--environment/--database`);
  }
  return matches[0]!.manifestKey;
}
