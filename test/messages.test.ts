// The node's config message to pre-executors: transport, address and speculation, and older
// nodes' form.
import { describe, expect, it } from 'vitest';
import { parseNodeToPre, ProtocolError } from '../ts/pipeline/messages.js';

describe('config message', () => {
  it('carries the transport and the store address', () => {
    const m = { t: 'config', stateUpdate: 'pull', store: 'primary', transport: 'tcp', address: '10.0.0.1:7401', speculate: false };
    expect(parseNodeToPre(m)).toEqual(m);
  });

  it('reads a config without transport as shm and without speculate as on (older nodes)', () => {
    expect(parseNodeToPre({ t: 'config', stateUpdate: 'pull', store: 'primary' })).toEqual({
      t: 'config',
      stateUpdate: 'pull',
      store: 'primary',
      transport: 'shm',
      address: null,
      speculate: true,
    });
  });

  it('rejects an unknown transport or a malformed address', () => {
    const base = { t: 'config', stateUpdate: 'pull', store: 'primary' };
    expect(() => parseNodeToPre({ ...base, transport: 'udp', address: null })).toThrow(new ProtocolError('malformed config'));
    expect(() => parseNodeToPre({ ...base, transport: 'tcp', address: 7401 })).toThrow(new ProtocolError('malformed config'));
    expect(() => parseNodeToPre({ ...base, speculate: 'yes' })).toThrow(new ProtocolError('malformed config'));
  });
});
