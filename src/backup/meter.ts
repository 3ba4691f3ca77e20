import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * A pass-through stream that counts the bytes flowing through it and, when asked, hashes them.
 * Used between compression and upload (stored size + SHA-256 of the stored object) and on the
 * way back in verify and drill.
 */
export class Meter extends Transform {
  /** Bytes that passed so far. */
  bytes = 0;
  readonly #hash: Hash | undefined;
  #hex: string | undefined;

  constructor(algorithm?: 'sha256' | 'md5') {
    super();
    this.#hash = algorithm ? createHash(algorithm) : undefined;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.#hash?.update(chunk);
    callback(null, chunk);
  }

  /** The hex digest of everything that passed; call after the stream ended. */
  digest(): string {
    if (!this.#hash) throw new Error('this meter does not hash');
    this.#hex ??= this.#hash.digest('hex');
    return this.#hex;
  }
}
