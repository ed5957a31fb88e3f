// A typed client for backend/app/auth.py and backend/app/tasks.py (see docs/api.md).
import type { ErrorBody, Page, Project, Status, Task, TaskChanges, User } from "./types";

export class ApiError extends Error {
  readonly status: number;
  readonly body: ErrorBody;

  constructor(status: number, body: ErrorBody) {
    super(body.error ? body.error.message : "HTTP " + status);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export interface ApiOptions {
  baseUrl?: string;
  fetch?: typeof fetch;
  onUnauthorized?: () => void; // a 401 outside /auth: the session is gone
}

export interface Query { status?: Status | ""; assignee?: number; limit?: number; cursor?: string }

export type Api = ReturnType<typeof createApi>;

export function createApi(options: ApiOptions = {}) {
  const base = options.baseUrl || "";
  const send = options.fetch || globalThis.fetch.bind(globalThis);

  async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await send(base + path, {
      method,
      credentials: "include",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) {
      if (response.status === 401 && !path.startsWith("/auth/") && options.onUnauthorized) options.onUnauthorized();
      throw new ApiError(response.status, data || {});
    }
    return data;
  }

  function query(params: Query): string {
    const pairs = Object.entries(params).filter(([, value]) => value !== undefined && value !== "");
    return pairs.length ? "?" + pairs.map(([k, v]) => k + "=" + encodeURIComponent(String(v))).join("&") : "";
  }

  return {
    signup: (email: string, password: string) => request<User>("POST", "/auth/signup", { email, password }),
    login: (email: string, password: string) => request<User>("POST", "/auth/login", { email, password }),
    logout: () => request<null>("POST", "/auth/logout"),
    listProjects: (params: Query = {}) => request<Page<Project>>("GET", "/projects" + query(params)),
    createProject: (name: string) => request<Project>("POST", "/projects", { name }),
    getProject: (id: number) => request<Project>("GET", "/projects/" + id),
    listTasks: (projectId: number, params: Query = {}) =>
      request<Page<Task>>("GET", "/projects/" + projectId + "/tasks" + query(params)),
    createTask: (projectId: number, title: string) =>
      request<Task>("POST", "/projects/" + projectId + "/tasks", { title }),
    updateTask: (projectId: number, taskId: number, changes: TaskChanges) =>
      request<Task>("PATCH", "/projects/" + projectId + "/tasks/" + taskId, changes),
    deleteTask: (projectId: number, taskId: number) =>
      request<null>("DELETE", "/projects/" + projectId + "/tasks/" + taskId),
  };
}
