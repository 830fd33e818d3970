/**
 * Admin commands: Identify, Get/Set Features, Get Log Page, Create/Delete
 * I/O queues, Abort, Async Event Request, Doorbell Buffer Config, Keep Alive.
 * Anything else is Invalid Opcode; bad fields are Invalid Field in Command.
 */
import { AdminOp, Cns, FeatureId, LogPage, MAX_QUEUE_ENTRIES, PAGE_SIZE, Status } from './constants.js';
import type { AdminContext } from './context.js';
import { NvmeStatusError } from './host.js';
import {
  activeNamespaceList,
  firmwareSlotLog,
  identifyController,
  identifyNamespace,
  identifyNamespaceIndependent,
  namespaceDescriptors,
  smartLog,
} from './identify.js';
import { copyToGuest, prpSegments } from './prp.js';
import type { SubmissionEntry, CommandResult, SubmissionQueue } from './queues.js';

const OK: CommandResult = { status: Status.SUCCESS };
const ALL_NAMESPACES = 0xffffffff;

function fail(status: number, why: string): never {
  throw new NvmeStatusError(status, why);
}

/** Copy `data` (zero-padded or cut to `length`) to the command's PRPs. */
async function sendData(
  ctx: AdminContext,
  cmd: SubmissionEntry,
  data: Uint8Array,
  length = data.length,
): Promise<void> {
  const dma = ctx.dma; // this controller life's (a reset revokes it)
  let out = data;
  if (length !== data.length) {
    out = new Uint8Array(length);
    out.set(data.subarray(0, length));
  }
  const segments = await prpSegments(dma, cmd.prp1, cmd.prp2, length);
  await copyToGuest(dma, segments, out);
}

/** Run one admin command; undefined: completed later (Async Event Request). */
export async function executeAdmin(
  ctx: AdminContext,
  sq: SubmissionQueue,
  cmd: SubmissionEntry,
): Promise<CommandResult | undefined> {
  if (cmd.fuse !== 0) fail(Status.INVALID_FIELD, 'fused admin commands are not supported');
  if (cmd.psdt !== 0) fail(Status.INVALID_FIELD, 'SGLs are not supported'); // QEMU: on every admin command
  switch (cmd.opcode) {
    case AdminOp.IDENTIFY:
      return identify(ctx, cmd);
    case AdminOp.GET_FEATURES:
      return getFeatures(ctx, cmd);
    case AdminOp.SET_FEATURES:
      return setFeatures(ctx, cmd);
    case AdminOp.GET_LOG_PAGE:
      return getLogPage(ctx, cmd);
    case AdminOp.CREATE_CQ:
      return createCq(ctx, cmd);
    case AdminOp.CREATE_SQ:
      return createSq(ctx, cmd);
    case AdminOp.DELETE_SQ:
      return deleteSq(ctx, cmd);
    case AdminOp.DELETE_CQ:
      return deleteCq(ctx, cmd);
    case AdminOp.ABORT:
      // Commands run to completion quickly; report "not aborted" (Dword 0 bit 0). A missing SQ: Invalid Field (QEMU).
      if (!ctx.queues.sq(cmd.cdw10 & 0xffff)) fail(Status.INVALID_FIELD, `Abort: no SQ ${cmd.cdw10 & 0xffff}`);
      return { status: Status.SUCCESS, result: 1 };
    case AdminOp.ASYNC_EVENT_REQUEST:
      if (!ctx.asyncEvents.request(sq, cmd.cid)) fail(Status.AER_LIMIT_EXCEEDED, 'too many Async Event Requests');
      return undefined;
    case AdminOp.KEEP_ALIVE:
      return OK;
    case AdminOp.DOORBELL_BUFFER_CONFIG:
      if (!ctx.configureDoorbellBuffer(cmd.prp1, cmd.prp2))
        fail(
          Status.INVALID_FIELD,
          'doorbell buffers must be two distinct page-aligned pages of fd-backed guest memory',
        );
      ctx.limiter.debug('shadow-doorbells', {}, 'nvme: shadow doorbells on');
      return OK;
    default:
      return fail(Status.INVALID_OPCODE, `admin opcode 0x${cmd.opcode.toString(16)}`);
  }
}

async function identify(ctx: AdminContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const cns = cmd.cdw10 & 0xff;
  const ns = () => ctx.namespaces.get(cmd.nsid) ?? fail(Status.INVALID_NAMESPACE, `no namespace ${cmd.nsid}`);
  let data: Uint8Array;
  switch (cns) {
    case Cns.CONTROLLER:
      data = identifyController(ctx.identity);
      break;
    case Cns.NAMESPACE:
      // An inactive but valid nsid gets zeroes; the broadcast nsid gets the common format.
      if (cmd.nsid === ALL_NAMESPACES) data = identifyNamespace(ctx.namespaces.values().next().value!).fill(0, 0, 24);
      else if (cmd.nsid === 0) fail(Status.INVALID_NAMESPACE, 'nsid 0');
      else data = ctx.namespaces.has(cmd.nsid) ? identifyNamespace(ns()) : new Uint8Array(PAGE_SIZE);
      break;
    case Cns.ACTIVE_NS_LIST:
      if (cmd.nsid >= 0xfffffffe) fail(Status.INVALID_NAMESPACE, 'bad starting nsid');
      data = activeNamespaceList([...ctx.namespaces.keys()], cmd.nsid);
      break;
    case Cns.NS_ID_DESCRIPTORS:
      data = namespaceDescriptors(ns());
      break;
    case Cns.NS_CS_INDEPENDENT:
      ns();
      data = identifyNamespaceIndependent();
      break;
    case Cns.NS_CS_SPECIFIC:
    case Cns.CONTROLLER_CS_SPECIFIC:
      if (cmd.cdw11 >>> 24 !== 0) fail(Status.INVALID_FIELD, `command set ${cmd.cdw11 >>> 24}`);
      if (cns === Cns.NS_CS_SPECIFIC) ns();
      data = new Uint8Array(PAGE_SIZE);
      break;
    default:
      return fail(Status.INVALID_FIELD, `Identify CNS ${cns}`);
  }
  await sendData(ctx, cmd, data, PAGE_SIZE);
  return OK;
}

function getFeatures(ctx: AdminContext, cmd: SubmissionEntry): CommandResult {
  const fid = cmd.cdw10 & 0xff;
  const sel = (cmd.cdw10 >>> 8) & 7;
  if (sel === 3) {
    // Supported capabilities: everything we support is changeable (bit 2), nothing saveable.
    if (featureValue(ctx, fid, cmd) === undefined) fail(Status.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
    return { status: Status.SUCCESS, result: 1 << 2 };
  }
  if (sel > 3) fail(Status.INVALID_FIELD, `Get Features SEL ${sel}`);
  const value = sel === 0 ? featureValue(ctx, fid, cmd) : defaultFeatureValue(fid, cmd);
  if (value === undefined) fail(Status.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
  return { status: Status.SUCCESS, result: value };
}

function queuesValue(n: number): number {
  return (((n - 1) & 0xffff) | (((n - 1) & 0xffff) << 16)) >>> 0;
}

function featureValue(ctx: AdminContext, fid: number, cmd: SubmissionEntry): number | undefined {
  const f = ctx.features;
  switch (fid) {
    case FeatureId.ARBITRATION:
      return f.arbitration;
    case FeatureId.POWER_MANAGEMENT:
      return f.powerState;
    case FeatureId.TEMPERATURE_THRESHOLD: {
      const sel = (cmd.cdw11 >>> 16) & 0xf;
      const under = ((cmd.cdw11 >>> 20) & 3) === 1;
      if (sel !== 0) return 0;
      return under ? f.underTemp : f.overTemp;
    }
    case FeatureId.ERROR_RECOVERY:
      return f.errorRecovery;
    case FeatureId.VOLATILE_WRITE_CACHE:
      return f.volatileWriteCache ? 1 : 0;
    case FeatureId.NUMBER_OF_QUEUES:
      return queuesValue(f.grantedQueues || ctx.maxIoQueues);
    case FeatureId.INTERRUPT_COALESCING:
      return f.coalesceThreshold | (f.coalesceTime << 8);
    case FeatureId.INTERRUPT_VECTOR_CONFIG: {
      const iv = cmd.cdw11 & 0xffff;
      if (iv >= ctx.vectors) return undefined;
      return iv | (f.coalesceDisabled.has(iv) ? 1 << 16 : 0);
    }
    case FeatureId.WRITE_ATOMICITY:
      return f.writeAtomicity;
    case FeatureId.ASYNC_EVENT_CONFIG:
      return f.asyncEventConfig;
    default:
      return undefined;
  }
}

function defaultFeatureValue(fid: number, cmd: SubmissionEntry): number | undefined {
  switch (fid) {
    case FeatureId.TEMPERATURE_THRESHOLD:
      return ((cmd.cdw11 >>> 20) & 3) === 1 ? 0 : 0x157;
    case FeatureId.VOLATILE_WRITE_CACHE:
      return 1;
    case FeatureId.INTERRUPT_VECTOR_CONFIG:
      return cmd.cdw11 & 0xffff;
    case FeatureId.ARBITRATION:
    case FeatureId.POWER_MANAGEMENT:
    case FeatureId.ERROR_RECOVERY:
    case FeatureId.INTERRUPT_COALESCING:
    case FeatureId.WRITE_ATOMICITY:
    case FeatureId.ASYNC_EVENT_CONFIG:
      return 0;
    default:
      return undefined;
  }
}

async function setFeatures(ctx: AdminContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const fid = cmd.cdw10 & 0xff;
  if (cmd.cdw10 >>> 31) fail(Status.FEATURE_NOT_SAVEABLE, 'no saveable features');
  const f = ctx.features;
  const v = cmd.cdw11;
  switch (fid) {
    case FeatureId.ARBITRATION:
      f.arbitration = v;
      return OK;
    case FeatureId.POWER_MANAGEMENT:
      if ((v & 0x1f) !== 0) fail(Status.INVALID_FIELD, 'only power state 0');
      f.powerState = v & 0xff;
      return OK;
    case FeatureId.TEMPERATURE_THRESHOLD: {
      const sel = (v >>> 16) & 0xf;
      const thsel = (v >>> 20) & 3;
      if (thsel > 1 || (sel !== 0 && sel !== 0xf)) fail(Status.INVALID_FIELD, 'temperature threshold select');
      if (thsel === 1) f.underTemp = v & 0xffff;
      else f.overTemp = v & 0xffff;
      return OK;
    }
    case FeatureId.ERROR_RECOVERY:
      f.errorRecovery = v & 0x1ffff;
      return OK;
    case FeatureId.VOLATILE_WRITE_CACHE: {
      const enable = (v & 1) === 1;
      if (f.volatileWriteCache && !enable) await ctx.flushAll(); // what was cached becomes durable now
      f.volatileWriteCache = enable;
      return OK;
    }
    case FeatureId.NUMBER_OF_QUEUES: {
      const nsq = (v & 0xffff) + 1;
      const ncq = (v >>> 16) + 1;
      if (nsq === 0x10000 || ncq === 0x10000) fail(Status.INVALID_FIELD, 'number of queues 65536');
      // Spec 5.21.1.7 and QEMU: fixed once an I/O queue exists (until a reset).
      if (ctx.queues.ioQueuesCreated)
        fail(Status.COMMAND_SEQUENCE_ERROR, 'Number of Queues after I/O queues were created');
      f.grantedQueues = Math.min(Math.max(nsq, ncq), ctx.maxIoQueues);
      return { status: Status.SUCCESS, result: queuesValue(f.grantedQueues) };
    }
    case FeatureId.INTERRUPT_COALESCING:
      f.coalesceThreshold = v & 0xff;
      f.coalesceTime = (v >>> 8) & 0xff;
      return OK;
    case FeatureId.INTERRUPT_VECTOR_CONFIG: {
      const iv = v & 0xffff;
      if (iv >= ctx.vectors) fail(Status.INVALID_FIELD, `vector ${iv}`);
      if (iv === 0 && (v & (1 << 16)) === 0) fail(Status.INVALID_FIELD, 'the admin vector cannot coalesce');
      if (v & (1 << 16)) f.coalesceDisabled.add(iv);
      else f.coalesceDisabled.delete(iv);
      return OK;
    }
    case FeatureId.WRITE_ATOMICITY:
      f.writeAtomicity = v & 1;
      return OK;
    case FeatureId.ASYNC_EVENT_CONFIG:
      f.asyncEventConfig = v;
      return OK;
    default:
      return fail(Status.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
  }
}

async function getLogPage(ctx: AdminContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const lid = cmd.cdw10 & 0xff;
  const numd = ((cmd.cdw10 >>> 16) | ((cmd.cdw11 & 0xffff) << 16)) >>> 0;
  const length = (numd + 1) * 4;
  const offset = cmd.cdw12 + cmd.cdw13 * 0x1_0000_0000;
  const retainEvent = ((cmd.cdw10 >>> 15) & 1) === 1; // RAE
  if ((offset & 3) !== 0) fail(Status.INVALID_FIELD, 'log page offset not dword aligned');
  if (length > 1 << 20) fail(Status.INVALID_FIELD, 'log page read too long');
  let page: Uint8Array;
  switch (lid) {
    case LogPage.ERROR:
      page = new Uint8Array(64 * 64);
      break;
    case LogPage.SMART:
      if (cmd.nsid !== 0 && cmd.nsid !== ALL_NAMESPACES) fail(Status.INVALID_FIELD, 'SMART log is controller-wide');
      page = smartLog(ctx.health);
      break;
    case LogPage.FIRMWARE_SLOT:
      page = firmwareSlotLog(ctx.identity.firmware);
      break;
    case LogPage.CHANGED_NS_LIST:
      page = new Uint8Array(PAGE_SIZE);
      break;
    default:
      return fail(Status.INVALID_LOG_PAGE, `log page 0x${lid.toString(16)}`);
  }
  if (offset >= page.length) fail(Status.INVALID_FIELD, 'log page offset past the end');
  // What the page holds past the offset, at most the length asked for (QEMU: min(size - off, len)).
  const rest = page.subarray(offset);
  await sendData(ctx, cmd, rest.subarray(0, Math.min(rest.length, length)));
  if (!retainEvent) ctx.asyncEvents.logPageRead(lid);
  return OK;
}

/** A queue must lie in guest memory the client mapped (fd-backed or not). */
function checkQueueMemory(ctx: AdminContext, base: bigint, bytes: number, what: string): void {
  try {
    ctx.dma.view(base, bytes);
  } catch {
    fail(Status.INVALID_FIELD, `${what} at 0x${base.toString(16)} is not in mapped guest memory`);
  }
}

function createCq(ctx: AdminContext, cmd: SubmissionEntry): CommandResult {
  const qid = cmd.cdw10 & 0xffff;
  const size = (cmd.cdw10 >>> 16) + 1;
  const pc = (cmd.cdw11 & 1) === 1;
  const ien = (cmd.cdw11 & 2) === 2;
  const iv = cmd.cdw11 >>> 16;
  if (qid === 0 || qid > (ctx.features.grantedQueues || ctx.maxIoQueues) || ctx.queues.cq(qid))
    fail(Status.INVALID_QUEUE_ID, `CQ ${qid}`);
  if (size < 2 || size > MAX_QUEUE_ENTRIES) fail(Status.INVALID_QUEUE_SIZE, `CQ size ${size}`);
  if (!pc) fail(Status.INVALID_FIELD, 'CQs must be physically contiguous');
  if (iv >= ctx.vectors || (iv !== 0 && !ctx.msixEnabled()))
    fail(Status.INVALID_INTERRUPT_VECTOR, `vector ${iv}${ctx.msixEnabled() ? '' : ' without MSI-X'}`);
  if ((cmd.prp1 & BigInt(PAGE_SIZE - 1)) !== 0n) fail(Status.INVALID_PRP_OFFSET, 'CQ base not page aligned');
  checkQueueMemory(ctx, cmd.prp1, size * 16, `CQ ${qid}`);
  ctx.queues.createCq(qid, cmd.prp1, size, iv, ien);
  ctx.limiter.debug('queue-created', { qid, size, iv, ien }, 'nvme: I/O CQ created');
  return OK;
}

function createSq(ctx: AdminContext, cmd: SubmissionEntry): CommandResult {
  const qid = cmd.cdw10 & 0xffff;
  const size = (cmd.cdw10 >>> 16) + 1;
  const pc = (cmd.cdw11 & 1) === 1;
  const cqid = cmd.cdw11 >>> 16;
  if (qid === 0 || qid > (ctx.features.grantedQueues || ctx.maxIoQueues) || ctx.queues.sq(qid))
    fail(Status.INVALID_QUEUE_ID, `SQ ${qid}`);
  if (size < 2 || size > MAX_QUEUE_ENTRIES) fail(Status.INVALID_QUEUE_SIZE, `SQ size ${size}`);
  if (!pc) fail(Status.INVALID_FIELD, 'SQs must be physically contiguous');
  const cq = cqid === 0 ? undefined : ctx.queues.cq(cqid);
  if (!cq) fail(Status.CQ_INVALID, `CQ ${cqid}`);
  if ((cmd.prp1 & BigInt(PAGE_SIZE - 1)) !== 0n) fail(Status.INVALID_PRP_OFFSET, 'SQ base not page aligned');
  checkQueueMemory(ctx, cmd.prp1, size * 64, `SQ ${qid}`);
  ctx.queues.createSq(qid, cmd.prp1, size, cq);
  ctx.limiter.debug('queue-created', { qid, size, cqid }, 'nvme: I/O SQ created');
  return OK;
}

/**
 * Delete I/O SQ: the queue goes at once (a repeat, in the same doorbell or
 * while this one waits, finds no queue: Invalid Queue Identifier, as in
 * QEMU); completes when its commands still running are done (queue-table.ts).
 */
async function deleteSq(ctx: AdminContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const qid = cmd.cdw10 & 0xffff;
  const sq = qid === 0 ? undefined : ctx.queues.sq(qid);
  if (!sq) fail(Status.INVALID_QUEUE_ID, `SQ ${qid}`);
  await ctx.queues.deleteSq(sq);
  return OK;
}

function deleteCq(ctx: AdminContext, cmd: SubmissionEntry): CommandResult {
  const qid = cmd.cdw10 & 0xffff;
  const cq = qid === 0 ? undefined : ctx.queues.cq(qid);
  if (!cq) fail(Status.INVALID_QUEUE_ID, `CQ ${qid}`);
  if (cq.sqCount > 0) fail(Status.INVALID_QUEUE_DELETION, `CQ ${qid} still has SQs`);
  ctx.queues.deleteCq(cq);
  return OK;
}
