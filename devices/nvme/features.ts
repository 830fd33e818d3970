/**
 * The controller's settable features (Get/Set Features, admin.ts): one
 * plain object, replaced by a fresh one on every controller reset.
 */

/** Settable features (Get/Set Features), reset to defaults by a controller reset. */
export interface FeatureState {
  arbitration: number;
  powerState: number;
  /** Over/under temperature thresholds for sensor 0 (K). */
  overTemp: number;
  underTemp: number;
  errorRecovery: number;
  volatileWriteCache: boolean;
  /** Granted I/O queues (SQs and CQs), 1-based count; 0 until Set Features. */
  grantedQueues: number;
  /** Interrupt coalescing: threshold (0-based) and time (100 us units). */
  coalesceThreshold: number;
  coalesceTime: number;
  /** Vectors with coalescing disabled (Interrupt Vector Configuration CD). */
  coalesceDisabled: Set<number>;
  writeAtomicity: number;
  asyncEventConfig: number;
}

/** The features after a controller reset. */
export function defaultFeatures(): FeatureState {
  return {
    arbitration: 0,
    powerState: 0,
    overTemp: 0x157,
    underTemp: 0,
    errorRecovery: 0,
    volatileWriteCache: true,
    grantedQueues: 0,
    coalesceThreshold: 0,
    coalesceTime: 0,
    coalesceDisabled: new Set(),
    writeAtomicity: 0,
    asyncEventConfig: 0,
  };
}
