import assert from "node:assert/strict";
import { test } from "node:test";

import { createApi } from "../dist/api.js";
import { route, start } from "../dist/App.js";
import { Login } from "../dist/pages/Login.js";
import { fakeContext, fakeFetch, fakeWindow, find, submitEvent, text } from "./helpers.mjs";

const CREDENTIALS = { email: "ada@example.com", password: "wrong horse" };
const BAD = { error: { code: "bad_credentials", message: "wrong e-mail or password", details: [] } };

test("a 401 on log-in shows the error and stays on the page", async () => {
  const ctx = fakeContext(createApi({ fetch: fakeFetch({ "POST /auth/login": [401, BAD] }).fetch }));
  const form = Login(ctx, {});
  assert.equal(find(form, (n) => n.props.role === "alert"), undefined);
  await form.props.onsubmit(submitEvent(CREDENTIALS));
  const alert = find(Login(ctx, ctx.state()), (n) => n.props.role === "alert");
  assert.equal(text(alert), "Wrong e-mail or password.");
  assert.deepEqual(ctx.paths, []);
});

test("a good log-in goes to the projects", async () => {
  const user = { id: 1, email: "ada@example.com" };
  const { fetch, calls } = fakeFetch({ "POST /auth/login": [200, user] });
  const ctx = fakeContext(createApi({ fetch }));
  await Login(ctx, {}).props.onsubmit(submitEvent({ ...CREDENTIALS, password: "correct horse" }));
  assert.deepEqual(calls[0].body, { ...CREDENTIALS, password: "correct horse" });
  assert.deepEqual(ctx.paths, ["/projects"]);
});

test("routes", () => {
  assert.equal(route("/projects/12").view.name, "ProjectBoard");
  assert.deepEqual(route("/projects/12").params, { id: 12 });
  assert.equal(route("/projects").view.name, "Projects");
  assert.equal(route("/signup").view.name, "Signup");
  assert.equal(route("").view.name, "Login");
});

test("any 401 while loading a page redirects to the log-in page", async () => {
  const win = fakeWindow("#/projects");
  const unauthorized = { error: { code: "unauthenticated", message: "log in first", details: [] } };
  await start(win.root, win, { fetch: fakeFetch({ "GET /projects?limit=100": [401, unauthorized] }).fetch });
  assert.equal(win.location.hash, "#/login");
  await win.dispatch("hashchange");
  assert.equal(win.root.children[0].children[0].children[0].data, "Log in");
});
