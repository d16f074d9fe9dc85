/** The catalog file format: model types, parsing and validation. Reused by the agent's standalone mode. */
export { ipFamily, isUnspecified, normaliseIp } from './address';
export { CATALOG_DEFAULTS } from './defaults';
export { formatDuration, parseDuration } from './duration';
export { CatalogParseCache, deepFreeze, formatCatalogError, formatPath, parseCatalog } from './parse';
export * from './types';
