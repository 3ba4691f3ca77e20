// A bucket a second Ceph RGW user may only write to: PutObject and the multipart calls, every
// read, list and delete denied by the bucket policy the docs give (src/storage/policies.ts).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, PutBucketPolicyCommand } from '@aws-sdk/client-s3';
import { writerBucketPolicy } from '../../src/storage/policies.ts';
import { need, run, s3Client } from '../helpers.ts';

/** The writer's access key pair (created once per RGW; a second create reports "exists"). */
export const WRITER_CREDENTIALS = { accessKeyId: 'WRITERKEY', secretAccessKey: 'WRITERSECRET' } as const;

/**
 * Creates the RGW user `writer` (if missing) and a fresh bucket whose policy lets it write only.
 * @returns `to` (`s3://<bucket>/pg`) and the writer's credentials as environment variables.
 */
export async function writeOnlyBucket(): Promise<{ to: string; writer: Record<string, string> }> {
  const created = await run('radosgw-admin', ['-c', need('PGB_TEST_RGW_CONF'), 'user', 'create', '--uid=writer', '--display-name=writer', `--access-key=${WRITER_CREDENTIALS.accessKeyId}`, `--secret-key=${WRITER_CREDENTIALS.secretAccessKey}`]);
  assert.ok(created.code === 0 || /exists/.test(created.stderr), created.stderr);
  const bucket = `wo-${randomBytes(4).toString('hex')}`;
  const client = s3Client();
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  await client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(writerBucketPolicy(bucket, 'arn:aws:iam:::user/writer', ['arn:aws:iam:::user/backup'])) }));
  client.destroy();
  return { to: `s3://${bucket}/pg`, writer: { AWS_ACCESS_KEY_ID: WRITER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: WRITER_CREDENTIALS.secretAccessKey } };
}
