// The store's tree, immutable: a change copies the nodes on its path and
// shares the rest, so a transaction's view is one root pointer taken at its
// start, and a commit can compare what it saw with what is there now.
import { XsError } from './wire.js';

/** n: none, r: read, w: write, b: both (read and write). */
export type Access = 'n' | 'r' | 'w' | 'b';
export interface Perm {
  domid: number;
  access: Access;
}

export interface Node {
  readonly value: Buffer;
  /** perms[0] names the owner and what every domain not listed after it may do. */
  readonly perms: readonly Perm[];
  readonly children: ReadonlyMap<string, Node>;
  /** Bumped when this node's own value, permissions or set of children change (not a descendant's). */
  readonly gen: number;
}

export const EMPTY: Buffer = Buffer.alloc(0);

export function leaf(perms: readonly Perm[], gen: number, value: Buffer = EMPTY): Node {
  return { value, perms, children: new Map(), gen };
}

// xenstored's own alphabet for path elements; anything else is refused.
const PATH_CHARS = /^[A-Za-z0-9\-/_@]+$/;
/** XENSTORE_ABS_PATH_MAX and XENSTORE_REL_PATH_MAX. */
export const ABS_PATH_MAX = 3072;
export const REL_PATH_MAX = 2048;

/** The absolute path a connection of `domid` means by `path` (relative paths are under its domain's). */
export function canonical(domid: number, path: string): string {
  if (path.length === 0 || !PATH_CHARS.test(path)) throw new XsError('EINVAL', `invalid path ${JSON.stringify(path.slice(0, 80))}`);
  if (path.startsWith('@')) throw new XsError('EINVAL', `${path}: special paths are only for watches`);
  const abs = path.startsWith('/') ? path : `${domainPath(domid)}/${path}`;
  if (!path.startsWith('/') && path.length > REL_PATH_MAX) throw new XsError('EINVAL', `relative path longer than ${REL_PATH_MAX}`);
  if (abs.length > ABS_PATH_MAX) throw new XsError('EINVAL', `path longer than ${ABS_PATH_MAX}`);
  if (abs !== '/' && (abs.endsWith('/') || abs.includes('//'))) throw new XsError('EINVAL', `invalid path ${JSON.stringify(path.slice(0, 80))}`);
  return abs;
}

export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

export function segments(abs: string): string[] {
  return abs === '/' ? [] : abs.slice(1).split('/');
}

export function parentOf(abs: string): string {
  const i = abs.lastIndexOf('/');
  return i <= 0 ? '/' : abs.slice(0, i);
}

export function lookup(root: Node, abs: string): Node | undefined {
  let n: Node | undefined = root;
  for (const s of segments(abs)) {
    n = n.children.get(s);
    if (!n) return undefined;
  }
  return n;
}

/** The deepest node that exists on the way to `abs` (the root at least), and its path. */
export function nearest(root: Node, abs: string): { node: Node; path: string } {
  let n = root;
  let path = '/';
  for (const s of segments(abs)) {
    const c = n.children.get(s);
    if (!c) break;
    n = c;
    path = path === '/' ? `/${s}` : `${path}/${s}`;
  }
  return { node: n, path };
}

export function allows(domid: number, perms: readonly Perm[], want: 'r' | 'w'): boolean {
  if (domid === 0) return true;
  const owner = perms[0]!;
  if (owner.domid === domid) return true;
  const entry = perms.slice(1).find((p) => p.domid === domid) ?? owner;
  return entry.access === 'b' || entry.access === want;
}

/**
 * A new root with `fn` applied at `abs`. Missing nodes on the way are made by
 * `make` from their parent; `fn` returning undefined removes the node.
 * Ancestors are copied but keep their generation, except the one whose set of
 * children changed.
 */
export function update(
  root: Node, abs: string, gen: number,
  fn: (n: Node | undefined) => Node | undefined,
  make: (parent: Node) => Node,
): Node {
  const segs = segments(abs);
  const walk = (n: Node, i: number): Node | undefined => {
    if (i === segs.length) return fn(n);
    const name = segs[i]!;
    const child = n.children.get(name);
    const next = child ? walk(child, i + 1) : i + 1 === segs.length ? fn(undefined) : walk(make(n), i + 1);
    if (next === child) return n;
    const children = new Map(n.children);
    if (next) children.set(name, next);
    else children.delete(name);
    const membership = !child !== !next;
    return { ...n, children, gen: membership ? gen : n.gen };
  };
  return walk(root, 0) ?? root;
}

/** Every path at or below `abs` in `node`, `abs` first. */
export function* walkPaths(node: Node, abs: string): Generator<[string, Node]> {
  yield [abs, node];
  for (const [name, c] of node.children) yield* walkPaths(c, abs === '/' ? `/${name}` : `${abs}/${name}`);
}

export function formatPerm(p: Perm): string {
  return `${p.access}${p.domid}`;
}

export function parsePerm(text: string): Perm {
  const m = /^([nrwb])(\d{1,5})$/.exec(text);
  if (!m || Number(m[2]) > 0x7fef) throw new XsError('EINVAL', `invalid permission ${JSON.stringify(text.slice(0, 40))}`);
  return { access: m[1] as Access, domid: Number(m[2]) };
}
