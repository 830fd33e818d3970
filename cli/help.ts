/** Handwritten --help texts for the `vfio-user-ts` CLI (docs/cli.md has the long form). */

export const MAIN_HELP = `vfio-user-ts: PCI devices written in TypeScript, served to QEMU over vfio-user

Usage:
  vfio-user-ts serve [options]        run devices (default: one NVMe + one GPIO under ./run/)
  vfio-user-ts gpio <get|set|watch>   talk to a running GPIO card's control socket
  vfio-user-ts vm [options]           boot a throwaway Linux guest (QEMU) attached to device sockets
  vfio-user-ts trace FILE [filters]   print a capture made with 'serve --trace-file FILE'
  vfio-user-ts inspect SOCKET         connect to any vfio-user server and describe its device (like lspci -vvv)
  vfio-user-ts help [command]         show help for a command
  vfio-user-ts --version

Run 'vfio-user-ts serve --help' for the device options.
`;

export const SERVE_HELP = `Usage:
  vfio-user-ts serve                                  the built-in default:
                                                      nvme0 (sparse 1 GiB data/nvme0.img) on run/nvme0.sock,
                                                      gpio0 on run/gpio0.sock (control socket run/gpio0.sock.control)
  vfio-user-ts serve --config FILE                    devices from a JSON file (see docs/cli.md)
  vfio-user-ts serve --device TYPE --socket PATH [device flags] [--device ...]

Devices (--device starts one; the flags after it belong to it; repeat for more):
  -d, --device TYPE      nvme, gpio, or a path to a device module (exports a factory)
  -s, --socket PATH      UNIX socket QEMU connects to (required)
      --name NAME        name in logs (default: nvme0, gpio0, ...)
  -o, --option KEY=VAL   a device option, as "options" in a config file (VAL is JSON
                         or plain text): module options, or nvme serial=..., model=...
  nvme:
      --disk FILE        raw image (created sparse if missing); without it, RAM
      --size SIZE        namespace size: 1G, 512M, 4096 ... (required for a new image)
      --lba-size N       512 (default) or 4096
      --queues N         most I/O queue pairs (1-64)
      --poll-us N        poll shadow doorbells N us after the last I/O (default 2000, 0 = off)
  gpio:
      --control PATH     JSON-lines control socket (default: SOCKET.control;
                         'none' for no control socket)

Other options:
  -c, --config FILE      JSON config: {"devices":[{"type","socket","name"?,"options"?}], "logLevel"?}
      --check            validate the configuration and build every device (then close
                         it), print the devices, exit; nothing listens or runs
      --watch            reload device modules (./my-device.ts) when their files change,
                         under the running guest: state carried over, no reset (docs/cli.md)
      --takeover         replace the daemon running with this configuration (upgrade): take
                         its idle devices' sockets and state over its control socket; it
                         exits once they are adopted, or serves on if this fails (docs/cli.md)
      --metrics HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics
      --log-level LEVEL  fatal, error, warn, info (default), debug, trace, silent (or LOG_LEVEL)
      --trace            log every vfio-user message, decoded, one line each (= --log-level debug)
      --trace-file FILE  also capture every message, decoded, to FILE (JSON lines; read it
                         with 'vfio-user-ts trace FILE')
      --trace-max-bytes SIZE  stop the capture at SIZE (default 256M)
      --trace-raw-bytes N     keep the first N bytes of every message, hex (default 0)
      --log-format FMT   auto (pretty on a terminal, else JSON), json, pretty
  -h, --help             this help

Examples:
  vfio-user-ts serve --device nvme --socket /run/vfio-user-ts/nvme0.sock --disk /var/lib/nvme0.img --size 8G
  vfio-user-ts serve -d gpio -s /tmp/gpio.sock -d ./my-device.js -s /tmp/mine.sock
  vfio-user-ts serve --config /etc/vfio-user-ts/devices.json --trace

At start it prints the QEMU options for each socket (to stderr: stdout is the log,
one JSON record per line). Under systemd it reports readiness (Type=notify) and
takes sockets a .socket unit passes (see examples/systemd). SIGTERM or SIGINT stops it:
clients are dropped, disks flushed, socket files removed, exit 0 (forced, exit 1, after 4.5 s).
Exit codes: 0 stopped cleanly, 1 runtime failure, 2 bad arguments or configuration.
`;

export const TRACE_HELP = `Usage:
  vfio-user-ts trace FILE [--command NAMES] [--region NAMES] [--json]

Print a capture made with 'vfio-user-ts serve --trace-file FILE': one line per
message, as --trace logs them, with the time since the capture started, the
device and the connection.

  --command NAMES   only these commands, comma-separated: region_read,dma_map
                    (case-insensitive; the DEVICE_ prefix may be left out)
  --region NAMES    only messages about these regions: config, BAR0..BAR5, ROM, VGA, MIGR
  --json            print the chosen records as JSON lines instead
  -h, --help        this help

Exit codes: 0 printed, 1 the file cannot be read or is not a capture, 2 bad arguments.
`;

export const INSPECT_HELP = `Usage:
  vfio-user-ts inspect SOCKET [--probe-bars] [--json]

Connect to a vfio-user server (ours or anyone's) as a client, describe its
device like 'lspci -vvv' and disconnect: IDs, class, BARs (size, flags, mmap
areas), PCI capabilities decoded, IRQ indexes, region types, and the
capabilities the server sent in VERSION. Only reads config space and asks
for information, unless --probe-bars.

  --probe-bars      also size each BAR as firmware does (writes all-ones to the
                    BAR registers, then restores them)
  --json            print one JSON object instead of text
  --timeout MS      per-request timeout (default 5000)
  -h, --help        this help

Exit codes: 0 described, 1 cannot connect or the server misbehaved, 2 bad arguments.
`;
