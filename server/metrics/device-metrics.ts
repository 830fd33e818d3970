/**
 * The metrics API a device sees (`DeviceContext.metrics`, or
 * `registry.device(name)`): counters, gauges and histograms that carry the
 * device's name as their `device` label, served as Prometheus text by
 * `vfio-user-ts serve --metrics HOST:PORT` (docs/writing-a-device.md §12).
 *
 * Made for hot paths: take a child once (`labels(...)`, or the metric itself
 * when it has no labels) and keep it; a child's inc/set/observe is a few
 * arithmetic operations on numbers it owns, with no allocation, no hashing
 * and no clock. Prometheus reads them when it scrapes. With metrics off the
 * device gets NO_METRICS, whose children do nothing at all.
 *
 * ```ts
 * const resets = ctx.metrics.counter('my_device_resets_total', 'Device resets', ['reason']);
 * const byClient = resets.labels('client');          // keep it
 * byClient.inc();
 * const latency = ctx.metrics.histogram('my_device_op_seconds', 'Time per operation', { buckets: [1e-5, 1e-4, 1e-3] });
 * latency.observe(0.00042);
 * ```
 */

/** A count that only goes up. */
export interface CounterChild {
  /** Add `value` (default 1; must be >= 0, else ignored). */
  inc(value?: number): void;
}

/** A value that goes up and down. */
export interface GaugeChild {
  set(value: number): void;
  inc(value?: number): void;
  dec(value?: number): void;
}

/** A distribution: counts per bucket, their sum and count. */
export interface HistogramChild {
  observe(value: number): void;
}

/** A metric family: one child per combination of label values. */
export interface LabeledMetric<Child> {
  /**
   * The child for these label values, in the order of `labelNames` (created
   * once, then returned from a cache: call it at setup, not per event).
   */
  labels(...values: string[]): Child;
}

export type CounterMetric = LabeledMetric<CounterChild> & CounterChild;
export type GaugeMetric = LabeledMetric<GaugeChild> & GaugeChild;
export type HistogramMetric = LabeledMetric<HistogramChild> & HistogramChild;

export interface HistogramOptions {
  /** Upper bounds, increasing (`+Inf` is added). Default: 5 µs to 10 s, for durations in seconds. */
  buckets?: readonly number[];
  labelNames?: readonly string[];
}

/**
 * A device's metrics. Names follow Prometheus' rules (`[a-zA-Z_:][a-zA-Z0-9_:]*`;
 * end counters in `_total`, units in the name: `_seconds`, `_bytes`); prefix
 * them with your device's kind. The `device` label is added for you (do not
 * declare it). Two devices asking for the same name share the family; its
 * type, help and labels must then match (else the call throws).
 */
export interface DeviceMetrics {
  /** False for NO_METRICS: skip work whose only use is metrics (reading a clock, say). */
  readonly enabled: boolean;
  /** The device's name (the `device` label). */
  readonly device: string;
  counter(name: string, help: string, labelNames?: readonly string[]): CounterMetric;
  gauge(name: string, help: string, labelNames?: readonly string[]): GaugeMetric;
  histogram(name: string, help: string, options?: HistogramOptions): HistogramMetric;
  /**
   * Run `collect` before every scrape (set gauges from the device's state
   * there, instead of on every change). Returns a function that removes it.
   */
  onCollect(collect: () => void): () => void;
}

/** Durations in seconds, 5 µs to 10 s: NVMe commands, register handlers, requests. */
export const DEFAULT_SECONDS_BUCKETS: readonly number[] = [
  5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

const noop = (): void => {};
const NO_CHILD = { inc: noop, dec: noop, set: noop, observe: noop, labels: () => NO_CHILD };

/** The metrics of a device when nobody collects them: every call does nothing. */
export function noMetrics(device = ''): DeviceMetrics {
  return {
    enabled: false,
    device,
    counter: () => NO_CHILD,
    gauge: () => NO_CHILD,
    histogram: () => NO_CHILD,
    onCollect: () => noop,
  };
}

/** Shared no-op metrics (for a device built without a registry). */
export const NO_METRICS: DeviceMetrics = noMetrics();
