import { formValues, h } from "../h";
import type { VNode } from "../h";
import type { Context, PageState, Status, Task } from "../types";

const COLUMNS: Status[] = ["todo", "doing", "done"];
const TITLES: Record<string, string> = { todo: "To do", doing: "Doing", done: "Done", "": "All" };

export async function loadProject(ctx: Context, filter: Status | "" = ""): Promise<PageState> {
  const id = ctx.params.id;
  const [project, page] = await Promise.all([ctx.api.getProject(id), ctx.api.listTasks(id, { status: filter, limit: 100 })]);
  return { project, tasks: page.items, filter };
}

// A project's board: a column per status; dropping a card on a column moves the task there.
export function ProjectBoard(ctx: Context, state: PageState): VNode {
  const id = ctx.params.id;
  const tasks = state.tasks || [];

  async function move(taskId: number, status: Status): Promise<void> {
    const task = tasks.find((t: Task) => t.id === taskId);
    if (!task || task.status === status) return;
    try {
      const moved = await ctx.api.updateTask(id, taskId, { status });
      const updated = tasks.map((t: Task) => (t.id === moved.id ? moved : t));
      ctx.update({ tasks: updated.filter((t: Task) => !state.filter || t.status === state.filter), error: undefined });
    } catch (err) {
      ctx.update({ error: "Could not move the task: " + (err instanceof Error ? err.message : String(err)) });
    }
  }

  async function add(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const task = await ctx.api.createTask(id, formValues(form).title);
    form.reset();
    ctx.update({ tasks: [...tasks, task] });
  }

  async function filterBy(event: Event): Promise<void> {
    const select = event.currentTarget as HTMLSelectElement;
    ctx.update(await loadProject(ctx, select.value as Status));
  }

  function card(task: Task): VNode {
    return h("article", {
      class: "card", draggable: true, "data-task": task.id,
      ondragstart: (event: DragEvent) => event.dataTransfer?.setData("text/plain", String(task.id)),
    }, task.title);
  }

  function column(status: Status): VNode {
    return h("section", {
      class: "column", "data-status": status,
      ondragover: (event: DragEvent) => event.preventDefault(),
      ondrop: (event: DragEvent) => {
        event.preventDefault();
        return move(Number(event.dataTransfer?.getData("text/plain")), status);
      },
    }, h("h2", null, TITLES[status]), tasks.filter((t: Task) => t.status === status).map(card));
  }

  return h("main", { class: "board" },
    h("header", null, h("a", { href: "#/projects" }, "Projects"), h("h1", null, state.project ? state.project.name : "")),
    state.error ? h("p", { role: "alert", class: "error" }, state.error) : null,
    h("form", { onsubmit: add },
      h("label", null, "New task", h("input", { name: "title", required: true })),
      h("button", { type: "submit" }, "Add")),
    h("label", null, "Show", h("select", { name: "filter", onchange: filterBy },
      ["", ...COLUMNS].map((s: string) => h("option", { value: s, selected: s === (state.filter || "") }, TITLES[s])))),
    h("div", { class: "columns" }, COLUMNS.map(column)));
}
