// The shapes the API answers with (docs/api.md) and the context every page gets.
import type { Api } from "./api";
import type { VNode } from "./h";

export type Status = "todo" | "doing" | "done";

export interface User { id: number; email: string }

export interface Project {
  id: number;
  owner_id: number;
  name: string;
  created_at: string;
  updated_at: string;
}

export interface Task {
  id: number;
  project_id: number;
  title: string;
  status: Status;
  assignee_id: number | null;
  created_at: string;
  updated_at: string;
}

export interface Page<T> { items: T[]; next_cursor: string | null }

export interface ErrorBody {
  error?: { code: string; message: string; details: { field: string; problem: string }[] };
}

export type TaskChanges = Partial<Pick<Task, "title" | "status" | "assignee_id">>;

export interface PageState {
  error?: string;
  busy?: boolean;
  projects?: Project[];
  project?: Project;
  tasks?: Task[];
  filter?: Status | "";
}

export interface Context {
  api: Api;
  navigate: (path: string) => void;
  update: (patch: PageState) => void;
  params: Record<string, number>;
}

export type View = (ctx: Context, state: PageState) => VNode;

export interface AuthAction {
  title: string;
  submit: (email: string, password: string) => Promise<unknown>;
  explain: (err: unknown) => string; // the message an error shows
  footer: VNode;
}
