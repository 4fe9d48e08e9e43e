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
  const text = wellFormed(typeof value === 'string' ? value : value === undefined ? 'undefined' : safeJson(value));
  if (text.length <= max) return JSON.stringify(text);
  return `${JSON.stringify(cutChars(text, max))}…(${text.length} chars)`;
}

/** Lone UTF-16 surrogates (half of an emoji, cut by anyone) as U+FFFD: grpc-js cannot send them in a status and throws. */
export function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/** The first `max` UTF-16 units of `text`, one less if that would split a surrogate pair. */
function cutChars(text: string, max: number): string {
  const code = text.charCodeAt(max - 1);
  return text.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
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

/**
 * Cuts a status message to MAX_STATUS_DETAILS bytes of UTF-8, on a character
 * boundary, with every lone surrogate replaced (see wellFormed): this is what
 * every status message goes through before it is sent.
 */
export function boundedDetails(message: string, max = MAX_STATUS_DETAILS): string {
  const text = wellFormed(message);
  if (Buffer.byteLength(text) <= max) return text;
  let cut = cutChars(text, Math.min(text.length, max));
  while (Buffer.byteLength(cut) > max - 24) cut = cutChars(cut, cut.length - 1);
  return `${cut}…(${Buffer.byteLength(text)} bytes)`;
}
