/**
 * Short, safe quotations of untrusted input for error messages. An error
 * never echoes more than a few dozen characters of what it was sent: a
 * 100 KB field quoted whole would make the reply's status trailer too big
 * for HTTP/2 and the call (and the channel after it) would never answer.
 */

/** Characters of untrusted text an error message quotes at most. */
export const EXCERPT_CHARS = 48;

/**
 * `value` as a JSON string of at most EXCERPT_CHARS characters of its
 * content, with "…(N chars)" when it was cut; control characters escaped.
 */
export function excerpt(value: unknown, max = EXCERPT_CHARS): string {
  const text = typeof value === 'string' ? value : value === undefined ? 'undefined' : safeJson(value);
  if (text.length <= max) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, max))}…(${text.length} chars)`;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Bytes of a gRPC status message at most (the rest is cut with a note). */
export const MAX_STATUS_DETAILS = 1024;

/** Cuts a status message to MAX_STATUS_DETAILS bytes of UTF-8, on a character boundary. */
export function boundedDetails(message: string, max = MAX_STATUS_DETAILS): string {
  if (Buffer.byteLength(message) <= max) return message;
  let cut = message.slice(0, max);
  while (Buffer.byteLength(cut) > max - 24) cut = cut.slice(0, -1);
  return `${cut}…(${Buffer.byteLength(message)} bytes)`;
}
