import assert from "node:assert/strict";
import { test } from "node:test";

import { createApi } from "../dist/api.js";
import { ProjectBoard } from "../dist/pages/Project.js";
import { fakeContext, fakeFetch, find, findAll, text } from "./helpers.mjs";

const task = (id, title, status) => ({ id, project_id: 7, title, status, assignee_id: null });
const TASKS = [task(1, "Write the spec", "todo"), task(2, "Run the fleet", "doing"), task(3, "Merge", "done")];
const dragged = (id) => ({ preventDefault() {}, dataTransfer: { getData: () => String(id) } });
const column = (view, status) => find(view, (n) => n.props["data-status"] === status);

test("the board has a column per status holding its tasks", () => {
  const view = ProjectBoard(fakeContext(createApi(), { id: 7 }), { tasks: TASKS });
  const columns = findAll(view, (n) => n.tag === "section");
  assert.deepEqual(columns.map((c) => c.props["data-status"]), ["todo", "doing", "done"]);
  assert.deepEqual(findAll(column(view, "doing"), (n) => n.tag === "article").map(text), ["Run the fleet"]);
});

test("dropping a task on a column PATCHes its new status", async () => {
  const { fetch, calls } = fakeFetch({ "PATCH /projects/7/tasks/1": [200, task(1, "Write the spec", "done")] });
  const ctx = fakeContext(createApi({ fetch }), { id: 7 });
  await column(ProjectBoard(ctx, { tasks: TASKS }), "done").props.ondrop(dragged(1));
  assert.deepEqual(calls.map((c) => [c.key, c.body]), [["PATCH /projects/7/tasks/1", { status: "done" }]]);
  const after = ProjectBoard(ctx, ctx.state());
  assert.deepEqual(findAll(column(after, "done"), (n) => n.tag === "article").map(text), ["Write the spec", "Merge"]);
});

test("dropping a task on its own column sends nothing; a failed move shows why", async () => {
  const failure = { error: { code: "not_found", message: "task 2 does not exist in project 7", details: [] } };
  const { fetch, calls } = fakeFetch({ "PATCH /projects/7/tasks/2": [404, failure] });
  const ctx = fakeContext(createApi({ fetch }), { id: 7 });
  const view = ProjectBoard(ctx, { tasks: TASKS });
  await column(view, "doing").props.ondrop(dragged(2));
  assert.equal(calls.length, 0);
  await column(view, "todo").props.ondrop(dragged(2));
  const alert = find(ProjectBoard(ctx, { tasks: TASKS, ...ctx.state() }), (n) => n.props.role === "alert");
  assert.match(text(alert), /task 2 does not exist/);
});
