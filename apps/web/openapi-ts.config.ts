import { defineConfig } from '@hey-api/openapi-ts'

// Input is the schema dumped by scripts/generate_client.sh; output is committed (builds need no Python).
// Request bodies use the generated `*Writable` types (they include write-only fields such as api_key).
export default defineConfig({
  input: './openapi.json',
  output: { path: './src/api' },
  plugins: ['@hey-api/client-fetch', '@hey-api/typescript', { name: '@hey-api/sdk' }],
})
