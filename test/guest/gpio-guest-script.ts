/**
 * The busybox sh script the GPIO guest test runs: find the PCI-IDIO-16, check
 * that gpio-pci-idio-16 bound and registered a 32-line gpiochip, drive the
 * outputs through /sys/class/gpio, read the inputs, and count the device's
 * interrupts in /proc/interrupts. It talks to the host with serial lines:
 * `RESULT k=v` for facts, `GPIO-STEP name ...` when it waits for the host,
 * which answers with a line on the console (guest.write).
 */

/** Output pattern the guest drives on OUT0-15. */
export const OUTPUT_PATTERN = 0xa53c;
/** Input pattern the host sets on IIN0-15. */
export const INPUT_PATTERN = 0x5ac3;

export const GPIO_GUEST_SCRIPT = `
fail() { echo "RESULT error=$*"; echo GPIO-STEP failed; exit 1; }
hex() { printf '0x%04x' "$1"; }
waitfor() { read -r answer < /dev/console; }
# Exported lines appear under their line name (OUT0.., IIN0..) when the chip names them.
line() { if [ -d /sys/class/gpio/$2 ]; then echo /sys/class/gpio/$2; else echo /sys/class/gpio/gpio$1; fi; }

dev=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x494f ] && [ "$(cat $d/device)" = 0x0dc8 ]; then dev=$d; fi
done
[ -n "$dev" ] || fail no-device
bdf=\${dev##*/}
echo "RESULT bdf=$bdf"
drv=$(readlink $dev/driver)
echo "RESULT driver=\${drv##*/}"
echo "RESULT bar2=$(sed -n 3p $dev/resource)"
[ -d /sys/class/gpio ] || fail no-gpio-sysfs

chip=
for c in /sys/class/gpio/gpiochip*; do
  [ "$(cat $c/label)" = "$bdf" ] && chip=$c
done
[ -n "$chip" ] || fail no-gpiochip
base=$(cat $chip/base)
echo "RESULT ngpio=$(cat $chip/ngpio)"
ls /sys/bus/gpio/devices/ 2>/dev/null | tr '\\n' ' ' | sed 's/^/gpio devices: /'; echo

# Outputs OUT0-15 (lines 0-15).
i=0
while [ $i -lt 16 ]; do
  n=$((base + i))
  echo $n > /sys/class/gpio/export || fail export-$i
  v=$(( (${OUTPUT_PATTERN} >> i) & 1 ))
  echo $v > $(line $n OUT$i)/value || fail set-out-$i
  i=$((i + 1))
done
back=0; i=0
while [ $i -lt 16 ]; do
  v=$(cat $(line $((base + i)) OUT$i)/value) || fail get-out-$i
  back=$(( back | (v << i) ))
  i=$((i + 1))
done
echo "RESULT readback=$(hex $back)"
echo "GPIO-STEP outputs-set"
waitfor

# Inputs IIN0-15 (lines 16-31), set by the host meanwhile.
ins=0; i=0
while [ $i -lt 16 ]; do
  n=$((base + 16 + i))
  echo $n > /sys/class/gpio/export || fail export-in-$i
  v=$(cat $(line $n IIN$i)/value) || fail get-in-$i
  ins=$(( ins | (v << i) ))
  i=$((i + 1))
done
echo "RESULT inputs=$(hex $ins)"

# Change-of-state interrupt on IIN0: the driver supports both edges only.
irq=$(cat $dev/irq)
echo "RESULT irq=$irq"
count() { awk -v n="$irq:" '$1 == n { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts; }
iin0=$(line $((base + 16)) IIN0)
echo both > $iin0/edge || fail edge
before=$(count)
echo "RESULT irq_before=$before"
for round in 1 2; do
  echo "GPIO-STEP irq-ready $round"
  waitfor
  want=$((before + round))
  tries=0
  while [ "$(count)" -lt $want ] && [ $tries -lt 200 ]; do sleep 0.05; tries=$((tries + 1)); done
  echo "RESULT irq_after_$round=$(count)"
  echo "RESULT iin0_$round=$(cat $iin0/value)"
  echo "RESULT iin9_$round=$(cat $(line $((base + 25)) IIN9)/value)"
done
# The nested interrupt of the line itself (what a sysfs poll() waiter is woken by).
echo "RESULT edges=$(awk -v c="$bdf" '$NF == "gpiolib" && index($0, c) { print $2 }' /proc/interrupts)"
grep -e "$bdf" /proc/interrupts
echo "GPIO-STEP done"
`;
