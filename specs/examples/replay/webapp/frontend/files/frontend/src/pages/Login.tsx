import { ApiError } from "../api";
import { formValues, h } from "../h";
import type { VNode } from "../h";
import type { AuthAction, Context, PageState } from "../types";

// The form of the log-in and sign-up pages: the error of the last attempt above the fields.
export function authForm(ctx: Context, state: PageState, action: AuthAction): VNode {
  async function onsubmit(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const { email, password } = formValues(event.currentTarget as HTMLFormElement);
    ctx.update({ busy: true, error: undefined });
    try {
      await action.submit(email, password);
      ctx.update({ busy: false });
      ctx.navigate("/projects");
    } catch (err) {
      ctx.update({ busy: false, error: action.explain(err) });
    }
  }
  return h("form", { class: "auth", onsubmit },
    h("h1", null, action.title),
    state.error ? h("p", { role: "alert", class: "error" }, state.error) : null,
    h("label", null, "E-mail", h("input", { name: "email", type: "email", required: true })),
    h("label", null, "Password", h("input", { name: "password", type: "password", required: true })),
    h("button", { type: "submit", disabled: Boolean(state.busy) }, action.title),
    action.footer);
}

export function Login(ctx: Context, state: PageState): VNode {
  return authForm(ctx, state, {
    title: "Log in",
    submit: (email: string, password: string) => ctx.api.login(email, password),
    explain: (err: unknown) =>
      err instanceof ApiError && err.status === 401 ? "Wrong e-mail or password." : "Could not log in: " + String(err),
    footer: h("p", null, "New here? ", h("a", { href: "#/signup" }, "Create an account")),
  });
}
