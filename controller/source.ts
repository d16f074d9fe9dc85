import type { Catalog, CatalogError } from './catalog/types';

/**
 * Where the catalog comes from. The controller starts a source once and gets every new valid catalog and
 * every invalid one (with its errors); an invalid catalog never replaces the last good one.
 * Implementations: FileCatalogSource (source-file.ts); a Kubernetes source later.
 */
export interface CatalogSource {
  /** Human-readable origin, e.g. the file path. */
  readonly description: string;
  /**
   * Loads the initial catalog and starts watching. Resolves once the first load is done (valid or not);
   * later changes are delivered through the listener until stop().
   */
  start(listener: CatalogSourceListener): Promise<void>;
  stop(): Promise<void>;
  /** The latest load's state. */
  status(): CatalogSourceStatus;
}

export interface CatalogSourceListener {
  onCatalog(catalog: Catalog): void;
  onInvalid(errors: readonly CatalogError[]): void;
}

export interface CatalogSourceStatus {
  readonly description: string;
  /** Errors of the newest content; empty when it is valid. */
  readonly errors: readonly CatalogError[];
  /** Loads attempted (valid or not). */
  readonly loads: number;
  /** Epoch milliseconds of the last valid load, null before the first. */
  readonly lastGoodAt: number | null;
}
