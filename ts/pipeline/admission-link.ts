// The node's side of an admission process (admission.ts): what it forwards is handed on as the
// node's own admission hands what it checked, and each transaction's answer goes back in the
// next `answers` message. The link holds the member credential, so no client can forward.
import { TxError } from '../app/tx.js';
import { flatFrame, readFlatMap } from '../flat-frames.js';
import type { Conn } from '../wire.js';
import { AnswerWriter, MESSAGE_BYTES, parseAdmissionMessage, type NodeToAdmission } from './admission-frames.js';
import { ProtocolError } from './messages.js';
import type { EmbeddedNode, Reply, SubmitDone } from './node.js';

export function attachAdmission(node: EmbeddedNode, conn: Conn, name: string, log: (m: string) => void): void {
  /** The app it admits for, once its hello was taken. */
  let app: string | null = null;
  const writer = new AnswerWriter();
  let flushing = false;
  let open = true;
  const counts = { forwarded: 0, waiting: 0 };
  conn.onClose((e) => {
    open = false;
    if (node.admissions.get(name) !== counts) return;
    node.admissions.delete(name);
    log(`admission ${name} left${e ? ` (${e.message})` : ''}; ${counts.waiting} of what it forwarded had no answer yet`);
  });
  const send = (m: NodeToAdmission) => {
    if (!open) return; // Gone: what it forwarded is still applied; nobody is left to answer.
    try {
      if (m.t === 'answers') conn.sendFrame(flatFrame(m));
      else conn.send(m);
    } catch (e) {
      // Answers that cannot be sent would leave its clients waiting: it hears why instead.
      log(`admission ${name} at ${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
      conn.fail(e instanceof Error ? e : new Error(String(e)));
    }
  };
  const flush = () => {
    flushing = false;
    const answers = writer.take();
    if (answers.length > 0) send({ t: 'answers', answers });
  };
  const answered = () => {
    if (flushing) return;
    flushing = true;
    queueMicrotask(flush);
  };
  const answer =
    (id: number): SubmitDone =>
    (e: Error | null, r: Reply | null) => {
      counts.waiting--;
      if (r !== null) writer.reply(id, r.ts, r.duplicate, r.outcome, r.decision);
      else writer.refused(id, e?.message ?? 'not sequenced', e instanceof TxError);
      // Large outcomes go in several messages, each under a frame's limit.
      if (writer.length >= MESSAGE_BYTES) flush();
      else answered();
    };
  const refuse = (reason: string) => {
    log(`admission ${name} at ${conn.peer}: ${reason}; closing`);
    send({ t: 'refused', reason });
    conn.close();
  };
  conn.readWith(readFlatMap);
  conn.onMessage((raw) => {
    try {
      const m = parseAdmissionMessage(raw);
      if (m.t === 'hello') {
        if (app !== null) throw new ProtocolError('hello sent twice');
        const active = node.versions.active;
        if (m.digest !== active.digest) {
          refuse(
            `it admits for app ${m.app} ${m.digest.slice(0, 12)}, but the node runs ${active.app.name} ${active.digest.slice(0, 12)} (${active.spec}): start it with the same --app`,
          );
          return;
        }
        app = m.digest;
        if (open) node.admissions.set(name, counts);
        send({ t: 'welcome' });
        log(`admission ${name} joined from ${conn.peer}`);
        return;
      }
      if (app === null) throw new ProtocolError("an admission process's first message must be hello");
      const active = node.versions.active;
      if (app !== active.digest) {
        // Checked against other code than the node now runs: not taken, and the process is told.
        for (let i = 0; i < m.txs.length; i++) writer.refused((m.first + i) >>> 0, `the node upgraded to app ${active.digest.slice(0, 12)}; resubmit`, false);
        flush();
        refuse(`the node now runs app ${active.app.name} ${active.digest.slice(0, 12)} (${active.spec}): restart this admission process with that --app`);
        return;
      }
      counts.forwarded += m.txs.length;
      counts.waiting += m.txs.length;
      node.submitForwarded(
        m.txs,
        m.txs.map((_, i) => answer((m.first + i) >>> 0)),
      );
    } catch (e) {
      log(`admission ${name} at ${conn.peer}: ${e instanceof Error ? e.message : String(e)}; closing the connection`);
      conn.close();
    }
  });
}
