// The built-in apps' first check of a command's arguments: they come from untrusted clients,
// so a command that expects a map aborts with a reason when given anything else.
import type { Ctx } from '../app/app.js';

export type Args = Record<string, unknown>;

export const asArgs = (ctx: Ctx, args: unknown): Args =>
  typeof args === 'object' && args !== null && !Array.isArray(args) && !(args instanceof Uint8Array) ? (args as Args) : ctx.abort('arguments must be a map');
