#!/usr/bin/env node
// Compile contracts/*.sol with the pinned solcjs and write one artifact per contract.
//
// Usage: node scripts/compile-contracts.js [--out DIR]   (DIR defaults to contracts/artifacts)
// Artifacts are deterministic: a rebuild from the same sources and package-lock.json is byte-identical.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const CONTRACTS_DIR = path.join(ROOT, "contracts");
const DEFAULT_OUT_DIR = path.join(CONTRACTS_DIR, "artifacts");

// Cancun is the oldest fork with transient storage (ReentrancyGuardTransient); Hardhat 2.29 runs Osaka by default.
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
};

function parseOutDir(argv) {
  if (argv.length === 0) return DEFAULT_OUT_DIR;
  if (argv.length === 2 && argv[0] === "--out") return path.resolve(argv[1]);
  throw new Error("usage: node scripts/compile-contracts.js [--out DIR]");
}

function readSources() {
  const sources = {};
  for (const file of fs.readdirSync(CONTRACTS_DIR).sort()) {
    if (file.endsWith(".sol")) {
      sources[`contracts/${file}`] = { content: fs.readFileSync(path.join(CONTRACTS_DIR, file), "utf8") };
    }
  }
  return sources;
}

function findImports(importPath) {
  const base = importPath.startsWith("@") ? path.join(ROOT, "node_modules") : ROOT;
  const file = path.join(base, importPath);
  if (!fs.existsSync(file)) return { error: `not found: ${importPath} (run npm ci)` };
  return { contents: fs.readFileSync(file, "utf8") };
}

function compile(sources) {
  const input = {
    language: "Solidity",
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const diagnostics = output.errors ?? [];
  for (const diagnostic of diagnostics) process.stderr.write(diagnostic.formattedMessage);
  // Warnings inside our own sources fail the build; those inside OpenZeppelin's (its tstore notice) do not.
  const fatal = diagnostics.filter(
    (d) => d.severity === "error" || (d.sourceLocation?.file ?? "contracts/").startsWith("contracts/"),
  );
  if (fatal.length > 0) throw new Error(`solc reported ${fatal.length} problem(s) in contracts/; fix them`);
  return output.contracts;
}

function buildArtifacts(contracts) {
  const artifacts = {};
  for (const [sourceName, byName] of Object.entries(contracts)) {
    if (!sourceName.startsWith("contracts/")) continue; // OpenZeppelin's own contracts
    for (const [contractName, contract] of Object.entries(byName)) {
      if (contract.evm.bytecode.object === "") continue; // abstract contracts and interfaces
      artifacts[contractName] = {
        contractName,
        sourceName,
        abi: contract.abi,
        bytecode: `0x${contract.evm.bytecode.object}`,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
        compiler: { version: solc.version(), settings: SETTINGS },
      };
    }
  }
  return artifacts;
}

function writeArtifacts(artifacts, outDir) {
  fs.mkdirSync(outDir, { recursive: true });
  for (const file of fs.readdirSync(outDir)) {
    if (file.endsWith(".json") && !(path.basename(file, ".json") in artifacts)) fs.unlinkSync(path.join(outDir, file));
  }
  for (const [name, artifact] of Object.entries(artifacts).sort()) {
    fs.writeFileSync(path.join(outDir, `${name}.json`), `${JSON.stringify(artifact, null, 2)}\n`);
    process.stdout.write(`${path.relative(ROOT, path.join(outDir, name))}.json\n`);
  }
}

function main() {
  const outDir = parseOutDir(process.argv.slice(2));
  writeArtifacts(buildArtifacts(compile(readSources())), outDir);
}

try {
  main();
} catch (error) {
  process.stderr.write(`compile-contracts: ${error.message}\n`);
  process.exit(1);
}
