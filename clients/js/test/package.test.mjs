// The npm package as it would be published: `npm pack` lists exactly the intended files, and a
// consumer that installs the tarball can import the package by name (through `exports`) and
// finds a declaration for everything the module exports. Needs npm (scripts/test installs it);
// no server, so it reads no environment.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const DIR = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(await readFile(path.join(DIR, "package.json"), "utf8"));

/** What a user of the package needs, and nothing else (tests, e2e, lockfile stay home). */
const PUBLISHED = ["CHANGELOG.md", "README.md", "package.json", "roomcast.d.ts", "roomcast.js"];

/** Runs npm in this package; a missing npm fails the test with the reason. */
async function npm(...args) {
  try {
    const { stdout } = await run("npm", args, { cwd: DIR, timeout: 60_000 });
    return stdout;
  } catch (e) {
    throw new Error(`npm ${args.join(" ")} failed (scripts/test installs npm): ${e.stderr || e.message}`);
  }
}

/** Every file path package.json points at: main, types, each `exports` target. */
function referenced(p) {
  const out = [p.main, p.types];
  const walk = (v) => {
    if (typeof v === "string") out.push(v);
    else if (v && typeof v === "object") Object.values(v).forEach(walk);
  };
  walk(p.exports);
  return out.filter(Boolean).map((f) => path.posix.normalize(f));
}

test("npm pack would publish exactly the intended files, named and versioned", { timeout: 60_000 }, async () => {
  const [packed] = JSON.parse(await npm("pack", "--dry-run", "--json", "--ignore-scripts"));
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, PUBLISHED);
  assert.equal(packed.name, "roomcast-client");
  assert.match(packed.version, /^\d+\.\d+\.\d+$/);
  assert.equal(pkg.private, undefined, "a private package cannot be published");
  for (const f of referenced(pkg)) assert.ok(files.includes(f), `package.json points at ${f}, which is not packed`);
  const changelog = await readFile(path.join(DIR, "CHANGELOG.md"), "utf8");
  assert.ok(changelog.includes(`## ${pkg.version}`), `CHANGELOG.md has no entry for ${pkg.version}`);
});

test("an installed tarball imports by name and every export is declared", { timeout: 60_000 }, async () => {
  const tmp = await mkdtemp(path.join(os.tmpdir(), "roomcast-pack-"));
  try {
    const [packed] = JSON.parse(await npm("pack", "--json", "--ignore-scripts", "--pack-destination", tmp));
    // What `npm install <tarball>` puts in node_modules, without asking a registry.
    const installed = path.join(tmp, "node_modules", pkg.name);
    await mkdir(installed, { recursive: true });
    await run("tar", ["-xzf", path.join(tmp, packed.filename), "-C", installed, "--strip-components=1"]);
    const consumer = path.join(tmp, "consumer.mjs");
    await writeFile(
      consumer,
      `import * as m from ${JSON.stringify(pkg.name)};\n` +
        `import { createRequire } from "node:module";\n` +
        `const meta = createRequire(import.meta.url)(${JSON.stringify(`${pkg.name}/package.json`)});\n` +
        `console.log(JSON.stringify({ exports: Object.keys(m), same: m.default === m.Roomcast, version: meta.version }));\n`,
    );
    const { stdout } = await run(process.execPath, [consumer], { cwd: tmp, timeout: 30_000 });
    const seen = JSON.parse(stdout);
    assert.equal(seen.same, true, "the default export is Roomcast");
    assert.equal(seen.version, pkg.version);
    for (const name of ["Roomcast", "Room", "RoomcastError", "CloseCode", "DEFAULTS", "SUBPROTOCOL", "tokenExpiry"]) {
      assert.ok(seen.exports.includes(name), `${name} is not exported`);
    }
    // The `types` condition's file declares every runtime export.
    const dts = await readFile(path.join(installed, pkg.exports["."].types), "utf8");
    for (const name of seen.exports) {
      const declared =
        name === "default"
          ? /^export default \w+;/m.test(dts)
          : new RegExp(`^export (?:declare )?(?:const|class|function) ${name}\\b`, "m").test(dts);
      assert.ok(declared, `roomcast.d.ts does not declare the export ${name}`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
