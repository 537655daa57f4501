import { resolve } from 'node:path';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Builds the GraphiQL playground (index.html) into dist/: one HTML page, one script, one stylesheet,
// with stable names so src/http/assets.rs can embed them. The binary serves them under /playground/.
// The dashboard (dashboard.html, dashboard.js) is plain JS and needs no build.
export default defineConfig({
  base: '/playground/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 4096,
    assetsInlineLimit: 0,
    rollupOptions: {
      input: resolve(import.meta.dirname, 'index.html'),
      output: {
        inlineDynamicImports: true,
        entryFileNames: 'assets/[name].js',
        chunkFileNames: 'assets/[name].js',
        assetFileNames: 'assets/[name][extname]',
      },
    },
  },
});
