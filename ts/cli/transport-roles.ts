// Roles for measuring a transport across hosts (`remora bench transports` runs them in two
// network namespaces): an owner serving objects of the bench sizes, and a reader timing
// one-sided reads of them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { serveRole } from '../process.js';
import { readSecretFile } from '../secret.js';
import { RemoteStore, Store, type Latency } from '../store.js';
import { isTransport, type NetTransport } from '../transport.js';
import { intOption, required, UsageError } from './options.js';

export const TRANSPORT_BENCH_SIZES = [64, 1024, 4096] as const;
const objectId = (size: number) => `bench/${size}`;

function netTransport(raw: string | undefined): NetTransport {
  const t = raw ?? 'tcp';
  if (!isTransport(t) || t === 'shm') throw new UsageError(`--transport must be tcp or verbs, got '${t}'`);
  return t;
}

/** Owns a store holding one object per bench size and serves it on `--listen`. */
export function transportOwnerRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: { listen: { type: 'string' }, transport: { type: 'string' }, 'secret-file': { type: 'string' } },
  });
  const listen = required(values.listen, 'listen');
  const transport = netTransport(values.transport);
  const secret = readSecretFile(required(values['secret-file'], 'secret-file'));
  return serveRole(() => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-transport-owner-'));
    const store = Store.create({ dir, name: 'bench', secret });
    store.set(TRANSPORT_BENCH_SIZES.map((size) => ({ id: objectId(size), value: Buffer.alloc(size, size & 0xff), version: 1n })));
    const address = store.serve({ transport, listen });
    return {
      info: { address },
      stop: () => {
        store.close();
        rmSync(dir, { recursive: true, force: true });
        return null;
      },
    };
  });
}

/** Times validated one-sided reads of the owner's objects at `--address`; the result holds them. */
export function transportReaderRole(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      address: { type: 'string' },
      transport: { type: 'string' },
      'secret-file': { type: 'string' },
      iterations: { type: 'string' },
    },
  });
  const address = required(values.address, 'address');
  const transport = netTransport(values.transport);
  const secret = readSecretFile(required(values['secret-file'], 'secret-file'));
  const iterations = intOption(values.iterations, 'iterations', 20_000, 1, 10_000_000);
  return serveRole(async () => {
    const remote = await RemoteStore.connect({ transport, address, secret });
    const latencies: (Latency & { size: number })[] = [];
    for (const size of TRANSPORT_BENCH_SIZES) {
      const [found] = await remote.read([objectId(size)]);
      if (found?.status !== 'value' || found.value.length !== size) throw new Error(`object of ${size} B not readable at ${address}`);
      latencies.push({ size, ...(await remote.benchReads([objectId(size)], iterations)) });
    }
    return { stop: () => latencies };
  });
}
