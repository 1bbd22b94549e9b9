/// <reference types="vitest/config" />
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import { fileURLToPath, URL } from 'node:url'

// During `npm run dev` the API is a separate `aieval serve`; AIEVAL_API points at it.
const apiTarget = process.env.AIEVAL_API ?? 'http://127.0.0.1:8000'

export default defineConfig({
  plugins: [vue()],
  resolve: { alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) } },
  server: {
    // changeOrigin off: the API sees the browser's own Host (localhost:5173, a trusted loopback name), which matches
    // the Origin the browser sends, so its same-origin check passes for POSTs and WebSockets. With changeOrigin the
    // Host would become the target's and every POST would look cross-site (403). An API on another machine needs
    // the dev server's name in its AIEVAL_TRUSTED_HOSTS.
    proxy: { '/api': { target: apiTarget, ws: true, changeOrigin: false } },
  },
  build: {
    chunkSizeWarningLimit: 700,
    rolldownOptions: {
      output: {
        // Vue and ECharts change rarely: their own chunks stay cached across UI releases. Naive UI is left to
        // the default splitting so each route chunk carries only the components it uses.
        codeSplitting: {
          groups: [
            { name: 'echarts', test: /node_modules[\\/](echarts|zrender)/, priority: 20 },
            { name: 'vue', test: /node_modules[\\/](@vue|vue|vue-router|pinia|vue-i18n|@intlify)[\\/]/, priority: 5 },
          ],
        },
      },
    },
  },
  // Absolute asset URLs: with history routing, index.html is also the answer for /evaluations/5, where a
  // relative ./assets/... would resolve to /evaluations/assets/... . The API is called at /api on the same
  // origin, so the UI is served at the root anyway.
  base: '/',
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.ts'],
    css: false,
    // The wizard's tests walk a whole mounted view through several steps (~4 s alone); 5 s, the default, fails
    // them whenever the machine is busy.
    testTimeout: 20_000,
  },
})
