// `npm test [-- --run]`: the node:test suites in tests/, against the build in dist/.
// --run is accepted for Vitest habits: node:test always runs once and exits.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";

const unknown = process.argv.slice(2).filter((arg) => arg !== "--run");
if (unknown.length) {
  console.error(`npm test: unknown argument(s) ${unknown.join(" ")} (only --run is accepted)`);
  process.exit(2);
}
if (!existsSync("dist/App.js")) {
  console.error("npm test: no build in dist/: run `npm run build` first");
  process.exit(1);
}
const files = readdirSync("tests").filter((name) => name.endsWith(".test.mjs")).map((name) => "tests/" + name);
const result = spawnSync(process.execPath, ["--test", "--test-reporter=spec", ...files], { stdio: "inherit" });
process.exit(result.status ?? 1);
