import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "tests",
  outputDir: "/tmp/playwright-results", // outside the repository
  reporter: "list",
  use: { baseURL: process.env.BASE_URL || "http://127.0.0.1:8000", trace: "retain-on-failure" },
});
