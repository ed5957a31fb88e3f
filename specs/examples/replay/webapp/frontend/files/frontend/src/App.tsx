import { ApiError, createApi } from "./api";
import type { ApiOptions } from "./api";
import { render } from "./h";
import { Login } from "./pages/Login";
import { ProjectBoard, loadProject } from "./pages/Project";
import { Projects, loadProjects } from "./pages/Projects";
import { Signup } from "./pages/Signup";
import type { Context, PageState, View } from "./types";

export interface Route {
  view: View;
  params: Record<string, number>;
  load?: (ctx: Context) => Promise<PageState>;
}

// Routing by the hash: #/login, #/signup, #/projects, #/projects/<id>.
export function route(path: string): Route {
  const board = /^\/projects\/(\d+)$/.exec(path);
  if (board) return { view: ProjectBoard, params: { id: Number(board[1]) }, load: loadProject };
  if (path === "/projects") return { view: Projects, params: {}, load: loadProjects };
  if (path === "/signup") return { view: Signup, params: {} };
  return { view: Login, params: {} };
}

// Mounts the app in `root`; any 401 from the API sends the user to the log-in page.
export function start(root: Element, win: Window, options: ApiOptions = {}): Promise<void> {
  let state: PageState = {};
  let current = route(win.location.hash.slice(1));
  const ctx: Context = {
    api: createApi({ ...options, onUnauthorized: () => ctx.navigate("/login") }),
    navigate: (path: string) => {
      win.location.hash = "#" + path;
    },
    update: (patch: PageState) => {
      state = { ...state, ...patch };
      draw();
    },
    params: current.params,
  };

  function draw(): void {
    root.replaceChildren(render(current.view(ctx, state), win.document));
  }

  async function open(): Promise<void> {
    current = route(win.location.hash.slice(1));
    ctx.params = current.params;
    state = {};
    draw();
    if (!current.load) return;
    try {
      ctx.update(await current.load(ctx));
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) ctx.update({ error: String(err) });
    }
  }

  win.addEventListener("hashchange", open);
  return open();
}
