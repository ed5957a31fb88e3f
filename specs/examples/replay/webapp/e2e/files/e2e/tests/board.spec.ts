import { expect, test } from "@playwright/test";

// Sign up, log in, create a project, add three tasks, move one to done, filter by status.
test("a new user plans a project on the board", async ({ page }) => {
  const email = `e2e-${Date.now()}@example.com`;
  await page.goto("/#/signup");
  await page.getByLabel("E-mail").fill(email);
  await page.getByLabel("Password").fill("correct horse");
  await page.getByRole("button", { name: "Sign up" }).click();
  await expect(page.getByRole("heading", { name: "Projects" })).toBeVisible();

  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("E-mail").fill(email);
  await page.getByLabel("Password").fill("correct horse");
  await page.getByRole("button", { name: "Log in" }).click();

  await page.getByLabel("Project name").fill("Launch");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("link", { name: "Launch" }).click();
  for (const title of ["Write the spec", "Run the fleet", "Merge the branches"]) {
    await page.getByLabel("New task").fill(title);
    await page.getByRole("button", { name: "Add" }).click();
    await expect(page.getByRole("article").filter({ hasText: title })).toBeVisible();
  }

  const done = page.locator('[data-status="done"]');
  await page.getByRole("article").filter({ hasText: "Write the spec" }).dragTo(done);
  await expect(done.getByRole("article")).toHaveText(["Write the spec"]);

  await page.getByLabel("Show").selectOption("done");
  await expect(page.getByRole("article")).toHaveText(["Write the spec"]);
  await page.getByLabel("Show").selectOption("todo");
  await expect(page.getByRole("article")).toHaveText(["Run the fleet", "Merge the branches"]);
});

test("a wrong password shows an error", async ({ page }) => {
  await page.goto("/#/login");
  await page.getByLabel("E-mail").fill("nobody@example.com");
  await page.getByLabel("Password").fill("wrong horse");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByRole("alert")).toHaveText("Wrong e-mail or password.");
});
