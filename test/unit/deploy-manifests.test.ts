/**
 * The deployment files are code too: these checks parse the Kubernetes manifests, the systemd units and the
 * Dockerfile, and hold them to what the agent needs to work on a node (host network, BPF capabilities, the
 * host's bpffs and cgroup v2 root) and to what the agent's own flag parser accepts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadAgentConfig } from '../../agent/config';
import { parseControllerArgs } from '../../controller/main';

const ROOT = resolve(__dirname, '../..');
const K8S = join(ROOT, 'deploy/kubernetes');

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are free-form; each check narrows what it reads
  spec?: any;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  [key: string]: any;
}

function loadManifests(): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const file of readdirSync(K8S).filter((f) => f.endsWith('.yaml'))) {
    for (const doc of parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const value = doc.toJS() as K8sObject | null;
      if (value) objects.push(value);
    }
  }
  return objects;
}

const objects = loadManifests();
const find = (kind: string, name: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in deploy/kubernetes`);
  return found;
};

/** Expands $(VAR) references the way the kubelet does for container args. */
function expandArgs(args: string[], env: Record<string, string>): string[] {
  return args.map((arg) => arg.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (_, name: string) => env[name] ?? ''));
}

describe('Kubernetes manifests', () => {
  const daemonSet = find('DaemonSet', 'sluice-agent');
  const pod = daemonSet.spec.template.spec;
  const agent = pod.containers.find((c: { name: string }) => c.name === 'agent');

  it('every object has a kind, a name, and a namespace unless cluster-scoped', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
    for (const object of objects) {
      expect(object.apiVersion, `${object.kind} ${object.metadata?.name}`).toBeTruthy();
      expect(object.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      if (!clusterScoped.has(object.kind)) expect(object.metadata.namespace).toBe('sluice-system');
    }
    expect(find('Namespace', 'sluice-system')).toBeDefined();
  });

  it('runs the agent on the host network with the BPF capabilities', () => {
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    const security = agent.securityContext;
    const caps: string[] = security.capabilities?.add ?? [];
    const privileged = security.privileged === true;
    const capable = ['BPF', 'NET_ADMIN', 'SYS_ADMIN'].every((cap) => caps.includes(cap));
    expect(privileged || capable).toBe(true);
    // Bidirectional propagation (pins visible on the host, surviving the pod) is only allowed privileged.
    const bpffsMount = agent.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/sys/fs/bpf');
    if (bpffsMount?.mountPropagation === 'Bidirectional') expect(privileged).toBe(true);
  });

  it("mounts the host's bpffs and cgroup v2 root where the agent's flags point", () => {
    const volumes = new Map<string, { hostPath?: { path: string } }>(
      pod.volumes.map((v: { name: string }) => [v.name, v]),
    );
    const hostPathAt = (mountPath: string): string | undefined => {
      const mount = agent.volumeMounts.find((m: { mountPath: string }) =>
        mountCovers(m.mountPath, mountPath),
      );
      return mount ? volumes.get(mount.name)?.hostPath?.path : undefined;
    };
    const env = Object.fromEntries(
      agent.env.map((e: { name: string }) => [e.name, `value-of-${e.name.toLowerCase().replace(/_/g, '-')}`]),
    );
    const config = loadAgentConfig(expandArgs(agent.args, env), {
      readMounts: () => '',
      hostname: () => 'unused',
    });
    expect(config.command).toBe('run');
    if (config.command !== 'run') return;
    expect(config.mode).toBe('controller');
    expect(config.node).toBe('value-of-node-name');
    expect(agent.env.find((e: { name: string }) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath).toBe(
      'spec.nodeName',
    );
    expect(hostPathAt(config.bpffs)).toBe('/sys/fs/bpf');
    expect(hostPathAt(config.cgroup)).toBe('/sys/fs/cgroup');
    // The metrics port the scrape annotation names is the one the agent listens on.
    expect(Number(daemonSet.spec.template.metadata.annotations['prometheus.io/port'])).toBe(
      config.metrics?.port,
    );
  });

  it('points the agent at the controller Service and port', () => {
    const config = loadAgentConfig(expandArgs(agent.args, { NODE_NAME: 'n' }), {
      readMounts: () => '',
      hostname: () => 'unused',
    });
    if (config.command !== 'run') throw new Error('agent args are not a run command');
    const service = find('Service', 'sluice-controller');
    expect(config.controller?.host).toBe(`${service.metadata.name}.${service.metadata.namespace}.svc`);
    expect(service.spec.ports.map((p: { port: number }) => p.port)).toContain(config.controller?.port);
    const deployment = find('Deployment', 'sluice-controller');
    expect(Object.keys(service.spec.selector).length).toBeGreaterThan(0);
    for (const [key, value] of Object.entries(service.spec.selector)) {
      expect(deployment.spec.template.metadata.labels[key]).toBe(value);
    }
  });

  it('gives each workload a ServiceAccount that exists, and binds the controller role to it', () => {
    for (const [kind, name] of [
      ['DaemonSet', 'sluice-agent'],
      ['Deployment', 'sluice-controller'],
    ] as const) {
      const account = find(kind, name).spec.template.spec.serviceAccountName;
      expect(find('ServiceAccount', account).metadata.namespace).toBe('sluice-system');
    }
    const binding = find('ClusterRoleBinding', 'sluice-controller');
    expect(find('ClusterRole', binding.roleRef.name)).toBeDefined();
    expect(binding.subjects).toContainEqual({
      kind: 'ServiceAccount',
      name: 'sluice-controller',
      namespace: 'sluice-system',
    });
    // The agent needs no API access: its token is not even mounted.
    expect(find('ServiceAccount', 'sluice-agent').automountServiceAccountToken).toBe(false);
  });

  it('mounts the catalog ConfigMap where the controller reads it', () => {
    const deployment = find('Deployment', 'sluice-controller');
    const container = deployment.spec.template.spec.containers[0];
    const configPath: string = container.args[container.args.indexOf('--config') + 1];
    const mount = container.volumeMounts.find((m: { mountPath: string }) =>
      mountCovers(m.mountPath, configPath),
    );
    const volume = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === mount.name);
    const configMap = find('ConfigMap', volume.configMap.name);
    expect(Object.keys(configMap.data)).toContain(configPath.slice(mount.mountPath.length + 1));
  });
});

describe('Kubernetes manifests: mTLS and the agent state', () => {
  const agentPod = find('DaemonSet', 'sluice-agent').spec.template.spec;
  const agent = agentPod.containers.find((c: { name: string }) => c.name === 'agent');
  const controllerPod = find('Deployment', 'sluice-controller').spec.template.spec;
  const controller = controllerPod.containers[0];
  const agentConfig = () => {
    const config = loadAgentConfig(expandArgs(agent.args, { NODE_NAME: 'n' }), {
      readMounts: () => '',
      hostname: () => 'unused',
    });
    if (config.command !== 'run') throw new Error('agent args are not a run command');
    return config;
  };
  /** The volume mounted over `path` in a container of `pod`. */
  // biome-ignore lint/suspicious/noExplicitAny: manifests are free-form
  const volumeAt = (pod: any, container: any, path: string) => {
    const mount = container.volumeMounts.find((m: { mountPath: string }) => mountCovers(m.mountPath, path));
    if (!mount) throw new Error(`nothing mounted over ${path}`);
    return pod.volumes.find((v: { name: string }) => v.name === mount.name);
  };

  it('runs the agent with mTLS files from a Secret, not plaintext with --insecure', () => {
    const config = agentConfig();
    expect(config.insecure).toBe(false);
    expect(config.tls).toBeDefined();
    const secrets = new Set<string>();
    for (const file of Object.values(config.tls ?? {})) {
      const volume = volumeAt(agentPod, agent, file);
      expect(volume.secret?.secretName, file).toBeTruthy();
      secrets.add(volume.secret.secretName);
    }
    expect([...secrets]).toEqual(['sluice-agent-tls']);
  });

  it('serves the controller over mTLS with files from a Secret that its user can read', () => {
    const args = parseControllerArgs(controller.args);
    expect(args.insecure).toBe(false);
    expect(args.tls).not.toBeNull();
    for (const file of Object.values(args.tls ?? {})) {
      const volume = volumeAt(controllerPod, controller, file);
      expect(volume.secret?.secretName, file).toBe('sluice-controller-tls');
      // Owned by root and readable by the group: the pod's fsGroup must be the non-root user's group.
      if ((volume.secret.defaultMode & 0o004) === 0) {
        expect(controllerPod.securityContext.fsGroup).toBe(controllerPod.securityContext.runAsUser);
      }
    }
    // The kubelet's gRPC probe cannot speak TLS: the probes must use the HTTP side the controller serves.
    for (const probe of [controller.readinessProbe, controller.livenessProbe]) {
      expect(probe.grpc).toBeUndefined();
      expect(probe.httpGet.path).toBe('/healthz');
      const port = controller.ports.find((p: { name: string }) => p.name === probe.httpGet.port);
      expect(args.metrics).toBe(`0.0.0.0:${port.containerPort}`);
    }
  });

  it("keeps the agent's state directory on the host, so it outlives the pod", () => {
    const config = agentConfig();
    const volume = volumeAt(agentPod, agent, config.stateDir);
    expect(volume.hostPath?.path).toBe(config.stateDir);
  });
});

function mountCovers(mountPath: string, path: string): boolean {
  return path === mountPath || path.startsWith(`${mountPath}/`);
}

describe('systemd units and image', () => {
  const unit = (name: string) => readFileSync(join(ROOT, 'deploy/systemd', name), 'utf8');
  const execStart = (text: string): string[] => {
    const line = text.split('\n').find((l) => l.startsWith('ExecStart='));
    if (!line) throw new Error('no ExecStart');
    return line.slice('ExecStart='.length).trim().split(/\s+/);
  };

  it('starts the agent with flags its parser accepts, and never uninstalls on stop', () => {
    const text = unit('sluice-agent.service');
    const [binary, ...args] = execStart(text);
    expect(binary).toBe('/opt/sluice/bin/sluice-agent');
    const config = loadAgentConfig(
      args.map((a) => (a === '%H' ? 'node-a' : a)),
      {
        readMounts: () => 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n',
        hostname: () => 'unused',
      },
    );
    expect(config.command).toBe('run');
    expect(text).not.toMatch(/ExecStop.*uninstall/);
    expect(text).toMatch(/LimitMEMLOCK=infinity/);
    // systemd creates /var/lib/<StateDirectory> for the persisted catalog.
    const stateDirectory = text.match(/^StateDirectory=(\S+)$/m)?.[1];
    if (config.command === 'run') expect(config.stateDir).toBe(`/var/lib/${stateDirectory}`);
  });

  it('points the agent at the address the controller unit listens on', () => {
    const controllerArgs = execStart(unit('sluice-controller.service'));
    const listen = controllerArgs[controllerArgs.indexOf('--listen') + 1];
    const agentArgs = execStart(unit('sluice-agent.service'));
    expect(agentArgs[agentArgs.indexOf('--controller') + 1]).toBe(listen);
  });

  it('builds an image that contains what the bin shims load', () => {
    const dockerfile = readFileSync(join(ROOT, 'deploy/Dockerfile'), 'utf8');
    for (const path of ['dist', 'bin', 'build/bpf', 'native/build/Release/sluice_bpf.node', 'node_modules']) {
      expect(dockerfile).toMatch(new RegExp(`COPY --from=build /src/${path.replace(/\./g, '\\.')} `));
    }
    const entry = dockerfile.match(/ENTRYPOINT \["([^"]+)"\]/)?.[1];
    expect(entry).toBe('/opt/sluice/bin/sluice-agent');
    const shim = readFileSync(join(ROOT, 'bin/sluice-agent'), 'utf8');
    expect(shim).toContain("require('../dist/agent/main.js')");
  });
});
