/**
 * Metric families as a MetricsRegistry keeps them: plain numbers per child,
 * written on the hot path, published to prom-client only when Prometheus
 * scrapes (prom-client's own inc/observe hash the labels and allocate on
 * every call, which an NVMe command or a doorbell message cannot afford).
 * Counters and gauges are prom-client Counter/Gauge whose `collect` copies
 * the children in; a histogram is published as precomputed buckets.
 */
import { Counter, Gauge, validateMetricName, type Registry } from 'prom-client';
import type { CounterChild, GaugeChild, HistogramChild } from './device-metrics.js';

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export type FamilyType = 'counter' | 'gauge' | 'histogram';

/** A counter child; `value` is also written directly for counts pulled from elsewhere at scrape time. */
export class CounterCell implements CounterChild {
  value = 0;
  constructor(readonly labels: Readonly<Record<string, string>>) {}
  inc(value = 1): void {
    if (value >= 0) this.value += value;
  }
}

export class GaugeCell implements GaugeChild {
  value = 0;
  constructor(readonly labels: Readonly<Record<string, string>>) {}
  set(value: number): void {
    this.value = value;
  }
  inc(value = 1): void {
    this.value += value;
  }
  dec(value = 1): void {
    this.value -= value;
  }
}

export class HistogramCell implements HistogramChild {
  /** counts[i]: observations <= bounds[i] and > bounds[i - 1]; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: Float64Array,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(value: number): void {
    if (value !== value) return; // NaN
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

type Cell = CounterCell | GaugeCell | HistogramCell;

/** One metric name: its children keyed by label values (`device` first). */
export class Family<C extends Cell = Cell> {
  readonly #cells = new Map<string, C>();
  readonly #make: (labels: Record<string, string>) => C;

  constructor(
    readonly name: string,
    readonly type: FamilyType,
    readonly help: string,
    readonly labelNames: readonly string[],
    make: (labels: Record<string, string>) => C,
  ) {
    this.#make = make;
  }

  /** The child for `values` (one per label name, in order), created on first use. */
  cell(values: readonly string[]): C {
    if (values.length !== this.labelNames.length) {
      throw new Error(
        `metric ${this.name}: ${values.length - 1} label value(s) for labels (${this.labelNames.slice(1).join(', ')})`,
      );
    }
    const key = values.join('\u0001');
    let cell = this.#cells.get(key);
    if (cell === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => (labels[n] = String(values[i])));
      cell = this.#make(labels);
      this.#cells.set(key, cell);
    }
    return cell;
  }

  get cells(): IterableIterator<C> {
    return this.#cells.values();
  }
}

/** Check a metric name and its label names (the `device` label is ours). */
export function checkNames(name: string, labelNames: readonly string[]): void {
  if (!validateMetricName(name)) throw new Error(`metric name ${JSON.stringify(name)} is not a Prometheus name`);
  for (const l of labelNames) {
    if (!LABEL_NAME.test(l) || l.startsWith('__') || l === 'le')
      throw new Error(`metric ${name}: label name ${JSON.stringify(l)} is not allowed`);
    if (l === 'device') throw new Error(`metric ${name}: the "device" label is added for you`);
  }
  if (new Set(labelNames).size !== labelNames.length) throw new Error(`metric ${name}: a label name repeats`);
}

/** Publish a counter family through a prom-client Counter. */
export function publishCounter(registry: Registry, family: Family<CounterCell>): void {
  const metric: Counter = new Counter({
    name: family.name,
    help: family.help,
    labelNames: family.labelNames,
    registers: [registry],
    collect: () => {
      metric.reset();
      for (const c of family.cells) metric.inc(c.labels, c.value);
    },
  });
}

/** Publish a gauge family through a prom-client Gauge. */
export function publishGauge(registry: Registry, family: Family<GaugeCell>): void {
  const metric: Gauge = new Gauge({
    name: family.name,
    help: family.help,
    labelNames: family.labelNames,
    registers: [registry],
    collect: () => {
      metric.reset();
      for (const c of family.cells) metric.set(c.labels, c.value);
    },
  });
}

interface PublishedValue {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/**
 * Publish a histogram family: prom-client's registry formats any metric whose
 * get() returns its values (Registry.getMetricsAsString), so the buckets
 * counted here go out as they are, in the Prometheus histogram layout
 * (`_bucket{le}` cumulative, `_sum`, `_count`).
 */
export function publishHistogram(registry: Registry, family: Family<HistogramCell>, bounds: Float64Array): void {
  const metric = {
    name: family.name,
    help: family.help,
    type: 'histogram',
    aggregator: 'sum',
    get: () => {
      const values: PublishedValue[] = [];
      for (const c of family.cells) {
        let cumulative = 0;
        for (let i = 0; i < bounds.length; i++) {
          cumulative += c.counts[i]!;
          values.push({
            metricName: `${family.name}_bucket`,
            labels: { ...c.labels, le: bounds[i]! },
            value: cumulative,
          });
        }
        values.push({ metricName: `${family.name}_bucket`, labels: { ...c.labels, le: '+Inf' }, value: c.count });
        values.push({ metricName: `${family.name}_sum`, labels: c.labels, value: c.sum });
        values.push({ metricName: `${family.name}_count`, labels: c.labels, value: c.count });
      }
      return Promise.resolve({ name: family.name, help: family.help, type: 'histogram', values, aggregator: 'sum' });
    },
    reset: () => {},
  };
  registry.registerMetric(metric as unknown as Counter);
}
