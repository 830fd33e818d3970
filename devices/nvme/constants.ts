/**
 * NVMe numbers the controller needs: register offsets, opcodes, status codes,
 * feature ids. Names follow the NVM Express Base Specification 1.4.
 */

/** Controller register offsets in BAR0. */
export const Reg = {
  CAP: 0x00,
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
  AQA: 0x24,
  ASQ: 0x28,
  ACQ: 0x30,
  CMBLOC: 0x38,
  CMBSZ: 0x3c,
  /** First doorbell. */
  DOORBELLS: 0x1000,
} as const;

/** BAR0 size: 16 KiB (Windows' stornvme wants at least this much). */
export const BAR0_SIZE = 0x4000;

/** Version 1.4.0. */
export const NVME_VERSION = 0x00010400;

export const CC = {
  EN: 1 << 0,
  CSS_SHIFT: 4,
  MPS_SHIFT: 7,
  AMS_SHIFT: 11,
  SHN_SHIFT: 14,
  IOSQES_SHIFT: 16,
  IOCQES_SHIFT: 20,
} as const;

export const CSTS = {
  RDY: 1 << 0,
  CFS: 1 << 1,
  SHST_SHIFT: 2,
  SHST_NORMAL: 0,
  SHST_PROCESSING: 1,
  SHST_COMPLETE: 2,
} as const;

/** Admin command opcodes. */
export const AdminOp = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT_REQUEST: 0x0c,
  KEEP_ALIVE: 0x18,
  DOORBELL_BUFFER_CONFIG: 0x7c,
} as const;

/** NVM command set opcodes. */
export const IoOp = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  COMPARE: 0x05,
  WRITE_ZEROES: 0x08,
  DATASET_MANAGEMENT: 0x09,
} as const;

/** Identify CNS values. */
export const Cns = {
  NAMESPACE: 0x00,
  CONTROLLER: 0x01,
  ACTIVE_NS_LIST: 0x02,
  NS_ID_DESCRIPTORS: 0x03,
  /** I/O command set specific Identify Namespace (NVM: nothing beyond CNS 0). */
  NS_CS_SPECIFIC: 0x05,
  /** I/O command set specific Identify Controller (NVM: all limits 0 = none). */
  CONTROLLER_CS_SPECIFIC: 0x06,
  /** I/O command set independent Identify Namespace. */
  NS_CS_INDEPENDENT: 0x08,
} as const;

export const FeatureId = {
  ARBITRATION: 0x01,
  POWER_MANAGEMENT: 0x02,
  TEMPERATURE_THRESHOLD: 0x04,
  ERROR_RECOVERY: 0x05,
  VOLATILE_WRITE_CACHE: 0x06,
  NUMBER_OF_QUEUES: 0x07,
  INTERRUPT_COALESCING: 0x08,
  INTERRUPT_VECTOR_CONFIG: 0x09,
  WRITE_ATOMICITY: 0x0a,
  ASYNC_EVENT_CONFIG: 0x0b,
} as const;

export const LogPage = {
  ERROR: 0x01,
  SMART: 0x02,
  FIRMWARE_SLOT: 0x03,
  CHANGED_NS_LIST: 0x04,
} as const;

/** Status code types. */
const Sct = { GENERIC: 0, COMMAND_SPECIFIC: 1, MEDIA: 2 } as const;

/**
 * A 15-bit completion status: SC (7:0), SCT (10:8), DNR (14).
 * `status(sct, sc, dnr)`; 0 is success.
 */
function status(sct: number, sc: number, dnr = true): number {
  return (sc & 0xff) | ((sct & 7) << 8) | (dnr ? 1 << 14 : 0);
}

export const Status = {
  SUCCESS: 0,
  INVALID_OPCODE: status(Sct.GENERIC, 0x01),
  INVALID_FIELD: status(Sct.GENERIC, 0x02),
  DATA_TRANSFER_ERROR: status(Sct.GENERIC, 0x04, false),
  INTERNAL_ERROR: status(Sct.GENERIC, 0x06, false),
  ABORT_REQUESTED: status(Sct.GENERIC, 0x07),
  ABORTED_SQ_DELETION: status(Sct.GENERIC, 0x08),
  INVALID_NAMESPACE: status(Sct.GENERIC, 0x0b),
  COMMAND_SEQUENCE_ERROR: status(Sct.GENERIC, 0x0c),
  INVALID_PRP_OFFSET: status(Sct.GENERIC, 0x13),
  LBA_OUT_OF_RANGE: status(Sct.GENERIC, 0x80),
  CQ_INVALID: status(Sct.COMMAND_SPECIFIC, 0x00),
  INVALID_QUEUE_ID: status(Sct.COMMAND_SPECIFIC, 0x01),
  INVALID_QUEUE_SIZE: status(Sct.COMMAND_SPECIFIC, 0x02),
  AER_LIMIT_EXCEEDED: status(Sct.COMMAND_SPECIFIC, 0x05),
  INVALID_INTERRUPT_VECTOR: status(Sct.COMMAND_SPECIFIC, 0x08),
  INVALID_LOG_PAGE: status(Sct.COMMAND_SPECIFIC, 0x09),
  /** Without DNR, as QEMU: the host may retry once the CQ's SQs are gone. */
  INVALID_QUEUE_DELETION: status(Sct.COMMAND_SPECIFIC, 0x0c, false),
  FEATURE_NOT_SAVEABLE: status(Sct.COMMAND_SPECIFIC, 0x0d),
  COMPARE_FAILURE: status(Sct.MEDIA, 0x85),
} as const;

/** Submission and completion queue entry sizes (CC.IOSQES/IOCQES = 6/4). */
export const SQE_SIZE = 64;
export const CQE_SIZE = 16;

/** The only memory page size we support (CAP.MPSMIN = MPSMAX = 0). */
export const PAGE_SIZE = 4096;

/** Largest queue (CAP.MQES + 1). */
export const MAX_QUEUE_ENTRIES = 1024;

/** MDTS: 2^8 pages = 1 MiB per command. */
export const MDTS = 8;
export const MAX_TRANSFER = PAGE_SIZE << MDTS;

/** Most outstanding Async Event Requests (Identify AERL + 1). */
export const MAX_AERS = 4;
