/**
 * MetricsRegistry: every metric of a process (the daemon's devices, their
 * connections, the process itself), as Prometheus text. `vfio-user-ts serve
 * --metrics HOST:PORT` makes one and serves it over HTTP (http.ts); a
 * program that serves devices itself does the same:
 *
 * ```ts
 * const metrics = new MetricsRegistry();
 * const server = await serve(dev, { socketPath, metrics });   // messages, errors, IRQs, DMA, connection
 * const nvme = new NvmeController({ ..., metrics: metrics.device('nvme0') });
 * const http = await serveMetrics(metrics, { host: '127.0.0.1', port: 9464 });
 * ```
 */
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { silentLogger } from '../log.js';
import {
  DEFAULT_SECONDS_BUCKETS,
  type CounterMetric,
  type DeviceMetrics,
  type GaugeMetric,
  type HistogramMetric,
  type HistogramOptions,
} from './device-metrics.js';
import {
  checkNames,
  CounterCell,
  Family,
  GaugeCell,
  HistogramCell,
  publishCounter,
  publishGauge,
  publishHistogram,
  type FamilyType,
} from './families.js';

export interface MetricsRegistryOptions {
  /** Also export prom-client's process metrics (CPU, memory, event-loop lag, ...). Default true. */
  processMetrics?: boolean;
  /** Where a failing onCollect is logged. Default: silent. */
  log?: Logger;
}

export class MetricsRegistry {
  /** The prom-client registry behind it (register metrics of your own there if you like). */
  readonly prometheus = new Registry();
  readonly #families = new Map<string, Family>();
  readonly #collectors = new Set<() => void>();
  readonly #log: Logger;

  constructor(options: MetricsRegistryOptions = {}) {
    this.#log = options.log ?? silentLogger;
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.prometheus });
  }

  /** The metrics API for one device (its `device` label). */
  device(name: string): DeviceMetrics {
    return {
      enabled: true,
      device: name,
      counter: (metric, help, labelNames = []): CounterMetric => {
        const family = this.family(metric, 'counter', help, labelNames);
        const base = labelNames.length === 0 ? family.cell([name]) : undefined;
        return {
          labels: (...values: string[]) => family.cell([name, ...values]),
          inc: (value?: number) => (base ?? noLabels(metric)).inc(value),
        };
      },
      gauge: (metric, help, labelNames = []): GaugeMetric => {
        const family = this.family(metric, 'gauge', help, labelNames);
        const base = labelNames.length === 0 ? family.cell([name]) : undefined;
        return {
          labels: (...values: string[]) => family.cell([name, ...values]),
          set: (value: number) => (base ?? noLabels(metric)).set(value),
          inc: (value?: number) => (base ?? noLabels(metric)).inc(value),
          dec: (value?: number) => (base ?? noLabels(metric)).dec(value),
        };
      },
      histogram: (metric, help, options: HistogramOptions = {}): HistogramMetric => {
        const labelNames = options.labelNames ?? [];
        const family = this.family(metric, 'histogram', help, labelNames, options.buckets ?? DEFAULT_SECONDS_BUCKETS);
        const base = labelNames.length === 0 ? family.cell([name]) : undefined;
        return {
          labels: (...values: string[]) => family.cell([name, ...values]),
          observe: (value: number) => (base ?? noLabels(metric)).observe(value),
        };
      },
      onCollect: (collect) => {
        this.#collectors.add(collect);
        return () => this.#collectors.delete(collect);
      },
    };
  }

  /**
   * The family called `name`, created on first use; a second caller must ask
   * for the same type and labels (devices of one kind share their families).
   */
  family(name: string, type: 'counter', help: string, labelNames: readonly string[]): Family<CounterCell>;
  family(name: string, type: 'gauge', help: string, labelNames: readonly string[]): Family<GaugeCell>;
  family(
    name: string,
    type: 'histogram',
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ): Family<HistogramCell>;
  family(
    name: string,
    type: FamilyType,
    help: string,
    labelNames: readonly string[],
    buckets?: readonly number[],
  ): Family {
    const existing = this.#families.get(name);
    if (existing) {
      if (existing.type !== type || existing.labelNames.slice(1).join() !== labelNames.join())
        throw new Error(
          `metric ${name} is already a ${existing.type} with labels (${existing.labelNames.join(', ')}): cannot also be a ${type} with (device, ${labelNames.join(', ')})`,
        );
      return existing;
    }
    checkNames(name, labelNames);
    const all = ['device', ...labelNames];
    let family: Family;
    if (type === 'counter') {
      const f = new Family(name, type, help, all, (labels) => new CounterCell(labels));
      publishCounter(this.prometheus, f);
      family = f;
    } else if (type === 'gauge') {
      const f = new Family(name, type, help, all, (labels) => new GaugeCell(labels));
      publishGauge(this.prometheus, f);
      family = f;
    } else {
      const bounds = Float64Array.from(buckets ?? DEFAULT_SECONDS_BUCKETS);
      for (let i = 0; i < bounds.length; i++)
        if (!Number.isFinite(bounds[i]!) || (i > 0 && bounds[i]! <= bounds[i - 1]!))
          throw new Error(`metric ${name}: buckets must be finite and increasing`);
      const f = new Family(name, type, help, all, (labels) => new HistogramCell(labels, bounds));
      publishHistogram(this.prometheus, f, bounds);
      family = f;
    }
    this.#families.set(name, family);
    return family;
  }

  /** Prometheus text exposition of everything (runs every onCollect first). */
  async text(): Promise<string> {
    for (const collect of this.#collectors) {
      try {
        collect();
      } catch (err) {
        this.#log.error({ err }, 'a metrics collector threw (its values are stale)');
      }
    }
    return this.prometheus.metrics();
  }

  /** The Content-Type of text(). */
  get contentType(): string {
    return this.prometheus.contentType;
  }
}

function noLabels(name: string): never {
  throw new Error(`metric ${name} has labels: call labels(...) and use the child`);
}
