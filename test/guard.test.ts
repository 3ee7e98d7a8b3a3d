// The determinism guard: commands that reach for a clock, randomness, timers or I/O fail loudly,
// naming the command, while the same functions keep working outside commands.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { defineApp, type Ctx } from '../ts/app/app.js';
import { execute } from '../ts/app/exec.js';
import { installDeterminismGuard, NondeterminismError } from '../ts/app/guard.js';
import { nativeFunctions } from '../ts/app/natives.js';
import { MemoryState } from '../ts/app/state.js';
import { decodeTx, encodeBody } from '../ts/app/tx.js';

const HERE = fileURLToPath(import.meta.url);

// A test app whose commands each break determinism one way.
const sloppy = defineApp({
  name: 'sloppy',
  commands: {
    clock: () => Date.now(),
    newDate: () => new Date().getTime(),
    fixedDate: () => new Date(86_400_000).getUTCDate(),
    dice: () => Math.random(),
    timer: () => {
      setTimeout(() => undefined, 1);
      return null;
    },
    file: () => readFileSync(HERE, 'utf8'),
    bytes: () => randomBytes(8),
    pure: (ctx: Ctx) => {
      ctx.write('o', 1);
      return 2 + 2;
    },
  },
  objects: () => ['o'],
});

const run = (command: keyof typeof sloppy.commands) =>
  execute(sloppy, decodeTx({ body: encodeBody(command, {}, ['o']), auth: [] }), new MemoryState(), nativeFunctions).table.outcome;

describe('determinism guard', () => {
  it('lets commands use anything before it is installed (their outcome is just not checked)', () => {
    expect(run('dice').status).toBe('ok');
  });

  it('throws a NondeterminismError naming the command and what it called, once installed', () => {
    installDeterminismGuard();
    const cases: [keyof typeof sloppy.commands, string][] = [
      ['clock', 'Date.now()'],
      ['newDate', 'new Date()'],
      ['dice', 'Math.random()'],
      ['timer', 'setTimeout()'],
      ['file', 'fs.readFileSync()'],
      ['bytes', 'crypto.randomBytes()'],
    ];
    for (const [command, what] of cases) {
      expect(() => run(command)).toThrow(
        new NondeterminismError(
          `command ${command} called ${what}, which differs between members; commands may only use ctx, their arguments and pure computation (docs/apps.md)`,
        ),
      );
    }
    expect(run('fixedDate')).toEqual({ status: 'ok', result: 2 });
    expect(run('pure')).toEqual({ status: 'ok', result: 4 });
    // Outside commands, the same functions work.
    expect(typeof Date.now()).toBe('number');
    expect(randomBytes(4)).toHaveLength(4);
    expect(readFileSync(HERE, 'utf8').length).toBeGreaterThan(0);
  });
});
