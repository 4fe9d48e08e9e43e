/**
 * NodeDaemon.InstanceConsole: the serial console of an instance over a bidi
 * gRPC stream (src/hypervisor/serial-console.ts does the QEMU side). The
 * first input names the instance and the mode; in interactive mode later
 * inputs go to the guest, in tail mode any input data is refused. When the
 * client goes away (end, cancel, error) the node disconnects from QEMU's
 * socket and stops the tail, so the next session can attach.
 */
import type * as grpc from '@grpc/grpc-js';
import { MalformedRequest } from '../common/rpc-guard';
import { openSerialConsole, tailConsoleLog, type SerialConsoleSession } from '../hypervisor/serial-console';
import type { ConsoleInput__Output } from '../generated/gnt/node/v1/ConsoleInput';
import type { ConsoleOutput } from '../generated/gnt/node/v1/ConsoleOutput';
import type { InstanceRegistry } from './instance-registry';
import { invalidArgument, toStatus } from './status';

/** Recent output replayed when the request leaves replay_bytes at 0. */
export const DEFAULT_REPLAY_BYTES = 16 * 1024;
/** Input a client may send before the console is attached (kept, then written in order). */
const MAX_EARLY_BYTES = 64 * 1024;
/** At most this much is replayed, whatever is asked. */
const MAX_REPLAY_BYTES = 1024 * 1024;

type ConsoleCall = grpc.ServerDuplexStream<ConsoleInput__Output, ConsoleOutput>;

export function instanceConsoleHandler(registry: InstanceRegistry): (call: ConsoleCall) => void {
  return (call) => {
    let session: SerialConsoleSession | undefined;
    let stopTail: (() => void) | undefined;
    let over = false;
    const end = (reason: string, err?: unknown): void => {
      if (over) return;
      over = true;
      session?.close();
      stopTail?.();
      if (err) {
        const st = toStatus(err);
        call.emit('error', { code: st.code, details: st.details, message: st.details });
        return;
      }
      if (!call.cancelled && call.writable) {
        call.write({ ended: reason });
        call.end();
      }
    };
    const send = (data: Buffer): void => {
      if (!over && !call.cancelled) call.write({ data });
    };
    let first = true;
    let tail = false;
    /** Input sent before QEMU's socket is connected: written once it is, in order. */
    const early: Buffer[] = [];
    call.on('data', (msg: ConsoleInput__Output | MalformedRequest) => {
      if (over) return;
      if (msg instanceof MalformedRequest) return end('', invalidArgument(`malformed InstanceConsole message: ${msg.reason}`));
      if (first) {
        first = false;
        tail = msg.mode === 'CONSOLE_MODE_TAIL';
        const replay = Math.min(msg.replayBytes || DEFAULT_REPLAY_BYTES, MAX_REPLAY_BYTES);
        let inst;
        try {
          inst = registry.get(msg.instance);
        } catch (err) {
          return end('', err);
        }
        const paths = inst.paths;
        // Both modes replay the recent log first (so the boot output shows).
        if (tail) {
          stopTail = tailConsoleLog(paths.consoleLog, replay, send).stop;
          return;
        }
        openSerialConsole(msg.instance, paths.consoleSocket, { onData: send, onEnd: (reason) => end(reason) }).then(
          (s) => {
            if (over) return s.close();
            session = s;
            const replayer = tailConsoleLog(paths.consoleLog, replay, send);
            replayer.stop(); // one read of the recent output; the socket carries what follows
            if (msg.data.length) s.write(msg.data);
            for (const b of early.splice(0)) s.write(b); // input that came while the socket was opening
          },
          (err) => end('', err),
        );
        return;
      }
      if (tail && msg.data.length) return end('', invalidArgument('a --tail console session is read-only: input is refused'));
      if (!msg.data.length) return;
      if (session) session.write(msg.data);
      else if (early.reduce((n, b) => n + b.length, 0) + msg.data.length <= MAX_EARLY_BYTES) early.push(Buffer.from(msg.data));
      else end('', invalidArgument(`more than ${MAX_EARLY_BYTES} bytes of input before the console was attached`));
    });
    call.on('end', () => end('the client ended the session'));
    call.on('cancelled', () => end('the client went away'));
    call.on('error', () => end('the client went away'));
    call.on('close', () => end('the client went away'));
  };
}
