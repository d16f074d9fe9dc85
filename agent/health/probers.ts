/** The default prober for each protocol. */
import { GrpcProber } from './probe-grpc';
import { HttpProber } from './probe-http';
import { TcpProber } from './probe-tcp';
import type { Probers } from './types';

export function defaultProbers(): Probers {
  return { tcp: new TcpProber(), http: new HttpProber(), grpc: new GrpcProber() };
}
