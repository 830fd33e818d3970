/** Prometheus metrics: the registry, a device's metrics API, the HTTP endpoint. */
export {
  DEFAULT_SECONDS_BUCKETS,
  NO_METRICS,
  noMetrics,
  type CounterChild,
  type CounterMetric,
  type DeviceMetrics,
  type GaugeChild,
  type GaugeMetric,
  type HistogramChild,
  type HistogramMetric,
  type HistogramOptions,
  type LabeledMetric,
} from './device-metrics.js';
export { EndpointMetrics } from './endpoint-metrics.js';
export { serveMetrics, type MetricsHttpOptions, type MetricsHttpServer } from './http.js';
export { MetricsRegistry, type MetricsRegistryOptions } from './registry.js';
