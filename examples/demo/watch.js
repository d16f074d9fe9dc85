// The demo's client: connects to the VIP again and again (bounded: 20 connects per 100 ms, each with a
// 1 s timeout) and redraws a table of where the connections went, over the last 5 seconds and in total.
// `node watch.js <vip> <port> <seconds, 0 = until Ctrl-C> [extra command to show under the table]`
'use strict';
const net = require('node:net');
const { execFileSync } = require('node:child_process');

const [vip, port, seconds = '0', ...extra] = process.argv.slice(2);
const total = new Map();
let recent = [];
const started = Date.now();

function connectOnce() {
  return new Promise((resolve) => {
    let line = '';
    const socket = net.connect({ host: vip, port: Number(port) });
    const timer = setTimeout(() => done('timeout'), 1000);
    function done(result) {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    }
    socket.on('data', (d) => {
      line += d;
      if (line.includes('\n')) done(line.trim());
    });
    socket.on('error', (e) => done(`error ${e.code}`));
    socket.on('end', () => done(line.trim() || 'empty'));
  });
}

function bar(fraction) {
  return '#'.repeat(Math.round(fraction * 40)).padEnd(40, '.');
}

function draw() {
  const now = Date.now();
  recent = recent.filter(([t]) => now - t < 5000);
  const window = new Map();
  for (const [, name] of recent) window.set(name, (window.get(name) ?? 0) + 1);
  const names = [...new Set([...total.keys(), ...window.keys()])].sort();
  const windowSum = recent.length || 1;
  const totalSum = [...total.values()].reduce((a, b) => a + b, 0) || 1;
  const lines = [
    `sluice demo: connections to ${vip}:${port} from a client in the demo cgroup (${Math.round((now - started) / 1000)}s)`,
    '',
    `${'backend'.padEnd(22)} ${'last 5s'.padStart(8)} ${'share'.padStart(7)}  ${''.padEnd(40)} ${'total'.padStart(8)}`,
  ];
  for (const name of names) {
    const w = window.get(name) ?? 0;
    lines.push(
      `${name.padEnd(22)} ${String(w).padStart(8)} ${`${((100 * w) / windowSum).toFixed(1)}%`.padStart(7)}  ${bar(w / windowSum)} ${String(total.get(name) ?? 0).padStart(8)}`,
    );
  }
  lines.push('', `total connects: ${totalSum}`);
  if (extra.length > 0) {
    try {
      lines.push('', execFileSync(extra[0], extra.slice(1), { encoding: 'utf8', timeout: 2000 }));
    } catch (e) {
      lines.push('', `(${extra.join(' ')} failed: ${e.message.split('\n')[0]})`);
    }
  }
  process.stdout.write(`\x1b[2J\x1b[H${lines.join('\n')}\n`);
}

(async () => {
  const limit = Number(seconds) * 1000;
  let lastDraw = 0;
  while (limit === 0 || Date.now() - started < limit) {
    const batch = await Promise.all(Array.from({ length: 20 }, connectOnce));
    const t = Date.now();
    for (const name of batch) {
      total.set(name, (total.get(name) ?? 0) + 1);
      recent.push([t, name]);
    }
    if (t - lastDraw >= 1000) {
      draw();
      lastDraw = t;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  draw();
})();
