import { defineConfig } from "vitest/config";

// Relative asset URLs: the page is served under the API server's service proxy path.
export default defineConfig({
  base: "./",
  build: {
    outDir: "../operator/kflow/server/web",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    target: "es2022",
  },
  test: {
    environment: "node",
    include: ["test/**/*.test.ts"],
  },
});
