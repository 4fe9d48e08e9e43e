/**
 * `gnt-instance console`: the escape handling of an interactive session.
 * Ctrl-] (0x1d, shown as '^]') leaves the session, as in telnet and Ganeti;
 * the byte itself is never sent to the guest, nor anything typed after it in
 * the same read.
 */

/** Ctrl-]: the byte that ends an interactive console session. */
export const ESCAPE_BYTE = 0x1d;

export const connectedLine = (instance: string): string => `Connected to the console of ${instance}; escape character is '^]'`;

export interface EscapeSplit {
  /** The bytes to send to the guest (everything before the escape). */
  send: Buffer;
  /** Whether the escape byte was typed: the session ends after `send`. */
  leave: boolean;
}

/** Splits one read of the terminal's input at the first Ctrl-]. */
export function splitAtEscape(input: Buffer): EscapeSplit {
  const at = input.indexOf(ESCAPE_BYTE);
  return at < 0 ? { send: input, leave: false } : { send: input.subarray(0, at), leave: true };
}
