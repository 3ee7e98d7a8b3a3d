// Length-prefixed frames: a u32 big-endian body length, then the body.
import { Buffer } from 'node:buffer';
import { u32be } from './bytes.js';

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
  /** Bytes of `chunks[0]` already taken: kept as an offset, not cut off with a view per frame. */
  private head = 0;
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
      const length = this.readLength();
      if (length > this.maxBytes) {
        this.chunks = [];
        this.head = 0;
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

  /** Takes the 4-byte header (`buffered` ≥ 4). */
  private readLength(): number {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= 4) {
      const length = u32be(first, this.head);
      this.skip(first, 4);
      return length;
    }
    return this.take(4).readUInt32BE(0);
  }

  /** Moves past `n` bytes of `first` (= `chunks[0]`), dropping it once used up. */
  private skip(first: Buffer, n: number): void {
    this.buffered -= n;
    this.head += n;
    if (this.head === first.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) {
      const body = first.subarray(this.head, this.head + n);
      this.skip(first, n);
      return body;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new Error('FrameDecoder: internal accounting error');
      const used = Math.min(chunk.length - this.head, n - filled);
      chunk.copy(out, filled, this.head, this.head + used);
      filled += used;
      this.skip(chunk, used);
    }
    return out;
  }
}
