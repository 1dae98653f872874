// Copy the browser libraries (htmx, Chart.js, js-sha3) the pages use from node_modules (installed by `npm ci` at package.json's pinned
// versions) into static/vendor/, where collectstatic and WhiteNoise serve them from this site: never a CDN.
// The copies are committed so that `make run` needs only Python; tests/ui/test_vendored_js.py checks that
// they are byte for byte the files of the pinned packages. Run: `npm run vendor` (or `make vendor`).
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const FILES = [
  // [package, file inside the package, name under static/vendor/]
  ["htmx.org", "dist/htmx.min.js", "htmx.min.js"],
  ["chart.js", "dist/chart.umd.min.js", "chart.umd.min.js"],
  ["chart.js", "dist/chart.umd.min.js.map", "chart.umd.min.js.map"],
  ["htmx.org", "LICENSE", "htmx.LICENSE"],
  ["chart.js", "LICENSE.md", "chart.js.LICENSE.md"],
  // Keccak-256 for the wallet pages (static/js/eth-abi.js): the leaf hash and proof checked in the browser.
  ["js-sha3", "build/sha3.min.js", "sha3.min.js"],
  ["js-sha3", "LICENSE.txt", "js-sha3.LICENSE.txt"],
];

const out = path.join(root, "static", "vendor");
fs.mkdirSync(out, { recursive: true });
const versions = {};
for (const [pkg, file, name] of FILES) {
  const dir = path.join(root, "node_modules", pkg);
  fs.copyFileSync(path.join(dir, file), path.join(out, name));
  versions[pkg] = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
}
fs.writeFileSync(path.join(out, "VERSIONS.json"), JSON.stringify({ files: FILES, versions }, null, 2) + "\n");
console.log("static/vendor/: " + Object.entries(versions).map(([p, v]) => p + "@" + v).join(", "));
