/**
 * The controller's metrics (NvmeControllerOptions.metrics), counted where
 * each command completes (command-engine.ts), per submission queue:
 *
 *   vfio_user_nvme_commands_total{device,queue,op}       op admin|read|write|flush|other
 *   vfio_user_nvme_command_errors_total{device,queue}     completed with a non-zero status
 *   vfio_user_nvme_bytes_total{device,queue,direction}    data of successful reads and writes
 *   vfio_user_nvme_command_seconds{device,queue}          fetch to completion (histogram)
 *
 * Per command: one clock read, three or four additions to numbers the
 * children own; no allocation (children are made once per queue).
 */
import type { CounterChild, CounterMetric, DeviceMetrics, HistogramChild, HistogramMetric } from 'vfio-user-ts';
import { IoOp } from './constants.js';
import type { SubmissionEntry } from './queues.js';

const OPS = ['admin', 'read', 'write', 'flush', 'other'] as const;

/** Fetch-to-completion times, 5 µs to 1 s. */
const LATENCY_BUCKETS = [5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1];

interface QueueCells {
  ops: CounterChild[];
  errors: CounterChild;
  read: CounterChild;
  written: CounterChild;
  latency: HistogramChild;
}

export class NvmeMetrics {
  readonly #queues: QueueCells[] = [];
  readonly #commands: CounterMetric;
  readonly #errors: CounterMetric;
  readonly #bytes: CounterMetric;
  readonly #latency: HistogramMetric;
  readonly #lbaSize: (nsid: number) => number | undefined;

  constructor(metrics: DeviceMetrics, lbaSize: (nsid: number) => number | undefined) {
    this.#lbaSize = lbaSize;
    this.#commands = metrics.counter('vfio_user_nvme_commands_total', 'NVMe commands completed, by queue and kind', [
      'queue',
      'op',
    ]);
    this.#errors = metrics.counter(
      'vfio_user_nvme_command_errors_total',
      'NVMe commands completed with an error status, by queue',
      ['queue'],
    );
    this.#bytes = metrics.counter('vfio_user_nvme_bytes_total', 'NVMe data read and written, by queue', [
      'queue',
      'direction',
    ]);
    this.#latency = metrics.histogram('vfio_user_nvme_command_seconds', 'NVMe command time, fetch to completion', {
      buckets: LATENCY_BUCKETS,
      labelNames: ['queue'],
    });
  }

  /** The command fetched from SQ `qid` at `t0` (performance.now()) completed with `status`. */
  completed(qid: number, cmd: SubmissionEntry, status: number, t0: number): void {
    const q = this.#queues[qid] ?? this.#cells(qid);
    q.latency.observe((performance.now() - t0) / 1000);
    if (qid === 0) {
      q.ops[0]!.inc();
    } else {
      const op = cmd.opcode === IoOp.READ ? 1 : cmd.opcode === IoOp.WRITE ? 2 : cmd.opcode === IoOp.FLUSH ? 3 : 4;
      q.ops[op]!.inc();
      if (status === 0 && op <= 2) {
        const bytes = ((cmd.cdw12 & 0xffff) + 1) * (this.#lbaSize(cmd.nsid) ?? 0);
        (op === 1 ? q.read : q.written).inc(bytes);
      }
    }
    if (status !== 0) q.errors.inc();
  }

  #cells(qid: number): QueueCells {
    const queue = String(qid);
    const cells: QueueCells = {
      ops: OPS.map((op) => this.#commands.labels(queue, op)),
      errors: this.#errors.labels(queue),
      read: this.#bytes.labels(queue, 'read'),
      written: this.#bytes.labels(queue, 'write'),
      latency: this.#latency.labels(queue),
    };
    this.#queues[qid] = cells;
    return cells;
  }
}
