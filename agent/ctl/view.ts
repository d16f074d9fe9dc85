/**
 * What sluicectl shows: the data plane as decoded from the pinned maps (see read.ts), as plain data that
 * renders to tables (render.ts) or to JSON. Nothing here comes from the agent process, so it is what the
 * kernel really does, whether the agent is running or not.
 */

export type BackendStateName = 'active' | 'draining' | 'unknown';

export interface BackendView {
  readonly id: number;
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** lb_backend.state: 'active' is selectable, 'draining' keeps existing sockets only. */
  readonly state: BackendStateName;
  /** The backend runs on this node. */
  readonly local: boolean;
  /**
   * Health as the data plane expresses it: 'in-rotation' when the backend is a member of its service's
   * live selection table, 'out' when it is not (taken out by active health checks, locality or weight 0).
   */
  readonly rotation: 'in-rotation' | 'out';
  /** Passive ejection: ejected now, with the remaining time, and failures since the last success. */
  readonly ejected: boolean;
  readonly ejectedForMs: number;
  readonly consecutiveFailures: number;
  readonly consecutiveEjections: number;
  readonly activeConnections: number;
  readonly connects: number;
  readonly connectFailures: number;
  readonly ejections: number;
}

export interface ServiceView {
  readonly id: number;
  readonly vip: string;
  readonly port: number;
  readonly protocol: 'TCP' | 'UDP' | string;
  readonly algorithm: string;
  readonly affinity: boolean;
  readonly affinityTimeoutS: number;
  readonly ejectThreshold: number;
  readonly ejectBaseMs: number;
  readonly maxEjectPercent: number;
  /** Slots in the live half of the selection table (0: connects fail fast). */
  readonly slots: number;
  readonly connects: number;
  readonly connectFailures: number;
  readonly noBackend: number;
  readonly ejections: number;
  readonly backends: readonly BackendView[];
}

export interface MapView {
  readonly name: string;
  readonly pin: string;
  readonly type: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  /** Entries present now (hash maps); null for preallocated arrays and socket storage. */
  readonly entries: number | null;
}

export interface LinkView {
  /** `cgroup <id>` (socket-LB, sockops, fast path) or `interface <name>` (the XDP load balancer). */
  readonly attachedTo: string;
  readonly object: string;
  readonly program: string;
  readonly pin: string;
}

export interface DataplaneView {
  readonly bpffs: string;
  readonly services: readonly ServiceView[];
  readonly maps: readonly MapView[];
  readonly links: readonly LinkView[];
}
