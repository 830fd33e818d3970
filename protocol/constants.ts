/**
 * vfio-user wire constants: command numbers, header flags and the VFIO UAPI
 * flag values the protocol reuses. Names follow QEMU's docs/interop/vfio-user.rst.
 */

export const HEADER_SIZE = 16;

/**
 * Command numbers (the header's `command`; the spec's `enum vfio_user_command`).
 * Named VfioUserCommand, not Command: the PCI command register and NVMe
 * commands are other things a device author meets in the same files.
 */
export const VfioUserCommand = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  DIRTY_PAGES: 14,
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;

const commandNames: string[] = [];
for (const [name, value] of Object.entries(VfioUserCommand)) commandNames[value] = name;

/** The spec name of a command number ('UNKNOWN(n)' for others). */
export function commandName(cmd: number): string {
  return commandNames[cmd] ?? `UNKNOWN(${cmd})`;
}

/** Header `flags` field. */
export const HeaderFlag = {
  TYPE_MASK: 0xf,
  TYPE_COMMAND: 0,
  TYPE_REPLY: 1,
  NO_REPLY: 0x10,
  ERROR: 0x20,
} as const;

/** DEVICE_GET_INFO flags (VFIO_DEVICE_FLAGS_*). */
export const DeviceFlag = { RESET: 1 << 0, PCI: 1 << 1 } as const;

/** Region info flags (VFIO_REGION_INFO_FLAG_*). */
export const RegionFlag = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, CAPS: 1 << 3 } as const;

/** Region capability ids (VFIO_REGION_INFO_CAP_*). */
export const RegionCap = { SPARSE_MMAP: 1, TYPE: 2, MSIX_MAPPABLE: 3 } as const;

/** PCI region indexes (VFIO_PCI_*_REGION_INDEX). */
export const PciRegion = {
  BAR0: 0,
  BAR1: 1,
  BAR2: 2,
  BAR3: 3,
  BAR4: 4,
  BAR5: 5,
  ROM: 6,
  CONFIG: 7,
  VGA: 8,
  /** Number of standard PCI regions: a PCI device reports at least this many. */
  COUNT: 9,
} as const;

/** PCI IRQ indexes (VFIO_PCI_*_IRQ_INDEX). */
export const PciIrq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4, COUNT: 5 } as const;

/** IRQ info flags (VFIO_IRQ_INFO_*). */
export const IrqInfoFlag = { EVENTFD: 1 << 0, MASKABLE: 1 << 1, AUTOMASKED: 1 << 2, NORESIZE: 1 << 3 } as const;

/** SET_IRQS flags (VFIO_IRQ_SET_*). Exactly one DATA_* and one ACTION_* per request. */
export const IrqSetFlag = {
  DATA_NONE: 1 << 0,
  DATA_BOOL: 1 << 1,
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
  DATA_TYPE_MASK: 0x7,
  ACTION_TYPE_MASK: 0x38,
} as const;

/** DMA_MAP flags. */
export const DmaMapFlag = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, FILE_IO: 1 << 3 } as const;

/** DMA_UNMAP flags. */
export const DmaUnmapFlag = { GET_DIRTY_BITMAP: 1 << 0, ALL: 1 << 1 } as const;

/** Linux errno values used in error replies. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  ENOMSG: 42,
  EPROTO: 71,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
} as const;

/** Defaults and limits (spec defaults; libvfio-user's numbers where the spec is silent). */
export const Limits = {
  /** Our max_data_xfer_size: QEMU's own default (1 MiB). */
  MAX_DATA_XFER_SIZE: 1 << 20,
  /** Largest message we accept: max_data_xfer_size plus room for headers (libvfio-user: 1 MiB + 32). */
  MAX_MESSAGE_SIZE: (1 << 20) + 32,
  /** fds we accept on one message (QEMU sends at most 16 with SET_IRQS). */
  MAX_MSG_FDS: 16,
  /** Spec default when the client omits max_msg_fds. */
  DEFAULT_CLIENT_MAX_MSG_FDS: 1,
  MAX_DMA_MAPS: 65535,
  PGSIZE: 4096,
} as const;
