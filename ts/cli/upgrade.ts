// `remora upgrade`: asks a running node to activate another version of its app at the next
// position of its log (docs/apps.md, "Upgrades"). The operator holds the member credential.
import { isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ADMIN_OPTIONS, askNode } from './admin.js';
import { ConfigError } from './errors.js';
import { appOption } from './options.js';

/** A path is sent absolute: the node resolves specs from its own working directory. */
const absoluteSpec = (spec: string): string => (spec.startsWith('.') || isAbsolute(spec) ? resolve(spec) : spec);

export async function upgradeCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...ADMIN_OPTIONS, app: { type: 'string' } } });
  const spec = absoluteSpec(appOption(values.app));
  const answer = await askNode(values, { t: 'upgrade', spec });
  if (answer.t === 'failed') throw new ConfigError(`upgrade to ${spec} failed: ${answer.error}`);
  if (answer.t !== 'upgraded') throw new Error(`the node answered an upgrade with ${answer.t}`);
  process.stdout.write(`upgraded to ${answer.app} ${answer.digest.slice(0, 12)} (${spec}): active after ${answer.ts}\n`);
  return 0;
}
