/**
 * Boot a throwaway Linux guest in QEMU (TCG) with vfio-user-pci devices attached.
 * The guest runs a busybox /init from a per-boot initramfs, loads the requested
 * modules, runs `script`, prints machine-readable lines on the serial console and
 * powers off. See docs/testing-with-qemu.md.
 *
 * Tests wrap their guest tests in `guestTest` (./guest-test.js), which skips loudly
 * (or fails under CI=true) when the kit is missing.
 */

/** How to boot one guest. */
export interface GuestOptions {
  /** Each becomes a `vfio-user-pci` device on that UNIX socket (JSON -device syntax; id default vfu<N>). */
  devices: { socketPath: string; id?: string }[];
  /** busybox sh script run after boot (modules already loaded). */
  script: string;
  /** Kernel modules to load, e.g. ['nvme'] or ['gpio-pci-idio-16']; dependencies are resolved (each module's depends=, what modules.dep holds). */
  modules?: string[];
  /**
   * Default true: guest RAM is a shared memfd, sealed as QEMU does by default
   * (DMA through mmap). 'unsealed': the same memfd with seal=off. false: plain
   * -m (DMA via DMA_READ/WRITE messages).
   */
  sharedMemory?: boolean | 'unsealed';
  /** Guest RAM, default 512. */
  memoryMiB?: number;
  /** vCPUs, default 1. */
  smp?: number;
  /** Hard timeout after which QEMU is killed, default 60000. */
  timeoutMs?: number;
  /** Extra QEMU arguments (e.g. QEMU's own -device nvme for benchmarks). */
  qemuArgs?: string[];
  /** Extra files in the initramfs: path (relative to /) -> content. */
  files?: Record<string, string | Uint8Array>;
}

/** A running guest. */
export interface Guest {
  /**
   * Resolves with the first complete serial-console line (past or future) matching
   * `pattern`; rejects on timeout (default: the guest's timeoutMs) or exit, serial log attached.
   */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Writes to the guest console (QEMU's serial stdin). */
  write(text: string): void;
  /** Settles when QEMU exits. Resolves on any exit (check `code`/`results`); never rejects. */
  readonly exited: Promise<GuestResult>;
  /** Kills QEMU (SIGKILL). */
  kill(): void;
}

/** What a finished guest left behind. */
export interface GuestResult {
  /** QEMU's exit code (0 after the guest's poweroff), null if killed. */
  code: number | null;
  /** The whole serial console log, QEMU's stderr (lines prefixed `[qemu] `) and how it ended (`[vfio-user-ts] ...`). */
  serial: string;
  /** From serial lines `RESULT key=value`; `exit` is the script's exit status. */
  results: Record<string, string>;
}

export { startGuest, runGuest, GuestError, qemuArguments } from './guest-process.js';
