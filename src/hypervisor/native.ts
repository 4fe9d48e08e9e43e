/**
 * Typed access to the project's N-API addon (native/gnt_native.c), which does
 * what Node's own modules cannot: send file descriptors over a unix socket
 * (SCM_RIGHTS), create tap devices (TUNSETIFF ioctl), and open a path
 * confined beneath a directory (openat2 RESOLVE_BENEATH). Only
 * host-paths.ts calls openBeneath: it is the one way to open a host file
 * for a guest.
 */
import * as path from 'node:path';

export interface TapHandle {
  /** The open /dev/net/tun fd; the tap exists as long as some fd to it is open. */
  fd: number;
  /** The interface name the kernel gave the tap. */
  name: string;
}

/** The queue fds of one multi-queue tap (IFF_MULTI_QUEUE). */
export interface TapQueues {
  fds: number[];
  name: string;
}

interface NativeAddon {
  unixConnect(socketPath: string): number;
  sendWithFds(fd: number, data: Buffer, fds: number[]): number;
  openTap(nameTemplate: string, vnetHdr: boolean): TapHandle;
  linkUp(name: string): void;
  openTapQueues(nameTemplate: string, vnetHdr: boolean, queues: number): TapQueues;
  bridgeAddIf(bridge: string, name: string): void;
  bridgeDelIf(bridge: string, name: string): void;
  openBeneath(dir: string, relativePath: string, flags: number, mode: number): number;
}

/** An errno-carrying error thrown by the addon. */
export interface NativeError extends Error {
  code: string;
}

export function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string';
}

function loadAddon(): NativeAddon {
  // dist/src/hypervisor/native.js and src/hypervisor/native.ts both sit three
  // levels below the package root when compiled; resolve from the root.
  const candidates = [
    path.resolve(__dirname, '../../../build/Release/gnt_native.node'),
    path.resolve(__dirname, '../../build/Release/gnt_native.node'),
  ];
  let lastError: unknown;
  for (const candidate of candidates) {
    try {
      return require(candidate) as NativeAddon;
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(
    `gnt_native addon not found (looked in ${candidates.join(', ')}); run "npm ci" or "npx node-gyp rebuild"`,
    { cause: lastError },
  );
}

const addon: NativeAddon = loadAddon();

export const unixConnect = (socketPath: string): number => addon.unixConnect(socketPath);
export const sendWithFds = (fd: number, data: Buffer, fds: number[]): number =>
  addon.sendWithFds(fd, data, fds);
export const openTap = (nameTemplate: string, vnetHdr = true): TapHandle =>
  addon.openTap(nameTemplate, vnetHdr);
export const linkUp = (name: string): void => addon.linkUp(name);
export const openTapQueues = (nameTemplate: string, vnetHdr: boolean, queues: number): TapQueues =>
  addon.openTapQueues(nameTemplate, vnetHdr, queues);
export const bridgeAddIf = (bridge: string, name: string): void => addon.bridgeAddIf(bridge, name);
export const bridgeDelIf = (bridge: string, name: string): void => addon.bridgeDelIf(bridge, name);
/**
 * Opens `relativePath` relative to `dir`, never outside it: symlinks and ".."
 * that stay beneath `dir` resolve, anything that leaves it (or a /proc magic
 * link) fails with code EXDEV. O_CLOEXEC|O_NOCTTY are always added; the
 * opened fd's real path is checked to lie beneath `dir`'s. Kernels without
 * openat2 get a component-by-component O_NOFOLLOW walk (no symlinks at all).
 */
export const openBeneath = (dir: string, relativePath: string, flags: number, mode = 0): number =>
  addon.openBeneath(dir, relativePath, flags, mode);
