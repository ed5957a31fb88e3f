// `npm run build`: src/**/*.ts(x) to ES modules in dist/, and index.html, with no dependency.
//
// The sources are TypeScript without JSX (views are h() calls), so the build only erases the
// types: type and interface declarations, `import type`, annotations on parameters, variables,
// class fields and return types, type arguments and `as` casts. It does not check them. Each
// relative import must name a source file, and each module must then load in node (parse and
// link), except the browser entry main.ts.
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { pathToFileURL } from "node:url";

const NAME = String.raw`[A-Za-z_$][\w$.]*`;
const ARGS = String.raw`<[^<>()=;{}]*(?:<[^<>()=;{}]*>)?[^<>()=;{}]*>`;
const ONE = String.raw`(?:${NAME}(?:${ARGS})?(?:\[\])*|"[^"]*")`;
const TYPE = String.raw`${ONE}(?:\s*\|\s*${ONE})*`;

const params = (list) => list.replace(new RegExp(String.raw`([\w$\]}])\??\s*:\s*${TYPE}`, "g"), "$1");

function eraseTypes(source) {
  const kept = [];
  let skipping = null; // the end of the declaration being dropped
  for (const line of source.split("\n")) {
    if (skipping) {
      if (skipping.test(line)) skipping = null;
    } else if (/^import type /.test(line)) {
      continue;
    } else if (/^(export )?type \w+/.test(line)) {
      if (!/;\s*(\/\/.*)?$/.test(line)) skipping = /;\s*(\/\/.*)?$/;
    } else if (/^(export )?interface \w+/.test(line)) {
      if (!/}\s*(\/\/.*)?$/.test(line)) skipping = /^}\s*$/;
    } else {
      kept.push(line);
    }
  }
  return kept.join("\n")
    .replace(new RegExp(String.raw`\b(function\s*\w*)\s*(?:<[^<>()]*>)?\s*\(([^()]*)\)\s*(?::\s*${TYPE})?\s*\{`, "g"),
      (_, head, list) => `${head}(${params(list)}) {`)
    .replace(new RegExp(String.raw`^(\s*(?:async\s+)?)(?!(?:if|for|while|switch|catch|function|return)\b)(\w+)\s*\(([^()]*)\)\s*(?::\s*${TYPE})?\s*\{\s*$`, "gm"),
      (_, head, name, list) => `${head}${name}(${params(list)}) {`)
    .replace(new RegExp(String.raw`\(([^()]*)\)\s*(?::\s*${TYPE})?\s*=>`, "g"), (_, list) => `(${params(list)}) =>`)
    .replace(new RegExp(String.raw`\b(const|let|var)\s+(\w+)\s*:\s*${TYPE}\s*=`, "g"), "$1 $2 =")
    .replace(new RegExp(String.raw`^(\s+)(?:readonly\s+)?(\w+)\s*:\s*${TYPE};\s*$`, "gm"), "$1$2;")
    .replace(new RegExp(String.raw`(\w)${ARGS}\(`, "g"), "$1(")
    .replace(new RegExp(String.raw`\s+as\s+[A-Z][\w$]*(?:${ARGS})?(?=[\s),;\]}])`, "g"), "")
    .replace(/\n{3,}/g, "\n\n");
}

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : /\.tsx?$/.test(entry.name) ? [join(dir, entry.name)] : []);
}

// Relative imports name modules without an extension, as bundlers allow: add .js.
function linkImports(code, file, problems) {
  return code.replace(/(from\s+|import\s+)"(\.{1,2}\/[^"]+)"/g, (_, keyword, target) => {
    const base = join(dirname(file), target);
    if (!existsSync(base + ".ts") && !existsSync(base + ".tsx")) problems.push(`${file}: no source for import "${target}"`);
    return `${keyword}"${target}.js"`;
  });
}

async function build() {
  rmSync("dist", { recursive: true, force: true });
  const problems = [];
  const outputs = [];
  for (const file of sources("src")) {
    const out = join("dist", relative("src", file)).replace(/\.tsx?$/, ".js");
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, linkImports(eraseTypes(readFileSync(file, "utf8")), file, problems));
    outputs.push(out);
  }
  for (const out of outputs.filter((name) => name !== join("dist", "main.js"))) {
    try {
      await import(pathToFileURL(out).href);
    } catch (err) {
      problems.push(`${out}: does not load after erasing the types: ${err}`);
    }
  }
  copyFileSync("index.html", "dist/index.html");
  if (problems.length) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
  console.log(`built ${outputs.length} modules into dist/`);
}

await build();
