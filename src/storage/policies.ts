/**
 * Least-privilege policies for the three roles around a backup bucket, in AWS IAM policy
 * grammar (S3 and Ceph RGW bucket policies accept the same): the writer (dump: PutObject and
 * the multipart calls, nothing else), the reader (list, verify, drill, restore) and, for stores
 * where retention is not left to lifecycle rules, the pruner (List, Get, Delete; no Put). Source: AWS S3 User Guide,
 * "Policy actions for Amazon S3"; multipart uploads need s3:PutObject for every part and
 * s3:AbortMultipartUpload / s3:ListMultipartUploadParts to clean up.
 */

/** The actions the dump path uses: no List, Get, Head or Delete. */
export const WRITER_ACTIONS = ['s3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'];
/** What a writer also needs with `--object-lock`: the retention is re-stated on each multipart object after it completes (Ceph RGW ignores it on CreateMultipartUpload). */
export const WRITER_LOCK_ACTIONS = ['s3:PutObjectRetention'];
/** The actions list, verify, drill and restore use. */
export const READER_ACTIONS = ['s3:ListBucket', 's3:GetObject'];

/**
 * A bucket policy that lets `principal` (e.g. `arn:aws:iam::123456789012:user/backup-writer`)
 * write backups into `bucket` and explicitly denies it every read, list and delete — needed
 * because the writer owns the objects it writes — and lets each of `readers` list and read
 * every object, whoever wrote it (verify, drill, restore; drills also write their logs, so a
 * drill role needs s3:PutObject on `drills/*` too: give `drillLogPrefix`, the backup prefix).
 * `objectLock` adds s3:PutObjectRetention for the writer.
 */
export function writerBucketPolicy(bucket: string, principal: string, readers: string[] = [], options: { objectLock?: boolean; drillLogPrefix?: string } = {}) {
  return {
    Version: '2012-10-17',
    Statement: [
      ...(readers.length
        ? [{ Sid: 'BackupReaders', Effect: 'Allow', Principal: { AWS: readers }, Action: READER_ACTIONS, Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`] }]
        : []),
      // Drills write their log and report under `<prefix>/drills/`, and nowhere else.
      ...(readers.length && options.drillLogPrefix !== undefined
        ? [{ Sid: 'DrillLogs', Effect: 'Allow', Principal: { AWS: readers }, Action: ['s3:PutObject'], Resource: [`arn:aws:s3:::${bucket}/${options.drillLogPrefix ? `${options.drillLogPrefix}/` : ''}drills/*`] }]
        : []),
      { Sid: 'BackupWriterPuts', Effect: 'Allow', Principal: { AWS: [principal] }, Action: options.objectLock ? [...WRITER_ACTIONS, ...WRITER_LOCK_ACTIONS] : WRITER_ACTIONS, Resource: [`arn:aws:s3:::${bucket}/*`] },
      {
        Sid: 'BackupWriterNoReadsNoDeletes',
        Effect: 'Deny',
        Principal: { AWS: [principal] },
        Action: ['s3:GetObject', 's3:GetObjectVersion', 's3:ListBucket', 's3:ListBucketVersions', 's3:DeleteObject', 's3:DeleteObjectVersion', 's3:BypassGovernanceRetention'],
        Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`],
      },
    ],
  };
}

/**
 * The actions a prune uses: list the backups, read drill reports and verify records, delete
 * current object versions. No s3:PutObject (a pruner never writes) and no
 * s3:DeleteObjectVersion: on a versioned bucket a delete only adds a delete marker, and the
 * superseded versions go by the lifecycle rule's NoncurrentVersionExpiration, out of the
 * pruner's reach.
 */
export const PRUNER_ACTIONS = ['s3:ListBucket', 's3:GetObject', 's3:DeleteObject'];

/**
 * The bucket policy statements for a pruner `principal` (e.g.
 * `arn:aws:iam::123456789012:user/backup-pruner`): {@link PRUNER_ACTIONS} on `bucket`, and an
 * explicit Deny of every write, version delete and policy/lifecycle change. Add them to the
 * writer's policy (see {@link writerBucketPolicy}), whose Deny keeps the writer from deleting.
 */
export function prunerStatements(bucket: string, principal: string) {
  return [
    { Sid: 'BackupPruner', Effect: 'Allow', Principal: { AWS: [principal] }, Action: PRUNER_ACTIONS, Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`] },
    {
      Sid: 'BackupPrunerNoWrites',
      Effect: 'Deny',
      Principal: { AWS: [principal] },
      Action: ['s3:PutObject', 's3:DeleteObjectVersion', 's3:PutBucketPolicy', 's3:PutLifecycleConfiguration', 's3:PutBucketVersioning'],
      Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`],
    },
  ];
}

/** What a break-glass recovery admin uses on a versioned bucket: see {@link recoveryStatements}. */
export const RECOVERY_ACTIONS = ['s3:ListBucket', 's3:ListBucketVersions', 's3:GetObject', 's3:GetObjectVersion', 's3:DeleteObjectVersion'];

/**
 * The bucket policy statement for a break-glass recovery `principal` on a versioned bucket:
 * list and read every version, and delete versions — which is how a delete marker left by a
 * prune or by stolen credentials is removed, bringing the backup back (S3 User Guide,
 * "Restoring previous versions"). Nobody else should hold s3:DeleteObjectVersion; keep this
 * principal behind MFA or out of every automated job. Needed on Ceph RGW (and on AWS without
 * "bucket owner enforced") because the writer, not the bucket owner, owns what it writes.
 */
export function recoveryStatements(bucket: string, principal: string) {
  return [{ Sid: 'BackupRecovery', Effect: 'Allow', Principal: { AWS: [principal] }, Action: RECOVERY_ACTIONS, Resource: [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`] }];
}

/**
 * The IAM identity policy of a pruner user or role limited to `bucket`/`prefix`: list the
 * prefix, read and delete under it (AWS IAM grammar; `s3:prefix` condition per the AWS S3 User
 * Guide, "Condition key examples").
 */
export function prunerIamPolicy(bucket: string, prefix = '') {
  const under = prefix ? `${prefix.replace(/\/$/, '')}/` : '';
  return {
    Version: '2012-10-17',
    Statement: [
      { Sid: 'ListBackups', Effect: 'Allow', Action: ['s3:ListBucket'], Resource: [`arn:aws:s3:::${bucket}`], ...(under ? { Condition: { StringLike: { 's3:prefix': [`${under}*`] } } } : {}) },
      { Sid: 'ReadAndDeleteBackups', Effect: 'Allow', Action: ['s3:GetObject', 's3:DeleteObject'], Resource: [`arn:aws:s3:::${bucket}/${under}*`] },
    ],
  };
}
