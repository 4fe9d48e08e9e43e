/**
 * Which fdsets QEMU holds for each device id, kept per monitor connection so
 * that a release needs no `query-fdsets`. Our own add-fd answers give the
 * id; the first look-up of an id the book does not know (a boot-time disk's
 * `-add-fd set=N`, or any disk after the node daemon restarted: a new
 * connection has an empty book) reads query-fdsets once and learns every
 * device's fdsets from their opaque (the device id). Every remove-fd of ours
 * goes through here too, so the book never names a set QEMU has given back
 * (QEMU reuses fdset numbers). A remove-fd whose outcome is unknown drops
 * what the book knows, and the next look-up asks QEMU.
 */
import { ignoreNotFound } from './qdev';
import type { Monitor } from './qmp-client';

interface FdsetInfo {
  'fdset-id': number;
  fds: Array<{ fd: number; opaque?: string }>;
}

interface Book {
  /** Device id -> its fdsets ([]: known to have none). */
  sets: Map<string, number[]>;
  /** Whether query-fdsets was read on this connection (then an id the book lacks has none). */
  complete: boolean;
}

const books = new WeakMap<Monitor, Book>();

function bookOf(mon: Monitor): Book {
  let b = books.get(mon);
  if (!b) books.set(mon, (b = { sets: new Map(), complete: false }));
  return b;
}

/** The fdsets QEMU holds for this device id (normally one), as QEMU lists them. */
export async function queryFdsetsOf(mon: Monitor, id: string): Promise<number[]> {
  const sets = await mon.execute<FdsetInfo[]>('query-fdsets');
  return sets.filter((s) => s.fds.some((f) => f.opaque === id)).map((s) => s['fdset-id']);
}

/** Reads query-fdsets and replaces the book with QEMU's list. */
async function learnAll(mon: Monitor): Promise<Book> {
  const sets = await mon.execute<FdsetInfo[]>('query-fdsets');
  const b = bookOf(mon);
  b.sets.clear();
  for (const s of sets)
    for (const opaque of new Set(s.fds.map((f) => f.opaque).filter((o): o is string => typeof o === 'string')))
      b.sets.set(opaque, [...(b.sets.get(opaque) ?? []), s['fdset-id']]);
  b.complete = true;
  return b;
}

/** The fdsets of device `id`: from the book, else from one query-fdsets. */
export async function fdsetsOf(mon: Monitor, id: string): Promise<number[]> {
  const known = books.get(mon);
  const sets = known?.sets.get(id);
  if (sets) return [...sets];
  if (known?.complete) return [];
  return [...((await learnAll(mon)).sets.get(id) ?? [])];
}

/** An fdset change of unknown outcome (add-fd or remove-fd timed out, say): the book is dropped, the next look-up asks QEMU. */
export function forgetFdsets(mon: Monitor): void {
  books.delete(mon);
}

/** add-fd answered: device `id` holds fdset `set` (besides any it held). */
export function noteFdsetAdded(mon: Monitor, id: string, set: number): void {
  const b = bookOf(mon);
  const had = b.sets.get(id) ?? [];
  if (!had.includes(set)) b.sets.set(id, [...had, set]);
}

/** Forgets fdset `set` for every id; an unknown outcome (`sure` false) forgets the whole book. */
function noteFdsetRemoved(mon: Monitor, set: number, sure: boolean): void {
  const b = books.get(mon);
  if (!b) return;
  if (!sure) return forgetFdsets(mon);
  for (const [id, sets] of b.sets) b.sets.set(id, sets.filter((s) => s !== set));
}

/** remove-fd of the whole set ("already gone" is success), keeping the book right. */
export async function removeFdset(mon: Monitor, set: number): Promise<void> {
  try {
    await ignoreNotFound(mon.execute('remove-fd', { 'fdset-id': set }));
  } catch (err) {
    noteFdsetRemoved(mon, set, false);
    throw err;
  }
  noteFdsetRemoved(mon, set, true);
}

/** Removes every fdset of device `id` (from the book; one query-fdsets when the book does not know it). */
export async function removeFdsetsOf(mon: Monitor, id: string): Promise<void> {
  for (const set of await fdsetsOf(mon, id)) await removeFdset(mon, set);
}
