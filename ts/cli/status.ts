// `remora status`: what a running node is doing (docs/metrics.md, "Readiness, status and a dashboard"):
// readiness, applied and ordered timestamps, lag, adoption, the pool.
import { parseArgs } from 'node:util';
import { formatStatus, parseNodeStatus } from '../pipeline/status.js';
import { ADMIN_OPTIONS, askNode } from './admin.js';

const jsonable = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? v.toString() : v);

export async function statusCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...ADMIN_OPTIONS, json: { type: 'boolean' } }, allowPositionals: true });
  // `remora status DIR` reads as the operator would type it.
  const dir = values.dir ?? positionals[0];
  const answer = await askNode({ ...values, dir }, { t: 'status' });
  if (answer.t === 'failed') throw new Error(`status: ${answer.error}`);
  if (answer.t !== 'status') throw new Error(`the node answered a status request with ${answer.t}`);
  const status = parseNodeStatus(answer.status);
  process.stdout.write(values.json ? `${JSON.stringify(status, jsonable, 2)}\n` : formatStatus(status));
  // Non-zero when not ready, so scripts and probes can use the exit code alone.
  return status.ready ? 0 : 3;
}
