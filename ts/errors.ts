// What JavaScript lets anyone throw is not always an Error; the engine rejects and rethrows
// only Errors, so a caller always gets a message and a stack.
import { inspect } from 'node:util';

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(typeof e === 'string' ? e : inspect(e));
}
