// State transfer's data (Heron, Algorithm 3): the update log a replica keeps (which object it
// last wrote at which timestamp) and the shipment a server lands at a lagger (every object
// updated after the lagger's last applied timestamp, plus the server's prefix: its last
// timestamp, applied count and digest, which the lagger adopts so digests keep agreeing).

/** One object as shipped: its newest version, or its deletion. */
export interface ShippedObject {
  id: string;
  version: bigint;
  value: Uint8Array | null;
}

export interface Shipment {
  /** The server's last applied timestamp: the lagger resumes after it. */
  upTo: bigint;
  applied: number;
  digest: string;
  objects: ShippedObject[];
}

/**
 * Objects this replica updated, each at its last write's timestamp, oldest first (a Map keeps
 * insertion order; a rewrite moves the object to the end). Bounded by the partition's object
 * count, and truncated past the point every replica of the partition applied.
 */
export class UpdateLog {
  private readonly last = new Map<string, bigint>();
  /** Nothing at or before this timestamp is kept any more. */
  private truncatedAt = 0n;

  record(id: string, ts: bigint): void {
    this.last.delete(id);
    this.last.set(id, ts);
  }

  get size(): number {
    return this.last.size;
  }

  get horizon(): bigint {
    return this.truncatedAt;
  }

  /** Ids updated after `since`, oldest first; null if the log no longer reaches back that far. */
  since(since: bigint): [string, bigint][] | null {
    if (since < this.truncatedAt) return null;
    const out: [string, bigint][] = [];
    for (const [id, ts] of this.last) if (ts > since) out.push([id, ts]);
    return out;
  }

  /** Forgets objects last written at or before `point` (every replica applied past it). */
  truncate(point: bigint): number {
    if (point <= this.truncatedAt) return 0;
    let dropped = 0;
    for (const [id, ts] of this.last) {
      if (ts > point) break;
      this.last.delete(id);
      dropped++;
    }
    this.truncatedAt = point;
    return dropped;
  }
}

const DIGEST_BYTES = 32;

export function encodeShipment(s: Shipment): Buffer {
  const ids = s.objects.map((o) => Buffer.from(o.id, 'utf8'));
  let bytes = 8 + 4 + DIGEST_BYTES + 4;
  s.objects.forEach((o, i) => {
    bytes += 2 + (ids[i]?.length ?? 0) + 8 + 4 + (o.value?.length ?? 0);
  });
  const out = Buffer.alloc(bytes);
  let at = out.writeBigUInt64LE(s.upTo, 0);
  at = out.writeUInt32LE(s.applied, at);
  at += Buffer.from(s.digest, 'hex').copy(out, at);
  at = out.writeUInt32LE(s.objects.length, at);
  s.objects.forEach((o, i) => {
    const id = ids[i] ?? Buffer.alloc(0);
    at = out.writeUInt16LE(id.length, at);
    at += id.copy(out, at);
    at = out.writeBigUInt64LE(o.version, at);
    // -1 marks a deletion (an empty value is a value).
    at = out.writeInt32LE(o.value === null ? -1 : o.value.length, at);
    if (o.value !== null) at += Buffer.from(o.value.buffer, o.value.byteOffset, o.value.length).copy(out, at);
  });
  return out;
}

/** Decodes a shipment; throws on a malformed one (it was checksummed, so that is a bug). */
export function decodeShipment(b: Buffer): Shipment {
  const need = (at: number, n: number) => {
    if (at + n > b.length) throw new Error(`malformed shipment: ${b.length} bytes, needs ${at + n}`);
  };
  need(0, 8 + 4 + DIGEST_BYTES + 4);
  const upTo = b.readBigUInt64LE(0);
  const applied = b.readUInt32LE(8);
  const digest = b.subarray(12, 12 + DIGEST_BYTES).toString('hex');
  const count = b.readUInt32LE(12 + DIGEST_BYTES);
  let at = 16 + DIGEST_BYTES;
  const objects: ShippedObject[] = [];
  for (let i = 0; i < count; i++) {
    need(at, 2);
    const idLen = b.readUInt16LE(at);
    need(at + 2, idLen + 12);
    const id = b.subarray(at + 2, at + 2 + idLen).toString('utf8');
    at += 2 + idLen;
    const version = b.readBigUInt64LE(at);
    const len = b.readInt32LE(at + 8);
    at += 12;
    if (len < 0) objects.push({ id, version, value: null });
    else {
      need(at, len);
      objects.push({ id, version, value: Uint8Array.from(b.subarray(at, at + len)) });
      at += len;
    }
  }
  return { upTo, applied, digest, objects };
}
