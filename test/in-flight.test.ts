// The node's one entry per transaction in flight (in-flight.ts): it goes once no part holds
// anything, and a flight let go never removes the one made after it for the same digest.
import { describe, expect, it } from 'vitest';
import { Flights } from '../ts/pipeline/in-flight.js';

describe('Flights', () => {
  it('keeps a flight while any part holds something for it', () => {
    const flights = new Flights();
    const f = flights.open('d');
    expect(flights.open('d')).toBe(f);
    f.expected = true;
    f.listener = { onApplied: () => undefined };
    flights.release(f);
    expect(flights.get('d')).toBe(f);
    f.listener = null;
    flights.release(f);
    expect(flights.size).toBe(1);
    f.expected = false;
    flights.release(f);
    expect([flights.get('d'), flights.size]).toEqual([undefined, 0]);
  });

  it('a flight released twice does not take the next one for its digest with it', () => {
    const flights = new Flights();
    const old = flights.open('d');
    flights.release(old);
    const next = flights.open('d');
    expect(next).not.toBe(old);
    flights.release(old);
    expect(flights.get('d')).toBe(next);
  });
});
