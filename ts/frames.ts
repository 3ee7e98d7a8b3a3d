// Length-prefixed frames: a u32 big-endian body length, then the body.

/** A peer broke the framing: the connection cannot continue. */
export class FrameError extends Error {}

/** Prefixes `body` with its length. */
export function encodeFrame(body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.set(body, 4);
  return frame;
}

/**
 * Splits a byte stream into frame bodies. It holds at most one frame plus the rest of the
 * chunk last pushed: a length header over `maxBytes` throws before any of that body is kept.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private bodyLength = -1;

  /** The largest body accepted; may be raised between frames (e.g. after a handshake). */
  constructor(public maxBytes: number) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete body, or undefined until more bytes arrive; throws FrameError. */
  next(): Buffer | undefined {
    if (this.bodyLength < 0) {
      if (this.buffered < 4) return undefined;
      const length = this.take(4).readUInt32BE(0);
      if (length > this.maxBytes) {
        this.chunks = [];
        this.buffered = 0;
        throw new FrameError(`frame of ${length} bytes exceeds the limit of ${this.maxBytes} bytes`);
      }
      this.bodyLength = length;
    }
    if (this.buffered < this.bodyLength) return undefined;
    const body = this.take(this.bodyLength);
    this.bodyLength = -1;
    return body;
  }

  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new Error('FrameDecoder: internal accounting error');
      const used = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}
