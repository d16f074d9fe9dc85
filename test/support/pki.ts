/**
 * A throwaway PKI made with the openssl CLI in a directory the caller owns: the cluster CA with a
 * controller certificate for 127.0.0.1/localhost and a client certificate for node-a, and a rogue CA with
 * its own client ("intruder") and server ("impostor") certificates, for the refusal cases.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Pki {
  /** The path of `name` (e.g. `sluice-ca.crt`, `node-a.key`) in the PKI directory. */
  file(name: string): string;
  /** The agent's --tls-* flags for a client `name` trusting `ca`. */
  agentFlags(name: string, ca?: string): string[];
  /** The controller's --tls-* flags. */
  controllerFlags(): string[];
}

export function makePki(dir: string): Pki {
  const run = (...args: string[]) =>
    execFileSync('openssl', args, { cwd: dir, stdio: 'pipe', timeout: 20_000 });
  const key = (name: string) => [
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
  ];
  const ca = (name: string) =>
    run('req', '-x509', ...key(name), '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`);
  const leaf = (name: string, caName: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    run('req', ...key(name), '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    run(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${caName}.crt`,
      '-CAkey',
      `${caName}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  };
  const server = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n';
  ca('sluice-ca');
  ca('rogue-ca');
  leaf('controller', 'sluice-ca', server);
  leaf('node-a', 'sluice-ca', 'extendedKeyUsage=clientAuth\n');
  leaf('intruder', 'rogue-ca', 'extendedKeyUsage=clientAuth\n');
  leaf('impostor', 'rogue-ca', server);
  const file = (name: string) => join(dir, name);
  return {
    file,
    agentFlags: (name, caName = 'sluice-ca') => [
      '--tls-cert',
      file(`${name}.crt`),
      '--tls-key',
      file(`${name}.key`),
      '--tls-ca',
      file(`${caName}.crt`),
    ],
    controllerFlags: () => [
      '--tls-cert',
      file('controller.crt'),
      '--tls-key',
      file('controller.key'),
      '--tls-ca',
      file('sluice-ca.crt'),
    ],
  };
}
