/** Shell snippets for the scripts the test guests run (busybox sh; results are `RESULT key=value` lines). */

/**
 * Finds the PCI device `vendor:device` in sysfs and sets `$dev` to its
 * directory; reports `RESULT found=yes`, or `RESULT found=no` and exits 1.
 */
export function findPciDevice(vendor: number, device: number): string {
  const hex = (v: number) => `0x${v.toString(16).padStart(4, '0')}`;
  return `for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = "${hex(vendor)}" ] && [ "$(cat $d/device)" = "${hex(device)}" ] && dev=$d
done
[ -n "$dev" ] || { echo "RESULT found=no"; exit 1; }
echo "RESULT found=yes"`;
}
