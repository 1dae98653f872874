// Answer each stdin line {"types", "values"} with one stdout line {"root", "proofs"} from @openzeppelin/merkle-tree.
// Integers must arrive as decimal strings: JSON numbers above 2**53 lose precision in JavaScript.
"use strict";

const readline = require("node:readline");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  const { types, values } = JSON.parse(line);
  const tree = StandardMerkleTree.of(values, types);
  const proofs = values.map((_, index) => tree.getProof(index));
  process.stdout.write(`${JSON.stringify({ root: tree.root, proofs })}\n`);
});
