/**
 * Asynchronous events: Async Event Requests (admin opcode 0Ch) wait here,
 * without a completion, until an event comes; each event completes the
 * oldest one with the event in Dword 0. Events that find no request wait
 * for one (at most MAX_QUEUED_EVENTS, as QEMU's aer_max_queued). A
 * controller reset forgets both (the requests' SQ is gone).
 *
 * Error events a guest can cause (Invalid Doorbell, spec 1.4 section 4.1)
 * are bounded the way QEMU bounds them: raised only while a request is
 * outstanding, and masked once posted until the host reads the Error
 * Information log page with RAE clear. A guest hammering bad doorbells
 * thus gets one event, not one per write.
 */
import { LogPage, MAX_AERS, Status } from './constants.js';
import type { AsyncEventRequests } from './context.js';
import type { CqWriter } from './cq-writer.js';
import type { SubmissionQueue } from './queues.js';

/** Events kept for a request at most (QEMU's default aer_max_queued). */
export const MAX_QUEUED_EVENTS = 64;

/** What a saved state holds of the events (state.ts). */
export interface AsyncEventsState {
  /** CIDs of the outstanding Async Event Requests (admin SQ), oldest first. */
  requests: number[];
  /** Events waiting for a request (Dword 0 of its completion), oldest first. */
  events: number[];
  /** Error events are masked until the Error log page is read. */
  errorMasked: boolean;
}

/** Asynchronous Event Type "Error status" and its information values (spec 1.4 figure 146). */
const EVENT_TYPE_ERROR = 0;
export const ErrorEvent = {
  /** A doorbell of a queue that does not exist. */
  INVALID_DOORBELL_REGISTER: 0x00,
  /** A tail or head beyond its queue. */
  INVALID_DOORBELL_VALUE: 0x01,
} as const;

/** An Async Event Request waiting for an event. */
interface PendingAer {
  sq: SubmissionQueue;
  cid: number;
}

export class AsyncEvents implements AsyncEventRequests {
  private aers: PendingAer[] = [];
  /** Events (Dword 0 of an AER completion) waiting for an AER. */
  private events: number[] = [];
  /** An Error event was posted and the host has not read the Error log page (RAE 0) since. */
  private errorMasked = false;

  constructor(private readonly completions: CqWriter) {}

  /** Queue an Async Event Request; false at the limit (Identify AERL + 1). */
  request(sq: SubmissionQueue, cid: number): boolean {
    if (this.aers.length >= MAX_AERS) return false;
    this.aers.push({ sq, cid });
    this.deliver();
    return true;
  }

  /** Report an asynchronous event (Dword 0 of the AER completion); dropped when MAX_QUEUED_EVENTS wait already. */
  raise(dword0: number): void {
    if (this.events.length >= MAX_QUEUED_EVENTS) return;
    this.events.push(dword0);
    this.deliver();
  }

  /**
   * A guest error the spec reports as an Error event (`info`: ErrorEvent):
   * posted only when a request is outstanding and Error events are not
   * masked; then masked until the Error log page is read with RAE clear.
   */
  guestError(info: number): void {
    if (this.errorMasked || this.aers.length === 0) return;
    this.errorMasked = true;
    this.raise((EVENT_TYPE_ERROR | (info << 8) | (LogPage.ERROR << 16)) >>> 0);
  }

  /** Get Log Page of `lid` with Retain Asynchronous Event clear: the events it reports may come again. */
  logPageRead(lid: number): void {
    if (lid === LogPage.ERROR) this.errorMasked = false;
  }

  /** The requests (all on the admin SQ), events and mask, for a saved state. */
  save(): AsyncEventsState {
    return { requests: this.aers.map((a) => a.cid), events: [...this.events], errorMasked: this.errorMasked };
  }

  /** A loaded state (checked by state.ts): requests on `adminSq`. */
  restore(adminSq: SubmissionQueue | undefined, s: AsyncEventsState): void {
    this.aers = adminSq ? s.requests.map((cid) => ({ sq: adminSq, cid })) : [];
    this.events = [...s.events];
    this.errorMasked = s.errorMasked;
  }

  /** Controller reset: no request and no event survives it. */
  clear(): void {
    this.aers = [];
    this.events = [];
    this.errorMasked = false;
  }

  private deliver(): void {
    while (this.aers.length > 0 && this.events.length > 0) {
      const aer = this.aers.shift()!;
      this.completions.post(aer.sq, aer.cid, Status.SUCCESS, this.events.shift()!, false);
    }
  }
}
