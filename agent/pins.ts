/**
 * The agent's pins under its bpffs directory (default /sys/fs/bpf/sluice), and the install / adopt /
 * uninstall life cycle built on them.
 *
 *   <bpffs>/maps/<map>                          maps (LIBBPF_PIN_BY_NAME pin root: sluice_services_v1, ...)
 *   <bpffs>/links/cg-<cgroup id>/<obj>/<prog>   one bpf_link per attached program, per cgroup (an sk_msg
 *                                               program on a sockmap of the object included: ObjectSpec.sockmaps)
 *   <bpffs>/progs/<obj>/<prog>                  the programs currently behind those links
 *
 * A cgroup's id is the inode number of its cgroup v2 directory, so links made for one cgroup are never
 * mistaken for another's, and `uninstall --cgroup PATH` touches only that cgroup's links.
 *
 * Adopt on restart: the object is loaded fresh with the maps' pin root, so libbpf reuses the pinned maps
 * (their contents untouched); each pinned link is reopened and bpf_link_update()d to the fresh program, so
 * the hook is never detached and connects keep being translated during the restart. SIGTERM closes only
 * the agent's fds: pins keep programs, links and maps alive, and the data plane keeps working without the
 * agent. Only uninstall() detaches.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { BpfLink, BpfMap, BpfObject, BpfProgram, NativeBpf, OpenObjectOptions } from '../native/types';

export const DEFAULT_BPFFS_DIR = '/sys/fs/bpf/sluice';

/** Where everything lives under one agent's bpffs directory. Pure: no file system access. */
export interface PinLayout {
  readonly root: string;
  readonly mapsDir: string;
  readonly linksDir: string;
  readonly progsDir: string;
  mapPin(map: string): string;
  /** Directory of the links made for one cgroup (by cgroup id). */
  cgroupLinksDir(cgroupId: bigint | number): string;
  /** Directory of the links made for one network interface (the XDP load balancer's). */
  interfaceLinksDir(ifname: string): string;
  linkPin(cgroupId: bigint | number, object: string, program: string): string;
  programPin(object: string, program: string): string;
}

const CGROUP_PREFIX = 'cg-';
const INTERFACE_PREFIX = 'if-';

/** What a directory under links/ holds links for: a cgroup (by id) or a network interface (by name). */
export function linksOwner(entry: string): { kind: 'cgroup' | 'interface'; name: string } {
  return entry.startsWith(INTERFACE_PREFIX)
    ? { kind: 'interface', name: entry.slice(INTERFACE_PREFIX.length) }
    : { kind: 'cgroup', name: entry.replace(CGROUP_PREFIX, '') };
}

export function pinLayout(root: string): PinLayout {
  const mapsDir = join(root, 'maps');
  const linksDir = join(root, 'links');
  const progsDir = join(root, 'progs');
  const cgroupLinksDir = (id: bigint | number) => join(linksDir, `${CGROUP_PREFIX}${id}`);
  return {
    root,
    mapsDir,
    linksDir,
    progsDir,
    mapPin: (map) => join(mapsDir, map),
    cgroupLinksDir,
    interfaceLinksDir: (ifname) => join(linksDir, `${INTERFACE_PREFIX}${ifname}`),
    linkPin: (id, object, program) => join(cgroupLinksDir(id), object, program),
    programPin: (object, program) => join(progsDir, object, program),
  };
}

/** The object name used in pin paths: build/bpf/sock_lb.bpf.o → sock_lb. */
export function objectName(path: string): string {
  return basename(path)
    .replace(/\.bpf\.o$/, '')
    .replace(/\.o$/, '');
}

/** The cgroup v2 id of a cgroup directory (its inode number), as the kernel reports it in link info. */
export function cgroupId(cgroupPath: string): bigint {
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(cgroupPath, { bigint: true });
  } catch (error) {
    throw new PinError('ERR_CGROUP', `cgroup: ${cgroupPath}: ${(error as Error).message}`);
  }
  if (!stat.isDirectory()) throw new PinError('ERR_CGROUP', `cgroup: ${cgroupPath}: not a directory`);
  return stat.ino;
}

export class PinError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'PinError';
  }
}

/** Program types attached to a cgroup by attachCgroup (the section gives the attach type). */
export function isCgroupProgramType(type: string): boolean {
  return type.startsWith('cgroup') || type === 'sock_ops';
}

export interface ObjectSpec {
  /** path of the compiled object, e.g. build/bpf/sock_lb.bpf.o */
  readonly path: string;
  /** load options (globals, capacities, programs to skip); the pin root is set by install(). */
  readonly options?: Omit<OpenObjectOptions, 'pinRoot'>;
  /**
   * sk_msg / sk_skb programs to attach to a sockmap or sockhash of the same object: program name → map
   * name. Their links are pinned, adopted and uninstalled like the object's cgroup links.
   */
  readonly sockmaps?: Readonly<Record<string, string>>;
  /** Runs once the object is loaded, before any of its programs is attached or swapped in (migrations). */
  readonly prepare?: (object: BpfObject) => void;
}

export type LinkAction = 'attached' | 'adopted' | 'replaced' | 'removed-stale';

export interface LinkEvent {
  readonly object: string;
  readonly program: string;
  readonly section: string;
  readonly action: LinkAction;
  readonly pin: string;
}

export interface Installed {
  readonly layout: PinLayout;
  readonly cgroupPath: string;
  readonly cgroupId: bigint;
  readonly objects: readonly BpfObject[];
  readonly events: readonly LinkEvent[];
  /** true when at least one link already existed: the agent restarted on top of a live data plane. */
  readonly adopted: boolean;
  /** A map by name from any loaded object (maps pinned by name are shared between objects). */
  map(name: string): BpfMap;
  /** Closes the agent's fds only; pins keep the data plane in place (what SIGTERM does). */
  close(): void;
}

function ensureDir(path: string): void {
  mkdirSync(path, { recursive: true });
}

function removePin(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

function safeProgramInfo(program: BpfProgram): { type: string; section: string } {
  const info = program.info();
  return { type: info.type, section: info.section };
}

function isNotALink(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  return e?.code === 'EINVAL' && /not a link/.test(e.message ?? '');
}

/**
 * Puts `program` behind the link pinned at `linkPath`: bpf_link_update on the reopened link. When the
 * addon cannot reopen the pin as a link (it rejects the fd of a reopened pin), make-before-break
 * instead: attach the program through a new link, then detach the old one and pin the new one in its
 * place. For the short overlap both programs run; the socket-LB hooks are idempotent (a translated
 * address is no longer a VIP), so connects never see a gap.
 */
function adoptLink(
  bpf: NativeBpf,
  linkPath: string,
  program: BpfProgram,
  attach: () => BpfLink,
  breakBeforeMake: boolean,
): { link: BpfLink; action: LinkAction } {
  try {
    const link = bpf.openPinnedLink(linkPath);
    link.update(program);
    return { link, action: 'adopted' };
  } catch (error) {
    if (!isNotALink(error)) throw error;
  }
  if (breakBeforeMake) {
    // A sockmap takes one verdict program: the old link goes first. Sockets already in the map keep the
    // program their psock took; only sockets joining in the gap miss it (they take the normal path).
    detachPinnedLink(bpf, linkPath);
    removePin(linkPath);
    const link = attach();
    link.pin(linkPath);
    return { link, action: 'replaced' };
  }
  const link = attach();
  try {
    detachPinnedLink(bpf, linkPath);
    removePin(linkPath);
    link.pin(linkPath);
  } catch (error) {
    link.close();
    throw error;
  }
  return { link, action: 'replaced' };
}

/** bpf_link_detach of a pinned link (through bpftool when the addon cannot reopen the pin). */
export function detachPinnedLink(bpf: NativeBpf, path: string): void {
  let link: BpfLink;
  try {
    link = bpf.openPinnedLink(path);
  } catch (error) {
    if (!isNotALink(error)) throw error;
    execFileSync('bpftool', ['link', 'detach', 'pinned', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    return;
  }
  try {
    link.detach();
  } finally {
    link.close();
  }
}

/**
 * Loads the objects with the maps' pin root, then attaches every cgroup program to the cgroup through a
 * pinned link, adopting (bpf_link_update) links that are already pinned for that cgroup. Links pinned for a
 * program the new objects no longer have are detached and removed.
 */
export function install(
  bpf: NativeBpf,
  options: { bpffsDir: string; cgroupPath: string; objects: readonly ObjectSpec[] },
): Installed {
  const layout = pinLayout(options.bpffsDir);
  const id = cgroupId(options.cgroupPath);
  ensureDir(layout.mapsDir);
  const events: LinkEvent[] = [];
  const objects: BpfObject[] = [];
  const links: BpfLink[] = [];
  try {
    for (const spec of options.objects) {
      const object = bpf.loadObject(spec.path, { ...spec.options, pinRoot: layout.mapsDir });
      objects.push(object);
      spec.prepare?.(object);
      const name = objectName(spec.path);
      const wanted = new Set<string>();
      for (const program of object.programs()) {
        const { type, section } = safeProgramInfo(program);
        const sockmap = spec.sockmaps?.[program.name];
        if (!isCgroupProgramType(type) && sockmap === undefined) continue;
        wanted.add(program.name);
        const attach = () =>
          sockmap !== undefined
            ? program.attachSockmap(object.map(sockmap), undefined, { method: 'link' })
            : program.attachCgroup(options.cgroupPath);
        const linkPath = layout.linkPin(id, name, program.name);
        let action: LinkAction;
        if (existsSync(linkPath)) {
          const adopted = adoptLink(bpf, linkPath, program, attach, sockmap !== undefined);
          links.push(adopted.link);
          action = adopted.action;
        } else {
          ensureDir(join(layout.cgroupLinksDir(id), name));
          const link = attach();
          link.pin(linkPath);
          links.push(link);
          action = 'attached';
        }
        const progPath = layout.programPin(name, program.name);
        ensureDir(join(layout.progsDir, name));
        removePin(progPath);
        program.pin(progPath);
        events.push({ object: name, program: program.name, section, action, pin: linkPath });
      }
      // Links of programs this object no longer has: detach and forget them.
      const objectLinks = join(layout.cgroupLinksDir(id), name);
      for (const entry of listDir(objectLinks)) {
        if (wanted.has(entry)) continue;
        const path = join(objectLinks, entry);
        detachPinnedLink(bpf, path);
        removePin(path);
        removePin(layout.programPin(name, entry));
        events.push({ object: name, program: entry, section: '', action: 'removed-stale', pin: path });
      }
    }
  } catch (error) {
    for (const link of links) link.close();
    for (const object of objects) object.close();
    throw error;
  }
  const adopted = events.some((event) => event.action === 'adopted' || event.action === 'replaced');
  return {
    layout,
    cgroupPath: options.cgroupPath,
    cgroupId: id,
    objects,
    events,
    adopted,
    map(mapName) {
      for (const object of objects) {
        const found = object.maps().find((map) => map.name === mapName);
        if (found) return found;
      }
      throw new PinError('ERR_NO_MAP', `map ${mapName}: not in any loaded object`);
    },
    close() {
      for (const link of links) link.close();
      for (const object of objects) object.close();
    },
  };
}

export interface UninstallResult {
  readonly detached: string[];
  readonly removed: string[];
}

function rmdirIfEmpty(path: string, removed: string[]): void {
  if (!existsSync(path)) return;
  for (const entry of readdirSync(path)) {
    const child = join(path, entry);
    if (statSync(child).isDirectory()) rmdirIfEmpty(child, removed);
  }
  if (readdirSync(path).length === 0) {
    rmdirSync(path);
    removed.push(path);
  }
}

/**
 * Detaches and unpins every link under one owner's directory (`links/<owner>/<object>/<program>`), then
 * removes the emptied directories.
 */
export function removeLinksIn(bpf: NativeBpf, dir: string): UninstallResult {
  const detached: string[] = [];
  const removed: string[] = [];
  for (const object of listDir(dir)) {
    for (const program of listDir(join(dir, object))) {
      const path = join(dir, object, program);
      detachPinnedLink(bpf, path);
      detached.push(path);
      removePin(path);
      removed.push(path);
    }
  }
  rmdirIfEmpty(dir, removed);
  return { detached, removed };
}

/**
 * Detaches every link the agent pinned (for one cgroup when given, else for all) and removes its pins;
 * once no cgroup has links left, also the program and map pins and the directory itself. Idempotent.
 */
export function uninstall(
  bpf: NativeBpf,
  options: { bpffsDir: string; cgroupPath?: string },
): UninstallResult {
  const layout = pinLayout(options.bpffsDir);
  const detached: string[] = [];
  const removed: string[] = [];
  if (!existsSync(layout.root)) return { detached, removed };
  const cgroupDirs =
    options.cgroupPath !== undefined
      ? [layout.cgroupLinksDir(cgroupId(options.cgroupPath))]
      : listDir(layout.linksDir).map((entry) => join(layout.linksDir, entry));
  for (const dir of cgroupDirs) {
    const gone = removeLinksIn(bpf, dir);
    detached.push(...gone.detached);
    removed.push(...gone.removed);
  }
  // Programs and maps are shared by every cgroup's links: they go with the last cgroup.
  if (listDir(layout.linksDir).length === 0) {
    for (const dir of [layout.progsDir, layout.mapsDir]) {
      for (const entry of listDir(dir)) {
        const path = join(dir, entry);
        if (statSync(path).isDirectory()) {
          for (const inner of listDir(path)) {
            removePin(join(path, inner));
            removed.push(join(path, inner));
          }
        } else {
          removePin(path);
          removed.push(path);
        }
      }
    }
    rmdirIfEmpty(layout.root, removed);
  }
  return { detached, removed };
}
