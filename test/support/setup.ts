/**
 * Mocha setup: integration tests create taps and bridges, which must live in
 * a network namespace of their own (scripts/in-netns.sh, used by `npm test`).
 */
if (process.env.GNT_IN_TEST_NETNS !== '1') {
  throw new Error('run the tests through "npm test" (scripts/in-netns.sh): they need a private network namespace');
}
export {};
