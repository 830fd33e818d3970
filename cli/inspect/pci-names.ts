/**
 * Names lspci would print, for the few classes and vendors a vfio-user
 * device is likely to have (lspci reads pci.ids; we keep a small table and
 * print the numbers always).
 */

/** Base class and subclass names (PCI Code and ID Assignment spec). */
const CLASSES: Record<number, string> = {
  0x00: 'Unclassified device',
  0x01: 'Mass storage controller',
  0x0100: 'SCSI storage controller',
  0x0101: 'IDE interface',
  0x0106: 'SATA controller',
  0x0107: 'Serial Attached SCSI controller',
  0x0108: 'Non-Volatile memory controller',
  0x02: 'Network controller',
  0x0200: 'Ethernet controller',
  0x03: 'Display controller',
  0x0300: 'VGA compatible controller',
  0x04: 'Multimedia controller',
  0x0401: 'Multimedia audio controller',
  0x05: 'Memory controller',
  0x06: 'Bridge',
  0x0604: 'PCI bridge',
  0x07: 'Communication controller',
  0x0700: 'Serial controller',
  0x08: 'Generic system peripheral',
  0x0880: 'System peripheral',
  0x09: 'Input device controller',
  0x0c: 'Serial bus controller',
  0x0c03: 'USB controller',
  0x11: 'Signal processing controller',
  0x1180: 'Signal processing controller',
  0x12: 'Processing accelerators',
  0xff: 'Unassigned class',
};

/** Programming interfaces worth a name. */
const PROG_IFS: Record<number, string> = { 0x010802: 'NVM Express', 0x0c0330: 'XHCI' };

const VENDORS: Record<number, string> = {
  0x1af4: 'Red Hat, Inc.',
  0x1b36: 'Red Hat, Inc.',
  0x4e58: 'Nutanix Inc.',
  0x494f: 'ACCES I/O Products, Inc.',
  0x8086: 'Intel Corporation',
  0x144d: 'Samsung Electronics Co Ltd',
};

/** 'Non-Volatile memory controller', falling back to the base class, then 'Class xxxx'. */
export function className(classCode: number): string {
  const sub = classCode >>> 8;
  return CLASSES[sub] ?? CLASSES[sub >>> 8] ?? `Class ${sub.toString(16).padStart(4, '0')}`;
}

export function progIfName(classCode: number): string | undefined {
  return PROG_IFS[classCode];
}

export function vendorName(vendor: number): string | undefined {
  return VENDORS[vendor];
}

/** Standard capability names (PCI_CAP_ID_*). */
export const CAP_NAMES: Record<number, string> = {
  0x01: 'Power Management',
  0x02: 'AGP',
  0x03: 'Vital Product Data',
  0x04: 'Slot Identification',
  0x05: 'MSI',
  0x06: 'CompactPCI hot swap',
  0x07: 'PCI-X',
  0x08: 'HyperTransport',
  0x09: 'Vendor Specific Information',
  0x0a: 'Debug port',
  0x0b: 'CompactPCI central resource control',
  0x0c: 'PCI Standard Hot-Plug Controller',
  0x0d: 'Subsystem Vendor ID',
  0x0e: 'AGP 8x',
  0x0f: 'Secure device',
  0x10: 'Express',
  0x11: 'MSI-X',
  0x12: 'SATA HBA',
  0x13: 'PCI Advanced Features',
  0x14: 'Enhanced Allocation',
  0x15: 'Flattening Portal Bridge',
};

/** Extended capability names (PCI_EXT_CAP_ID_*). */
export const EXT_CAP_NAMES: Record<number, string> = {
  0x0001: 'Advanced Error Reporting',
  0x0002: 'Virtual Channel',
  0x0003: 'Device Serial Number',
  0x0004: 'Power Budgeting',
  0x000b: 'Vendor Specific Information',
  0x000d: 'Access Control Services',
  0x000e: 'Alternative Routing-ID Interpretation',
  0x0010: 'Single Root I/O Virtualization',
  0x0015: 'Resizable BAR',
  0x0017: 'Transaction Processing Hints',
  0x0018: 'Latency Tolerance Reporting',
  0x0019: 'Secondary PCI Express',
  0x001e: 'L1 PM Substates',
  0x0025: 'Data Link Feature',
  0x0026: 'Physical Layer 16.0 GT/s',
};
