// A fetch stand-in for the generated client: routes by method + path, records every request.
import { client } from '@/api/client.gen'
import type { EvaluationDetail, EvaluationStatus, EvaluationSummary } from '@/api/types.gen'
import statusFlags from './statusFlags.json'

export interface Recorded { method: string; url: URL; body: unknown; headers: Headers }
type Handler = (request: Recorded) => { status?: number; json?: unknown; text?: string; headers?: Record<string, string> }

export function mockApi(routes: Record<string, Handler>) {
  const calls: Recorded[] = []
  const fetchMock = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(String(input), init)
    const url = new URL(request.url, 'http://localhost')
    const text = request.method === 'GET' ? '' : await request.clone().text()
    let body: unknown = text
    try { body = text ? JSON.parse(text) : undefined } catch { /* form data stays text */ }
    const recorded = { method: request.method, url, body, headers: new Headers(request.headers) }
    calls.push(recorded)
    const key = `${request.method} ${url.pathname}`
    const handler = routes[key]
    if (!handler) return new Response(JSON.stringify({ detail: `no mock for ${key}` }), { status: 599 })
    const result = handler(recorded)
    if (result.status === 204) return new Response(null, { status: 204, headers: result.headers })
    const payload = result.text ?? JSON.stringify(result.json ?? null)
    return new Response(payload, {
      status: result.status ?? 200,
      headers: { 'content-type': result.text !== undefined ? 'text/plain' : 'application/json', ...result.headers },
    })
  }
  client.setConfig({ baseUrl: 'http://localhost', fetch: fetchMock as typeof fetch })
  return calls
}

type StatusFlags = Pick<EvaluationSummary, 'terminal' | 'can_cancel' | 'can_retry'>
/** What the server sends with each status. The server's own test (tests/unit/server/
 *  test_hardening_status_vocabulary.py) reads this same file and checks the server agrees, so these mocks
 *  cannot drift from it. */
export const SERVER_STATUS_FLAGS: Record<EvaluationStatus, StatusFlags> = statusFlags

/** An evaluation as the server sends it: the flags follow `overrides.status` (queued by default). */
export function summary(id: number, overrides: Partial<EvaluationSummary> = {}): EvaluationSummary {
  const status = overrides.status ?? 'queued'
  return {
    id, name: `evaluation ${id}`, status, queue: 'local', models: [{ id: 1, name: 'demo' }],
    datasets: [{ id: 1, name: 'demo-mcq' }], created_at: '2026-11-24T00:00:00Z', started_at: null, finished_at: null,
    fraction: null, stage: null, revision: 0, error: null, owner: null, visibility: 'shared', can_change: true,
    ...SERVER_STATUS_FLAGS[status], ...overrides,
  }
}

export function detail(id: number, overrides: Partial<EvaluationDetail> = {}): EvaluationDetail {
  return {
    ...summary(id, overrides.status ? { status: overrides.status } : {}), params: {}, attempts: 0, worker: null, heartbeat_at: null, cancel_requested: false, progress: null,
    duration_s: null, log_excerpt: null, manifest: null, pairs: null, scores: [],
    can_rescore: overrides.status === 'succeeded', // the server: only a succeeded evaluation's predictions are all there
    ...overrides,
  }
}
