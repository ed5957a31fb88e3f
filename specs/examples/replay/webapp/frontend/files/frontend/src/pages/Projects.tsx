import { formValues, h } from "../h";
import type { VNode } from "../h";
import type { Context, PageState, Project } from "../types";

export async function loadProjects(ctx: Context): Promise<PageState> {
  const page = await ctx.api.listProjects({ limit: 100 });
  return { projects: page.items };
}

export function Projects(ctx: Context, state: PageState): VNode {
  const projects = state.projects || [];

  async function create(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const project = await ctx.api.createProject(formValues(form).name);
    form.reset();
    ctx.update({ projects: [...projects, project] });
  }

  async function logout(): Promise<void> {
    await ctx.api.logout();
    ctx.navigate("/login");
  }

  return h("main", { class: "projects" },
    h("header", null, h("h1", null, "Projects"), h("button", { type: "button", onclick: logout }, "Log out")),
    projects.length ? null : h("p", null, "No project yet."),
    h("ul", null, projects.map((p: Project) => h("li", null, h("a", { href: "#/projects/" + p.id }, p.name)))),
    h("form", { onsubmit: create },
      h("label", null, "Project name", h("input", { name: "name", required: true })),
      h("button", { type: "submit" }, "Create")));
}
