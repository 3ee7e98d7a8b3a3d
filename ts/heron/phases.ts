// Heron's coordination phases as announced in a replica's entry (Algorithm 2): phase 2 when a
// multi-partition transaction is delivered, phase 4 once it is executed (true of every earlier
// timestamp too, so a peer whose entry shows phase 4 of a timestamp holds that prefix).
export const PHASE_DELIVERED = 2;
export const PHASE_EXECUTED = 4;
