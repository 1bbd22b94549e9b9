import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it } from 'vitest'
import { detail, mockApi } from '@/test/fetchMock'
import { useEvaluationStore } from './evaluation'

describe('evaluation detail store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('loads a finished evaluation and its log without opening a live feed', async () => {
    mockApi({
      'GET /api/v1/evaluations/5': () => ({ json: detail(5, { status: 'succeeded', revision: 9, pairs: [{ model: 'm', dataset: 'd', state: 'evaluated', done: 4, total: 4 }] }) }),
      'GET /api/v1/evaluations/5/logs': () => ({ text: 'line one\nline two\n' }),
    })
    const store = useEvaluationStore()
    await store.open(5)
    expect(store.isFinal).toBe(true)
    expect(store.liveMode).toBe('closed')
    expect(store.logLines).toEqual(['line one', 'line two'])
    expect(store.pairs).toEqual([{ model: 'm', dataset: 'd', state: 'evaluated', done: 4, total: 4, error: null }])
  })

  it('prefers live pair progress and never goes back to an older revision', () => {
    const store = useEvaluationStore()
    store.setDetail(detail(5, {
      status: 'running', revision: 4,
      progress: { eta_s: 12, pairs: [{ model: 'm', dataset: 'd', state: 'infer', done: 2, total: null }] },
      pairs: [{ model: 'm', dataset: 'd', state: 'pending', done: 0, total: 4 }],
    }) as never)
    expect(store.pairs[0]).toMatchObject({ state: 'infer', done: 2, total: null })
    expect(store.etaSeconds).toBe(12)
    store.setDetail(detail(5, { status: 'queued', revision: 2 }) as never)
    expect(store.detail?.status).toBe('running')
  })

  it('keeps a tail of at most LOG_TAIL_LINES lines', () => {
    const store = useEvaluationStore()
    store.appendLog(Array.from({ length: 250 }, (_, i) => `a${i}`))
    store.appendLog(Array.from({ length: 100 }, (_, i) => `b${i}`))
    expect(store.logLines).toHaveLength(300)
    expect(store.logLines.at(-1)).toBe('b99')
    expect(store.logLines[0]).toBe('a50')
  })

  it('shows the server error for an unknown evaluation', async () => {
    mockApi({ 'GET /api/v1/evaluations/404': () => ({ status: 404, json: { detail: 'evaluation 404 not found', problems: [] } }) })
    const store = useEvaluationStore()
    await store.open(404)
    expect(store.error).toBe('evaluation 404 not found')
    expect(store.detail).toBeNull()
  })
})
