import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { mockApi, summary } from '@/test/fetchMock'
import { useEvaluationsStore } from './evaluations'

describe('evaluations store', () => {
  let listCalls = 0
  let calls: ReturnType<typeof mockApi>
  beforeEach(() => {
    setActivePinia(createPinia())
    listCalls = 0
    calls = mockApi({
      'GET /api/v1/evaluations': () => { listCalls++; return { json: { items: [summary(3), summary(2)], total: 42, page: 1, page_size: 20 } } },
      'POST /api/v1/evaluations/3/cancel': () => ({ json: { ...summary(3, { status: 'running' }), cancel_requested: true, revision: 5 } }),
      'DELETE /api/v1/evaluations/2': () => ({ status: 204, text: '' }),
      'POST /api/v1/evaluations/9/retry': () => ({ status: 409, json: { detail: 'evaluation 9 is still running', problems: [] } }),
    })
  })

  it('sends filters and pagination as query parameters', async () => {
    const store = useEvaluationsStore()
    store.filters.statuses = ['running', 'failed']
    store.filters.q = '  gsm8k '
    store.filters.modelId = 4
    store.setPageSize(50)
    await store.load()
    const url = calls.at(-1)!.url
    expect(url.searchParams.getAll('status')).toEqual(['running', 'failed'])
    expect(url.searchParams.get('q')).toBe('gsm8k')
    expect(url.searchParams.get('model_id')).toBe('4')
    expect(url.searchParams.get('page_size')).toBe('50')
    expect(url.searchParams.has('dataset_id')).toBe(false)
    expect(store.total).toBe(42)
    expect(store.hasFilters).toBe(true)
  })

  it('merges pushed updates in place and reloads page 1 for a new job', async () => {
    const store = useEvaluationsStore()
    await store.load()
    const before = listCalls
    store.applyUpdates([summary(2, { status: 'running', fraction: 0.5, revision: 3 })])
    expect(store.items.find((i) => i.id === 2)).toMatchObject({ status: 'running', fraction: 0.5 })
    expect(listCalls).toBe(before)
    store.applyUpdates([summary(7)])
    await vi.waitFor(() => expect(listCalls).toBe(before + 1))
  })

  it('cancel updates the row; delete removes it; a refused action throws the server message', async () => {
    const store = useEvaluationsStore()
    await store.load()
    await store.cancel(3)
    expect(store.items.find((i) => i.id === 3)?.status).toBe('running')
    await store.remove(2)
    expect(calls.some((c) => c.method === 'DELETE')).toBe(true)
    await expect(store.retry(9)).rejects.toThrow('evaluation 9 is still running')
  })

  it('keeps the server error readable when the list fails', async () => {
    mockApi({ 'GET /api/v1/evaluations': () => ({ status: 503, json: { detail: 'database is starting', problems: [] } }) })
    const store = useEvaluationsStore()
    await store.load()
    expect(store.error).toBe('database is starting')
    expect(store.loading).toBe(false)
  })
})
