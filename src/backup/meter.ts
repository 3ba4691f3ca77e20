import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Hash algorithms a {@link Meter} can compute. */
export type MeterHash = 'sha256' | 'md5';

/**
 * A pass-through stream that counts the bytes flowing through it and, when asked, hashes them
 * (several algorithms in one pass). Used between compression and upload (stored size + SHA-256
 * of the stored object, MD5 for an `.md5` sidecar) and on the way back in verify and drill.
 */
export class Meter extends Transform {
  /** Bytes that passed so far. */
  bytes = 0;
  readonly #hashes = new Map<MeterHash, Hash>();
  readonly #hex = new Map<MeterHash, string>();

  constructor(...algorithms: MeterHash[]) {
    super();
    for (const a of algorithms) this.#hashes.set(a, createHash(a));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    for (const h of this.#hashes.values()) h.update(chunk);
    callback(null, chunk);
  }

  /** The hex digest of everything that passed (default SHA-256); call after the stream ended. */
  digest(algorithm: MeterHash = 'sha256'): string {
    let hex = this.#hex.get(algorithm);
    if (!hex) {
      const hash = this.#hashes.get(algorithm);
      if (!hash) throw new Error(`this meter does not compute ${algorithm}`);
      hex = hash.digest('hex');
      this.#hex.set(algorithm, hex);
    }
    return hex;
  }
}
