// Which transport carries one-sided reads of a store, chosen per cluster, and the `host:port`
// addresses the network transports (and the node's TCP endpoint) use.

export const TRANSPORTS = ['shm', 'tcp', 'verbs'] as const;
/** `shm`: one host, through the cluster directory; `tcp`: anywhere with IP; `verbs`: RDMA. */
export type Transport = (typeof TRANSPORTS)[number];
/** The transports that serve a store on a network address. */
export type NetTransport = Exclude<Transport, 'shm'>;

export const isTransport = (v: unknown): v is Transport => TRANSPORTS.some((t) => t === v);

export interface HostPort {
  host: string;
  port: number;
}

/** Parses `host:port` or `[v6]:port`; null if `raw` is not of that form. */
export function parseHostPort(raw: string): HostPort | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s/:[\]]+)):(\d{1,5})$/.exec(raw);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (host === undefined || !Number.isInteger(port) || port > 65_535) return null;
  return { host, port };
}

/** `host:port`, bracketing IPv6 hosts. */
export const formatHostPort = ({ host, port }: HostPort): string => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** Whether `host` means "every interface": not an address a peer can dial. */
export const isWildcard = (host: string): boolean => host === '0.0.0.0' || host === '::' || host === '[::]';
