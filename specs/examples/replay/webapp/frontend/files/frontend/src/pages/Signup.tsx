import { ApiError } from "../api";
import { h } from "../h";
import type { VNode } from "../h";
import type { Context, PageState } from "../types";
import { authForm } from "./Login";

function explain(err: unknown): string {
  if (!(err instanceof ApiError)) return "Could not sign up: " + String(err);
  if (err.status === 409) return "That e-mail already has an account.";
  const problem = err.body.error && err.body.error.details[0];
  return problem ? problem.field + ": " + problem.problem : err.message;
}

export function Signup(ctx: Context, state: PageState): VNode {
  return authForm(ctx, state, {
    title: "Sign up",
    submit: (email: string, password: string) => ctx.api.signup(email, password),
    explain,
    footer: h("p", null, "Have an account? ", h("a", { href: "#/login" }, "Log in")),
  });
}
