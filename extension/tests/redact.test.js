// The redaction patterns against the vectors the server's tests also use (tests/contributions/test_redaction.py).
const test = require("node:test");
const assert = require("node:assert/strict");
const { redact, luhnValid } = require("../src/redact.js");
const vectors = require("./redaction_vectors.json");

for (const vector of vectors) {
  test(`redacts: ${vector.input}`, () => {
    const { text, found } = redact(vector.input);
    assert.equal(text, vector.redacted);
    assert.deepEqual([...found].sort(), [...vector.found].sort());
    assert.deepEqual(redact(text).found, [], "redacting twice finds nothing more");
  });
}

test("luhn tells card numbers from other long numbers", () => {
  assert.equal(luhnValid("4111111111111111"), true);
  assert.equal(luhnValid("4111111111111112"), false);
});
