// The scenario of tests/board.spec.ts through the frontend's API client, against a running
// API, for machines without Docker or a browser:  node e2e/smoke.mjs http://127.0.0.1:8000
import assert from "node:assert/strict";

import { createApi } from "../frontend/dist/api.js";

const base = process.argv[2];
const status = (code) => (err) => err.status === code;

// A client with its own cookie jar, as a browser tab would have.
function client() {
  let cookie = "";
  const fetchWithCookies = async (url, init = {}) => {
    const response = await fetch(url, { ...init, headers: { ...init.headers, ...(cookie && { Cookie: cookie }) } });
    for (const header of response.headers.getSetCookie()) {
      const pair = header.split(";")[0];
      cookie = pair.endsWith("=") ? "" : pair;
    }
    return response;
  };
  return createApi({ baseUrl: base, fetch: fetchWithCookies });
}

async function step(name, body) {
  await body();
  console.log(`ok - ${name}`);
}

const api = client();
const email = `e2e-${Date.now()}@example.com`;
let project;
let tasks;

await step("the built frontend is served", async () => {
  assert.match(await (await fetch(base + "/")).text(), /<div id="root">/);
});
await step("sign up", async () => assert.equal((await api.signup(email, "correct horse")).email, email));
await step("the same e-mail cannot sign up twice", () => assert.rejects(api.signup(email, "correct horse"), status(409)));
await step("log out: the projects need a session", async () => {
  await api.logout();
  await assert.rejects(api.listProjects(), status(401));
});
await step("a wrong password is refused", () => assert.rejects(api.login(email, "wrong horse"), status(401)));
await step("log in", async () => assert.equal((await api.login(email, "correct horse")).email, email));
await step("create a project", async () => {
  project = await api.createProject("Launch");
  assert.deepEqual((await api.listProjects()).items.map((p) => p.name), ["Launch"]);
});
await step("add three tasks", async () => {
  tasks = [];
  for (const title of ["Write the spec", "Run the fleet", "Merge the branches"]) tasks.push(await api.createTask(project.id, title));
  assert.deepEqual(tasks.map((t) => t.status), ["todo", "todo", "todo"]);
});
await step("move one to done", async () => {
  assert.equal((await api.updateTask(project.id, tasks[0].id, { status: "done" })).status, "done");
});
await step("filter by status", async () => {
  const titles = async (filter) => (await api.listTasks(project.id, { status: filter })).items.map((t) => t.title);
  assert.deepEqual(await titles("done"), ["Write the spec"]);
  assert.deepEqual(await titles("todo"), ["Run the fleet", "Merge the branches"]);
});
await step("another user sees none of it", async () => {
  const other = client();
  await other.signup(`other-${email}`, "correct horse");
  assert.deepEqual((await other.listProjects()).items, []);
  await assert.rejects(other.listTasks(project.id), status(404));
});
console.log("e2e: all steps passed");
