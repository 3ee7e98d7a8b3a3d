// The determinism guard (docs/apps.md): while a command runs under it, the sources of
// nondeterminism a user is likely to reach for by accident throw an error naming the command.
//
// Every member executes the same command on the same inputs and must get the same result; a
// clock, a random number, a timer or I/O differs between members and makes replicas diverge in
// ways no test of one process sees. The guard is installed once per process (test helpers and
// `remora check` do it): it wraps those functions so that they throw only while a command is
// running, so the cost outside commands is one comparison per call.
import crypto from 'node:crypto';
import childProcess from 'node:child_process';
import dgram from 'node:dgram';
import dns from 'node:dns';
import fs from 'node:fs';
import fsPromises from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';

/** A command reached for something that differs between members. Never an outcome: a bug. */
export class NondeterminismError extends Error {
  override name = 'NondeterminismError';
}

let running: string | null = null;
let installed = false;

function refuse(what: string): never {
  throw new NondeterminismError(
    `command ${running ?? '?'} called ${what}, which differs between members; ` +
      'commands may only use ctx, their arguments and pure computation (docs/apps.md)',
  );
}

type Fn = (...args: unknown[]) => unknown;

/** Replaces `obj[key]` by a wrapper that refuses while a command runs. */
function wrap(obj: object, key: string, what: string): void {
  const original = (obj as Record<string, unknown>)[key];
  if (typeof original !== 'function') return;
  const fn = original as Fn;
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    if (running !== null) refuse(what);
    return new.target ? Reflect.construct(fn, args, new.target) : fn.apply(this, args);
  };
  Object.defineProperties(wrapped, Object.getOwnPropertyDescriptors(fn));
  try {
    (obj as Record<string, unknown>)[key] = wrapped;
  } catch {
    // A frozen or accessor-only property: left as it is.
  }
}

function wrapAll(obj: object, label: string): void {
  for (const key of Object.keys(obj)) wrap(obj, key, `${label}.${key}()`);
}

/** The clock, with `new Date(x)` of an explicit time still allowed (it is deterministic). */
function guardDate(): void {
  const RealDate = Date;
  class GuardedDate extends RealDate {
    constructor(...args: ConstructorParameters<DateConstructor> | []) {
      if (running !== null && args.length === 0) refuse('new Date()');
      super(...(args as []));
    }
    static override now(): number {
      if (running !== null) refuse('Date.now()');
      return RealDate.now();
    }
  }
  globalThis.Date = GuardedDate as DateConstructor;
}

/** Installs the guard in this process (idempotent). */
export function installDeterminismGuard(): void {
  if (installed) return;
  installed = true;
  guardDate();
  wrap(Math, 'random', 'Math.random()');
  for (const t of ['setTimeout', 'setInterval', 'setImmediate', 'queueMicrotask', 'fetch']) wrap(globalThis, t, `${t}()`);
  wrap(performance, 'now', 'performance.now()');
  wrap(process, 'hrtime', 'process.hrtime()');
  wrap(process.hrtime, 'bigint', 'process.hrtime.bigint()');
  for (const k of ['randomBytes', 'randomFillSync', 'randomFill', 'randomInt', 'randomUUID', 'getRandomValues', 'generateKeyPairSync', 'generateKeyPair']) {
    wrap(crypto, k, `crypto.${k}()`);
  }
  if (globalThis.crypto) {
    wrap(globalThis.crypto, 'getRandomValues', 'crypto.getRandomValues()');
    wrap(globalThis.crypto, 'randomUUID', 'crypto.randomUUID()');
  }
  wrapAll(fs, 'fs');
  wrapAll(fsPromises, 'fs.promises');
  wrapAll(net, 'net');
  wrapAll(http, 'http');
  wrapAll(https, 'https');
  wrapAll(dgram, 'dgram');
  wrapAll(dns, 'dns');
  wrapAll(childProcess, 'child_process');
  // Named ESM imports of built-ins (`import { readFileSync } from 'node:fs'`) see the wrappers too.
  syncBuiltinESMExports();
}

export function determinismGuardInstalled(): boolean {
  return installed;
}

/** Runs `body` as command `command`: under the guard if it is installed. */
export function runCommand<T>(command: string, body: () => T): T {
  if (!installed) return body();
  const outer = running;
  running = command;
  try {
    return body();
  } finally {
    running = outer;
  }
}
