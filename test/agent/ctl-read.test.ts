/**
 * sluicectl's reader against maps written by the real socket-LB writer: both table layouts (weighted
 * tables with a separate member list, and equal-weight tables whose slots are the member list) must show
 * every backend of the live set as in rotation, and a draining one as out.
 */
import { join, resolve } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { readDataplane } from '../../agent/ctl/read';
import { SocketLbDatapath } from '../../agent/datapath/datapath';
import { DEFAULT_LB_SETTINGS } from '../../agent/datapath/settings';
import { createBpfDatapathWriter, lbMapSetFromPins } from '../../agent/datapath/writer-bpf';
import { type Installed, install } from '../../agent/pins';
import { bpf } from '../../native';
import { describePrivileged } from '../support/privileged';
import { createSandbox, type Sandbox } from '../support/sandbox';

const ROOT = resolve(__dirname, '../..');
const OBJECTS = ['build/bpf/sock_lb.bpf.o', 'build/bpf/sockops.bpf.o'].map((p) => ({ path: join(ROOT, p) }));

let sandbox: Sandbox | undefined;
let installed: Installed | undefined;
afterEach(async () => {
  installed?.close();
  installed = undefined;
  await sandbox?.cleanup();
  sandbox = undefined;
});

describePrivileged('sluicectl reader', () => {
  it('shows the live members of weighted and equal-weight services, and draining ones as out', async () => {
    sandbox = createSandbox('ctl-read');
    installed = install(bpf, {
      bpffsDir: sandbox.bpffsDir,
      cgroupPath: sandbox.cgroupPath,
      objects: OBJECTS,
    });
    const settings = DEFAULT_LB_SETTINGS;
    const datapath = new SocketLbDatapath(
      createBpfDatapathWriter(lbMapSetFromPins(bpf, join(sandbox.bpffsDir, 'maps')), settings),
      settings,
    );
    await datapath.sync([
      {
        name: 'weighted',
        vip: '10.96.0.10',
        port: 80,
        algorithm: 'weighted',
        backends: [
          { address: '10.0.1.1', port: 8080, weight: 3 },
          { address: '10.0.1.2', port: 8080, weight: 1 },
        ],
      },
      {
        name: 'equal',
        vip: '10.96.0.11',
        port: 80,
        algorithm: 'random',
        backends: [
          { address: '10.0.2.1', port: 8080 },
          { address: '10.0.2.2', port: 8080 },
          { address: '10.0.2.3', port: 8080, state: 'draining' },
        ],
      },
    ]);

    const view = readDataplane(bpf, sandbox.bpffsDir);
    const rotation = Object.fromEntries(
      view.services.flatMap((s) => s.backends.map((b) => [`${s.vip}>${b.address}`, b.rotation])),
    );
    expect(rotation).toEqual({
      '10.96.0.10>10.0.1.1': 'in-rotation',
      '10.96.0.10>10.0.1.2': 'in-rotation',
      '10.96.0.11>10.0.2.1': 'in-rotation',
      '10.96.0.11>10.0.2.2': 'in-rotation',
      '10.96.0.11>10.0.2.3': 'out',
    });
  });
});
