// Issue 8, finding 16: the UI speaks the server's status vocabulary. `timeout` is final (polling stops), it is in
// the filter, the tag and both languages, and the actions offered are the server's answer (retry for a timed-out
// job, none for a succeeded one).
import { flushPromises, mount } from '@vue/test-utils'
import { NDialogProvider, NMessageProvider, NSelect } from 'naive-ui'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { type Component, defineComponent, h } from 'vue'
import { createMemoryHistory, createRouter } from 'vue-router'
import type { EvaluationStatus } from '@/api/types.gen'
import StatusTag from '@/components/StatusTag.vue'
import { createAppI18n } from '@/i18n'
import en from '@/i18n/en'
import zh from '@/i18n/zh'
import { routes } from '@/router'
import { useEvaluationStore } from '@/stores/evaluation'
import { detail, mockApi, SERVER_STATUS_FLAGS, summary } from '@/test/fetchMock'
import { mountApp } from '@/test/mountApp'
import { EVALUATION_STATUSES } from '@/utils/status'
import EvaluationDetailView from '@/views/EvaluationDetailView.vue'
import EvaluationsView from '@/views/EvaluationsView.vue'

/** No WebSocket here: every live feed falls back to polling, the path that used to poll a timed-out job forever. */
class RefusedSocket {
  constructor() { throw new Error('no WebSocket in this test') }
}

function mountView(component: Component, props: Record<string, unknown> = {}) {
  const router = createRouter({ history: createMemoryHistory(), routes })
  const host = defineComponent({
    render: () => h(NMessageProvider, null, { default: () => h(NDialogProvider, null, { default: () => h(component, props) }) }),
  })
  return mount(host, { global: { plugins: [createPinia(), createAppI18n('en'), router] }, attachTo: document.body })
}

beforeEach(() => {
  setActivePinia(createPinia())
  vi.stubGlobal('WebSocket', RefusedSocket)
})
afterEach(() => {
  vi.useRealTimers()
  vi.unstubAllGlobals()
  document.body.innerHTML = ''
})

describe('status vocabulary', () => {
  it('knows every status of the server, timeout included, and names each in both languages', () => {
    const all: EvaluationStatus[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'timeout']
    expect([...EVALUATION_STATUSES].sort()).toEqual([...all].sort())
    expect(Object.keys(SERVER_STATUS_FLAGS).sort()).toEqual([...all].sort())
    for (const status of all) {
      expect(en.status[status], status).toBeTruthy()
      expect(zh.status[status], status).toBeTruthy()
    }
    expect(mountApp(StatusTag, { status: 'timeout' }).text()).toBe('Timed out')
    expect(mountApp(StatusTag, { status: 'timeout' }, 'zh').text()).toBe('已超时')
    expect(mountApp(StatusTag, { status: 'timeout' }).find('.n-tag').classes().join(' ')).not.toContain('default')
  })

  it('stops polling once the server says the job timed out', async () => {
    vi.useFakeTimers()
    let polls = 0
    mockApi({
      'GET /api/v1/evaluations/5': () => {
        polls += 1
        return { json: detail(5, polls < 3 ? { status: 'running', revision: polls } : { status: 'timeout', revision: 9 }) }
      },
      'GET /api/v1/evaluations/5/logs': () => ({ text: '' }),
    })
    const store = useEvaluationStore()
    await store.open(5)
    expect(store.liveMode).toBe('polling')
    await vi.advanceTimersByTimeAsync(20_000)
    expect(store.detail?.status).toBe('timeout')
    expect(store.isFinal).toBe(true)
    expect(store.liveMode).toBe('closed')
    const pollsWhenFinal = polls
    await vi.advanceTimersByTimeAsync(60_000)
    expect(polls).toBe(pollsWhenFinal) // the old UI kept asking every 2 s forever
    store.close()
  })

  it('opens a timed-out evaluation as final: no live feed at all', async () => {
    mockApi({
      'GET /api/v1/evaluations/6': () => ({ json: detail(6, { status: 'timeout' }) }),
      'GET /api/v1/evaluations/6/logs': () => ({ text: '' }),
    })
    const store = useEvaluationStore()
    await store.open(6)
    expect(store.isFinal).toBe(true)
    expect(store.liveMode).toBe('closed')
  })
})

describe('evaluations list', () => {
  function listApi(items: ReturnType<typeof summary>[]) {
    return mockApi({
      'GET /api/v1/evaluations': () => ({ json: { items, total: items.length, page: 1, page_size: 20 } }),
      'GET /api/v1/models': () => ({ json: [] }),
      'GET /api/v1/datasets': () => ({ json: [] }),
    })
  }

  it('offers retry for a timed-out job, not for a succeeded one, and cancel only while active', async () => {
    listApi([summary(1, { status: 'succeeded' }), summary(2, { status: 'timeout' }), summary(3, { status: 'running' })])
    const view = mountView(EvaluationsView)
    await flushPromises()
    const row = (id: number) => view.find(`tr[data-evaluation-id="${id}"]`)
    expect(row(2).attributes('data-status')).toBe('timeout')
    expect(row(2).text()).toContain('Timed out')
    expect(row(2).find('[data-test=retry]').exists()).toBe(true)
    expect(row(2).find('[data-test=delete]').exists()).toBe(true)
    expect(row(2).find('[data-test=cancel]').exists()).toBe(false)
    expect(row(1).find('[data-test=retry]').exists()).toBe(false) // the server would answer 409
    expect(row(1).find('[data-test=delete]').exists()).toBe(true)
    expect(row(3).find('[data-test=cancel]').exists()).toBe(true)
    expect(row(3).find('[data-test=retry]').exists()).toBe(false)
    view.unmount()
  })

  it('follows the server flags, not the status name', async () => {
    // Should the server one day allow retrying a succeeded job, the UI offers it without a change here.
    listApi([summary(1, { status: 'succeeded', can_retry: true })])
    const view = mountView(EvaluationsView)
    await flushPromises()
    expect(view.find('tr[data-evaluation-id="1"] [data-test=retry]').exists()).toBe(true)
    view.unmount()
  })

  it('filters by timeout, which the server accepts', async () => {
    const calls = listApi([summary(2, { status: 'timeout' })])
    const view = mountView(EvaluationsView)
    await flushPromises()
    const filter = view.findAllComponents(NSelect).find((s) => s.attributes('data-test') === 'status-filter')!
    const options = filter.props('options') as { label: string; value: string }[]
    expect(options).toContainEqual({ label: 'Timed out', value: 'timeout' })
    expect(options.map((o) => o.value)).toEqual(EVALUATION_STATUSES)
    filter.vm.$emit('update:value', ['timeout'])
    await flushPromises()
    expect(calls.at(-1)!.url.searchParams.getAll('status')).toEqual(['timeout'])
    view.unmount()
  })
})

describe('evaluation detail', () => {
  function detailApi(body: ReturnType<typeof detail>) {
    mockApi({
      [`GET /api/v1/evaluations/${body.id}`]: () => ({ json: body }),
      [`GET /api/v1/evaluations/${body.id}/logs`]: () => ({ text: '' }),
      [`GET /api/v1/evaluations/${body.id}/samples`]: () => ({ json: { items: [], total: 0, page: 1, page_size: 50 } }),
    })
  }

  it('shows retry for a timed-out evaluation and hides it for a succeeded one', async () => {
    detailApi(detail(7, { status: 'timeout' }))
    const timedOut = mountView(EvaluationDetailView, { id: 7 })
    await flushPromises()
    expect(timedOut.find('[data-test=detail-status]').text()).toBe('Timed out')
    expect(timedOut.find('[data-test=detail-retry]').exists()).toBe(true)
    expect(timedOut.find('[data-test=detail-cancel]').exists()).toBe(false)
    timedOut.unmount()

    detailApi(detail(8, { status: 'succeeded' }))
    const succeeded = mountView(EvaluationDetailView, { id: 8 })
    await flushPromises()
    expect(succeeded.find('[data-test=detail-status]').text()).toBe('Succeeded')
    expect(succeeded.find('[data-test=detail-retry]').exists()).toBe(false)
    succeeded.unmount()
  })
})
