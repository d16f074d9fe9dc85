/** Every default of the catalog file format, in one place. */
export const CATALOG_DEFAULTS = Object.freeze({
  domain: 'mesh.local',
  namespace: 'default',
  protocol: 'TCP',
  algorithm: 'weighted',
  affinity: Object.freeze({ mode: 'none', timeout: '3h' }),
  trafficDistribution: 'any',
  backendWeight: 1,
  healthCheck: Object.freeze({
    path: '/',
    service: '',
    interval: '5s',
    timeout: '1s',
    healthyThreshold: 2,
    unhealthyThreshold: 3,
    expectedStatus: '200-399',
  }),
  outlierDetection: Object.freeze({
    consecutiveFailures: 5,
    baseEjectionTime: '30s',
    maxEjectionPercent: 50,
  }),
} as const);
