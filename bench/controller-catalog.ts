/** Generates the benchmark's catalog: `services` services over `nodes` nodes (shared by bench/controller.ts). */
export function benchCatalog(
  services: number,
  nodes: number,
  bump: ReadonlyMap<number, number> = new Map(),
): object {
  return {
    domain: 'mesh.local',
    services: Array.from({ length: services }, (_, i) => {
      const a = i % nodes;
      const b = (i + 1) % nodes;
      return {
        name: `svc-${i}`,
        namespace: `ns-${i % 50}`,
        vip: `10.${96 + Math.floor(i / 65_025)}.${Math.floor(i / 255) % 255}.${(i % 255) + 1}`,
        ports: [{ name: 'http', port: 80, targetPort: 8080 }],
        healthCheck: { protocol: 'tcp', interval: '2s', timeout: '1s' },
        backends: [
          {
            address: `10.1.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`,
            node: `node-${a}`,
            weight: bump.get(i) ?? 1,
          },
          { address: `10.2.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`, node: `node-${b}`, weight: 1 },
        ],
      };
    }),
  };
}
