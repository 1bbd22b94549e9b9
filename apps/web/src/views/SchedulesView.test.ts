// Issue 12, continuous evaluation: the schedules page lists what the server holds, previews a cron expression by
// asking the server (its rules and time zones, not a copy), sends what the form says, and shows the server's refusals.
import { NSelect } from 'naive-ui'
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { DatasetRead, ModelRead, ScheduleRead } from '@/api/types.gen'
import { detail, mockApi, type Recorded } from '@/test/fetchMock'
import { mountView, settle, signedInAs } from '@/test/mountApp'
import { formatDate } from '@/utils/format'
import SchedulesView from '@/views/SchedulesView.vue'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = '' })

const ALICE = { id: 3, username: 'alice', display_name: 'Alice' }
const model = (id: number, name: string): ModelRead => ({
  id, name, kind: 'openai', settings: { base_url: 'http://127.0.0.1:8000/v1' }, has_api_key: false, api_key_hint: null,
  is_demo: false, max_concurrency: null, owner: ALICE, visibility: 'private', can_change: true,
  created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z',
})
const dataset = (id: number, name: string, kind: 'custom' | 'builtin'): DatasetRead => ({
  id, name, kind, data_type: 'qa', builtin_config: kind === 'builtin' ? name : null, rows: 3, size_bytes: 100, scorer: 'exact',
  infer_method: 'gen', available: true, is_demo: false, owner: ALICE, visibility: 'private', can_change: true,
  created_at: '2026-11-24T00:00:00Z',
} as DatasetRead)

function schedule(id: number, overrides: Partial<ScheduleRead> = {}): ScheduleRead {
  return {
    id, name: `nightly ${id}`, cron: '0 2 * * *', timezone: 'Asia/Shanghai', enabled: true,
    request: { name: `nightly ${id}`, model_ids: [1], dataset_ids: [2], builtin_datasets: [], params: { limit: 10 } },
    gate_rules: [{ kind: 'no_significant_drop', alpha: 0.05 }], baseline_evaluation_id: null, last_evaluation_id: null,
    last_evaluation_status: null, last_gate_status: null, last_run_at: null, last_error: null,
    next_run_at: '2026-12-02T18:00:00Z', next_runs: ['2026-12-02T18:00:00Z'], owner: ALICE, visibility: 'private',
    can_change: true, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z', ...overrides,
  }
}

/** The server's answers, `schedules` being what GET /schedules returns at the time it is asked. */
function serve(schedules: () => ScheduleRead[], routes: Parameters<typeof mockApi>[0] = {}, role: 'member' | 'viewer' = 'member') {
  return mockApi({
    'GET /api/v1/auth/me': () => signedInAs(role),
    'GET /api/v1/schedules': () => ({ json: schedules() }),
    'GET /api/v1/models': () => ({ json: [model(1, 'qwen-nightly')] }),
    'GET /api/v1/datasets': () => ({ json: [dataset(2, 'letters', 'custom'), dataset(3, 'gsm8k_gen', 'builtin')] }),
    ...routes,
  })
}

const inDocument = (selector: string) => document.querySelector(selector) as HTMLElement | null
const row = (id: number) => inDocument(`[data-schedule-id="${id}"]`)!
async function type(selector: string, value: string) {
  const input = inDocument(`${selector} input`) as HTMLInputElement
  input.value = value
  input.dispatchEvent(new Event('input'))
  await settle()
}
/** The preview waits for a pause in typing (300 ms) before it asks. */
async function afterTyping() {
  await new Promise((resolve) => setTimeout(resolve, 400))
  await settle()
}
const sent = (calls: Recorded[], method: string, path: string) => calls.filter((c) => c.method === method && c.url.pathname === path)

describe('SchedulesView', () => {
  it('lists the schedules: cron and zone, next run or paused, last run with its gate, baseline, refused runs', async () => {
    serve(() => [
      schedule(1, { last_evaluation_id: 41, last_evaluation_status: 'succeeded', last_gate_status: 'failed', baseline_evaluation_id: 40 }),
      schedule(2, { name: 'paused one', enabled: false, next_run_at: null, last_error: 'model 9 was deleted' }),
    ])
    const { wrapper } = await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    expect([...document.querySelectorAll('[data-test=schedule-name]')].map((e) => e.textContent)).toEqual(['nightly 1', 'paused one'])
    expect(row(1).textContent).toContain('0 2 * * * · Asia/Shanghai')
    // The server's next time, in the reader's own clock.
    expect(row(1).querySelector('[data-test=schedule-next]')!.textContent).toBe(`next ${formatDate('2026-12-02T18:00:00Z', 'en')}`)
    expect(row(2).querySelector('[data-test=schedule-next]')!.textContent).toBe('paused')
    expect(row(1).textContent).toContain('#41')
    expect(row(1).querySelector('[data-test=schedule-baseline]')!.textContent).toBe('#40')
    expect(row(1).textContent).toContain('1 rule(s)')
    expect(row(2).textContent).toContain('none') // no baseline
    expect(wrapper.find('[data-test=schedule-last-error]').text()).toBe('paused one last run refused: model 9 was deleted')
  })

  it('zh: the same page in Chinese', async () => {
    serve(() => [schedule(1, { enabled: false, next_run_at: null })])
    await mountView(SchedulesView, '/schedules', {}, 'zh', pinia)
    expect(document.querySelector('h1')!.textContent).toBe('定时评测')
    expect(row(1).querySelector('[data-test=schedule-next]')!.textContent).toBe('已暂停')
    expect(row(1).textContent).toContain('立即运行')
    expect(row(1).textContent).toContain('1 条规则')
    expect(inDocument('[data-test=schedule-new]')!.textContent).toBe('新建定时评测')
  })

  it('a viewer gets no "New schedule"; rows the server says they cannot change have no actions', async () => {
    serve(() => [schedule(1, { can_change: false })], {}, 'viewer')
    await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    expect(inDocument('[data-test=schedule-new]')).toBeNull()
    expect(row(1).querySelector('[data-test=schedule-run-now]')).toBeNull()
    expect(row(1).querySelector('[data-test=schedule-edit]')).toBeNull()
  })

  it('create: the next runs come from the server\'s preview, its refusal of a cron is shown, the body is what the form says', async () => {
    let saved: ScheduleRead[] = []
    const calls = serve(() => saved, {
      'GET /api/v1/schedules/preview': ({ url }) => (url.searchParams.get('cron')!.split(' ').length === 5
        ? { json: { cron: url.searchParams.get('cron'), timezone: url.searchParams.get('timezone'),
          next_runs: ['2026-12-03T02:00:00Z', '2026-12-04T02:00:00Z'] } }
        : { status: 422, json: { detail: `'${url.searchParams.get('cron')}' is not a cron expression the schedules accept`,
          problems: ['cron: five fields: minute hour day-of-month month day-of-week'] } }),
      'POST /api/v1/schedules': ({ body }) => {
        saved = [schedule(5, { name: (body as { name: string }).name })]
        return { status: 201, json: saved[0] }
      },
    })
    const { wrapper } = await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    inDocument('[data-test=schedule-new]')!.click()
    await settle()
    await type('[data-test=schedule-form-timezone]', 'UTC')
    await afterTyping()
    const previews = sent(calls, 'GET', '/api/v1/schedules/preview')
    expect(previews.at(-1)!.url.searchParams.get('cron')).toBe('0 2 * * *')
    expect(previews.at(-1)!.url.searchParams.get('timezone')).toBe('UTC')
    expect(inDocument('[data-test=schedule-form-preview]')!.textContent)
      .toContain(`Next runs: ${formatDate('2026-12-03T02:00:00Z', 'en')} · ${formatDate('2026-12-04T02:00:00Z', 'en')}`)

    await type('[data-test=schedule-form-cron]', '0 2 * *')
    await afterTyping()
    const refusal = inDocument('[data-test=schedule-form-preview] .error')!.textContent
    expect(refusal).toBe("'0 2 * *' is not a cron expression the schedules accept")
    expect(inDocument('[data-test=schedule-form-preview]')!.textContent).not.toContain('Next runs')

    await type('[data-test=schedule-form-cron]', '30 1 * * 1-5')
    await afterTyping()
    await type('[data-test=schedule-form-name]', '  weekday run ')
    const selects = wrapper.findAllComponents(NSelect)
    const models = selects.find((s) => s.attributes('data-test') === 'schedule-form-models')!
    const datasets = selects.find((s) => s.attributes('data-test') === 'schedule-form-datasets')!
    expect((models.props('options') as { label: string }[]).map((o) => o.label)).toEqual(['qwen-nightly'])
    // The built-in ones are named by config in their own field.
    expect((datasets.props('options') as { label: string }[]).map((o) => o.label)).toEqual(['letters'])
    models.vm.$emit('update:value', [1])
    datasets.vm.$emit('update:value', [2])
    inDocument('[data-test=schedule-form-add-min]')!.click()
    await settle()
    await type('.min-row', 'letters') // its first field: the dataset
    inDocument('[data-test=schedule-form-save]')!.click()
    await settle()

    const posts = sent(calls, 'POST', '/api/v1/schedules')
    expect(posts).toHaveLength(1)
    expect(posts[0].body).toEqual({
      name: 'weekday run', cron: '30 1 * * 1-5', timezone: 'UTC', enabled: true,
      gate_rules: [{ kind: 'no_significant_drop', alpha: 0.05 }, { kind: 'min_score', dataset: 'letters', metric: null, threshold: 50 }],
      request: { name: 'weekday run', model_ids: [1], dataset_ids: [2], builtin_datasets: [], params: {} },
    })
    expect(document.body.textContent).toContain('Schedule saved')
    expect([...document.querySelectorAll('[data-test=schedule-name]')].map((e) => e.textContent)).toEqual(['weekday run'])
  })

  it('a refused save shows the server\'s 422 message and problems in the form, which stays open', async () => {
    const calls = serve(() => [], {
      'GET /api/v1/schedules/preview': () => ({ json: { cron: '0 2 * * *', timezone: 'UTC', next_runs: [] } }),
      'POST /api/v1/schedules': () => ({ status: 422, json: {
        detail: 'The evaluation request cannot be run', problems: ['model_ids: choose at least one model'] } }),
    })
    await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    inDocument('[data-test=schedule-new]')!.click()
    await settle()
    // No name: the form says so itself and sends nothing.
    inDocument('[data-test=schedule-form-save]')!.click()
    await settle()
    expect(inDocument('[role=alert]')!.textContent).toContain('Give the schedule a name')
    expect(sent(calls, 'POST', '/api/v1/schedules')).toHaveLength(0)

    await type('[data-test=schedule-form-name]', 'no models')
    inDocument('[data-test=schedule-form-save]')!.click()
    await settle()
    expect(sent(calls, 'POST', '/api/v1/schedules')).toHaveLength(1)
    const alert = inDocument('[role=alert]')!
    expect(alert.textContent).toContain('The evaluation request cannot be run')
    expect(alert.textContent).toContain('model_ids: choose at least one model')
    expect(inDocument('[data-test=schedule-form-save]')).not.toBeNull()
  })

  it('the switch pauses and resumes a schedule; a refusal is shown and the list keeps the server\'s state', async () => {
    let enabled = true
    let refuse = false
    const calls = serve(() => [schedule(1, { enabled, next_run_at: enabled ? '2026-12-02T18:00:00Z' : null })], {
      'PATCH /api/v1/schedules/1': ({ body }) => {
        if (refuse) return { status: 403, json: { detail: 'Only its owner or an administrator can change schedule 1' } }
        enabled = (body as { enabled: boolean }).enabled
        return { json: schedule(1, { enabled }) }
      },
    })
    await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    const toggle = () => row(1).querySelector('[data-test=schedule-enabled]') as HTMLElement
    toggle().click()
    await settle()
    expect(sent(calls, 'PATCH', '/api/v1/schedules/1').map((c) => c.body)).toEqual([{ enabled: false }])
    expect(row(1).querySelector('[data-test=schedule-next]')!.textContent).toBe('paused')
    expect(toggle().getAttribute('aria-checked')).toBe('false')

    toggle().click()
    await settle()
    expect(sent(calls, 'PATCH', '/api/v1/schedules/1').at(-1)!.body).toEqual({ enabled: true })
    expect(row(1).querySelector('[data-test=schedule-next]')!.textContent).toMatch(/^next /)

    refuse = true
    toggle().click()
    await settle()
    expect(document.body.textContent).toContain('Only its owner or an administrator can change schedule 1')
    expect(toggle().getAttribute('aria-checked')).toBe('true')
  })

  it('Run now starts an evaluation and opens it; a refusal (e.g. a quota) is shown', async () => {
    let refuse = false
    const calls = serve(() => [schedule(1)], {
      'POST /api/v1/schedules/1/run-now': () => (refuse
        ? { status: 429, json: { detail: 'You already have 2 evaluations running (your limit)' } }
        : { status: 201, json: detail(77) }),
      'GET /api/v1/evaluations/77': () => ({ json: detail(77) }),
    })
    const { router } = await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    ;(row(1).querySelector('[data-test=schedule-run-now]') as HTMLElement).click()
    await settle()
    expect(sent(calls, 'POST', '/api/v1/schedules/1/run-now')).toHaveLength(1)
    expect(document.body.textContent).toContain('Evaluation #77 started')
    // The evaluation page is loaded on demand: its first import can take a while on a busy machine.
    await vi.waitFor(() => expect(router.currentRoute.value.fullPath).toBe('/evaluations/77'), { timeout: 10_000 })

    await router.push('/schedules')
    refuse = true
    ;(row(1).querySelector('[data-test=schedule-run-now]') as HTMLElement).click()
    await settle()
    expect(document.body.textContent).toContain('You already have 2 evaluations running (your limit)')
    expect(router.currentRoute.value.fullPath).toBe('/schedules')
  })

  it('on a phone (under 768 px) Run now and Edit sit next to the name, not 1,500 px to the right', async () => {
    const width = window.innerWidth
    Object.defineProperty(window, 'innerWidth', { value: 390, configurable: true })
    try {
      serve(() => [schedule(1)])
      await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
      const headers = [...document.querySelectorAll('[data-test=schedules-table] thead th')].map((th) => th.textContent)
      expect(headers.slice(0, 2)).toEqual(['Name', 'Actions'])
      const cells = [...row(1).querySelectorAll('td')]
      expect(cells[1].querySelector('[data-test=schedule-run-now]')).not.toBeNull()
    } finally {
      Object.defineProperty(window, 'innerWidth', { value: width, configurable: true })
    }
  })

  it('a failed list load is shown, not an empty table', async () => {
    serve(() => [], { 'GET /api/v1/schedules': () => ({ status: 503, json: { detail: 'The database is not reachable' } }) })
    await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    expect(inDocument('[role=alert]')!.textContent).toContain('The database is not reachable')
  })
})
