// The records a replica's ring reader hands over, packed in one buffer by the native side
// (bindings/node/src/heron_ring.rs, `pack`): per record, little-endian, u64 ts, u32 payload
// length, u16 destinations, u16 zero, a u16 per destination, then the payload.

/** One record of a packed batch; `payload` is a view into the batch, not a copy. */
export interface RingBatchRecord {
  ts: bigint;
  dest: number[];
  payload: Uint8Array;
}

const HEADER = 16;

/** Splits a packed batch into its records; throws naming what is wrong if it is malformed. */
export function unpackRingBatch(packed: Uint8Array): RingBatchRecord[] {
  const b = Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
  const out: RingBatchRecord[] = [];
  let at = 0;
  while (at < b.length) {
    if (b.length - at < HEADER) throw new Error(`ring batch: a record header at byte ${at} is truncated (${b.length - at} of ${HEADER} bytes)`);
    const ts = b.readBigUInt64LE(at);
    const len = b.readUInt32LE(at + 8);
    const dests = b.readUInt16LE(at + 12);
    if (b.readUInt16LE(at + 14) !== 0) throw new Error(`ring batch: the record at byte ${at} has a nonzero reserved field`);
    const body = at + HEADER + 2 * dests;
    if (body + len > b.length)
      throw new Error(`ring batch: the record at byte ${at} (${dests} destinations, ${len} payload bytes) runs past the batch's ${b.length} bytes`);
    const dest = new Array<number>(dests);
    for (let i = 0; i < dests; i++) dest[i] = b.readUInt16LE(at + HEADER + 2 * i);
    out.push({ ts, dest, payload: b.subarray(body, body + len) });
    at = body + len;
  }
  return out;
}
