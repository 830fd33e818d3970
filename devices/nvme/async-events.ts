/**
 * Asynchronous events: Async Event Requests (admin opcode 0Ch) wait here,
 * without a completion, until an event comes; each event completes the
 * oldest one with the event in Dword 0. Events that find no request wait
 * for one. A controller reset forgets both (the requests' SQ is gone).
 */
import { MAX_AERS, Status } from './constants.js';
import type { AsyncEventRequests } from './context.js';
import type { CqWriter } from './cq-writer.js';
import type { SubmissionQueue } from './queues.js';

/** An Async Event Request waiting for an event. */
interface PendingAer {
  sq: SubmissionQueue;
  cid: number;
}

export class AsyncEvents implements AsyncEventRequests {
  private aers: PendingAer[] = [];
  /** Events (Dword 0 of an AER completion) waiting for an AER. */
  private events: number[] = [];

  constructor(private readonly completions: CqWriter) {}

  /** Queue an Async Event Request; false at the limit (Identify AERL + 1). */
  request(sq: SubmissionQueue, cid: number): boolean {
    if (this.aers.length >= MAX_AERS) return false;
    this.aers.push({ sq, cid });
    this.deliver();
    return true;
  }

  /** Report an asynchronous event (Dword 0 of the AER completion). */
  raise(dword0: number): void {
    this.events.push(dword0);
    this.deliver();
  }

  /** Controller reset: no request and no event survives it. */
  clear(): void {
    this.aers = [];
    this.events = [];
  }

  private deliver(): void {
    while (this.aers.length > 0 && this.events.length > 0) {
      const aer = this.aers.shift()!;
      this.completions.post(aer.sq, aer.cid, Status.SUCCESS, this.events.shift()!);
    }
  }
}
