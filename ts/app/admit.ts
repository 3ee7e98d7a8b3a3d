// Admission's checks that need the application: the command exists, and the declared objects
// are exactly what the application says the command touches. Both the pipeline's node and
// Heron's sequencer side admit through here, so a crafted body cannot route a transaction
// away from the objects (or partitions) its command will write.
import type { App } from './app.js';
import { decodeTx, decodeTxBatch, TxError, type DecodedTx } from './tx.js';

/** Decodes `raw` and checks it against `app`; bad input throws a `TxError` a client can act on. */
export function admitTx(app: App, raw: unknown): DecodedTx {
  return checkAgainst(app, decodeTx(raw));
}

/**
 * `admitTx` for a batch of `tx.v1` transactions read together: each is answered apart, with
 * its decoding or the error `admitTx` would have thrown for it.
 */
export function admitTxs(app: App, raws: readonly Uint8Array[]): (DecodedTx | Error)[] {
  const out = decodeTxBatch(raws);
  for (let i = 0; i < out.length; i++) {
    const tx = out[i];
    if (tx === undefined || tx instanceof Error) continue;
    try {
      checkAgainst(app, tx);
    } catch (e) {
      out[i] = e instanceof Error ? e : new Error(String(e));
    }
  }
  return out;
}

/**
 * `admitTxs`, then `take` for each transaction admitted, with its `done`; each refusal goes to
 * its `done` on a later microtask (never before this returns), as a submitter expects.
 */
export function admitEach<D extends (error: Error, reply: null) => void>(
  app: App,
  raws: readonly Uint8Array[],
  done: readonly D[],
  take: (tx: DecodedTx, done: D) => void,
): void {
  const admitted = admitTxs(app, raws);
  for (let i = 0; i < admitted.length; i++) {
    const tx = admitted[i];
    const d = done[i];
    if (tx === undefined || d === undefined) continue;
    if (tx instanceof Error) queueMicrotask(() => d(tx, null));
    else take(tx, d);
  }
}

function checkAgainst(app: App, tx: DecodedTx): DecodedTx {
  // The node's own administrative transactions (versions.ts) are never a client's to submit.
  if (tx.command.startsWith('remora.')) throw new TxError(`command ${JSON.stringify(tx.command)}: names starting with "remora." are reserved for the node`);
  if (!Object.hasOwn(app.commands, tx.command)) {
    throw new TxError(`unknown command ${JSON.stringify(tx.command)} for app ${app.name}`);
  }
  let expected: string[];
  try {
    expected = app.objects(tx.command, tx.args);
  } catch (e) {
    throw new TxError(`app ${app.name} cannot tell the objects of ${tx.command} from these arguments: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!sameIds(expected, tx.objects)) {
    throw new TxError(
      `declared objects ${JSON.stringify(tx.objects.slice(0, 8))} differ from what ${app.name}.${tx.command} touches ` +
        `(${JSON.stringify(expected.slice(0, 8))}); build the body with the app's objects()`,
    );
  }
  return tx;
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
