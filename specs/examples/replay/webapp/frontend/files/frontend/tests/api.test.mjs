import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, createApi } from "../dist/api.js";
import { fakeFetch } from "./helpers.mjs";

test("requests send JSON with the session cookie and parse the answer", async () => {
  const { fetch, calls } = fakeFetch({ "POST /api/auth/login": [200, { id: 1, email: "ada@example.com" }] });
  const api = createApi({ baseUrl: "/api", fetch });
  assert.deepEqual(await api.login("ada@example.com", "correct horse"), { id: 1, email: "ada@example.com" });
  assert.deepEqual(calls[0].body, { email: "ada@example.com", password: "correct horse" });
  assert.equal(calls[0].init.credentials, "include");
  assert.equal(calls[0].init.headers["Content-Type"], "application/json");
});

test("queries leave out empty filters; 204 answers are null", async () => {
  const { fetch, calls } = fakeFetch({
    "GET /projects/7/tasks?status=done&limit=100": [200, { items: [], next_cursor: null }],
    "DELETE /projects/7/tasks/2": [204, null],
  });
  const api = createApi({ fetch });
  await api.listTasks(7, { status: "done", assignee: undefined, limit: 100 });
  assert.equal(await api.deleteTask(7, 2), null);
  assert.deepEqual(calls.map((c) => c.key), ["GET /projects/7/tasks?status=done&limit=100", "DELETE /projects/7/tasks/2"]);
});

test("errors become ApiError with the JSON error body", async () => {
  const body = { error: { code: "invalid", message: "the request is not valid", details: [{ field: "name", problem: "required" }] } };
  const api = createApi({ fetch: fakeFetch({ "POST /projects": [422, body] }).fetch });
  const err = await api.createProject("").catch((e) => e);
  assert.ok(err instanceof ApiError);
  assert.equal(err.status, 422);
  assert.deepEqual(err.body, body);
  assert.equal(err.message, "the request is not valid");
});

test("a 401 outside /auth calls onUnauthorized, a failed log-in does not", async () => {
  const unauthorized = { error: { code: "unauthenticated", message: "log in first", details: [] } };
  let calls = 0;
  const api = createApi({
    fetch: fakeFetch({ "GET /projects": [401, unauthorized], "POST /auth/login": [401, unauthorized] }).fetch,
    onUnauthorized: () => calls++,
  });
  await assert.rejects(api.listProjects(), ApiError);
  await assert.rejects(api.login("ada@example.com", "wrong"), ApiError);
  assert.equal(calls, 1);
});
