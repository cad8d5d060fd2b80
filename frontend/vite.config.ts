import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the panel with hot reload and proxies the API to a local botmox
// (`cargo xtask run`, or BOTMOX_URL). Same origin for the browser, so the refresh cookie works.
const target = process.env.BOTMOX_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/api": { target, changeOrigin: true } } },
  build: {
    target: "es2022",
    sourcemap: false,
    // Pages are split per route (React.lazy); this keeps the entry chunk small.
    chunkSizeWarningLimit: 400,
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
