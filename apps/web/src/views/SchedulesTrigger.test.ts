// Schedules that run when a model endpoint serves a new version (trigger new_model_version): the list says so and
// when the endpoints were last asked, and the form sends the trigger with no cron (or with one, optional).
import { NSelect } from 'naive-ui'
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { ModelRead, ScheduleRead } from '@/api/types.gen'
import { mockApi, type Recorded } from '@/test/fetchMock'
import { mountView, settle, signedInAs } from '@/test/mountApp'
import { formatDate } from '@/utils/format'
import SchedulesView from '@/views/SchedulesView.vue'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = '' })

const ALICE = { id: 3, username: 'alice', display_name: 'Alice' }
const endpointModel: ModelRead = {
  id: 1, name: 'vllm qwen', kind: 'openai', settings: { base_url: 'http://127.0.0.1:8000/v1', model: 'qwen' },
  has_api_key: true, api_key_hint: 'sk-…9f2a', is_demo: false, max_concurrency: null, owner: ALICE, visibility: 'private',
  can_change: true, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z',
}
const VERSION = '{"1":{"created":1700000000,"id":"qwen","root":"/ckpt/v1"}}'

function watching(id: number, overrides: Partial<ScheduleRead> = {}): ScheduleRead {
  return {
    id, name: `on release ${id}`, trigger: 'new_model_version', cron: null, timezone: 'UTC', enabled: true,
    request: { name: 'on release', model_ids: [1], dataset_ids: [], builtin_datasets: ['gsm8k_gen'], params: {} },
    gate_rules: [], baseline_evaluation_id: null, last_evaluation_id: null, last_evaluation_status: null,
    last_gate_status: null, last_run_at: null, last_error: null, next_run_at: null, next_runs: [],
    model_version: VERSION, version_checked_at: '2026-12-02T08:05:00Z', owner: ALICE, visibility: 'private',
    can_change: true, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z', ...overrides,
  }
}

function serve(schedules: () => ScheduleRead[], routes: Parameters<typeof mockApi>[0] = {}) {
  return mockApi({
    'GET /api/v1/auth/me': () => signedInAs('member'),
    'GET /api/v1/schedules': () => ({ json: schedules() }),
    'GET /api/v1/models': () => ({ json: [endpointModel] }),
    'GET /api/v1/datasets': () => ({ json: [] }),
    ...routes,
  })
}
const inDocument = (selector: string) => document.querySelector(selector) as HTMLElement | null
const row = (id: number) => inDocument(`[data-schedule-id="${id}"]`)!
const sent = (calls: Recorded[], method: string, path: string) => calls.filter((c) => c.method === method && c.url.pathname === path)
async function type(selector: string, value: string) {
  const input = inDocument(`${selector} input`) as HTMLInputElement
  input.value = value
  input.dispatchEvent(new Event('input'))
  await settle()
}

describe('SchedulesView: the new-model-version trigger', () => {
  it('lists it with when its endpoints were last asked; no "paused" for a schedule without a cron', async () => {
    serve(() => [watching(1), watching(2, { cron: '@daily', next_run_at: '2026-12-03T00:00:00Z', version_checked_at: null, model_version: null })])
    await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    expect(row(1).querySelector('[data-test=schedule-on-new-version]')!.textContent).toBe('on new model version')
    expect(row(1).querySelector('[data-test=schedule-version-checked]')!.textContent)
      .toBe(`endpoints checked ${formatDate('2026-12-02T08:05:00Z', 'en')}`)
    expect(row(1).querySelector('[data-test=schedule-next]')).toBeNull()
    // with a cron too: both
    expect(row(2).textContent).toContain('@daily · UTC')
    expect(row(2).querySelector('[data-test=schedule-next]')!.textContent).toBe(`next ${formatDate('2026-12-03T00:00:00Z', 'en')}`)
    expect(row(2).querySelector('[data-test=schedule-version-checked]')!.textContent).toBe('endpoints not checked yet')
  })

  it('zh', async () => {
    serve(() => [watching(1, { version_checked_at: null })])
    await mountView(SchedulesView, '/schedules', {}, 'zh', pinia)
    expect(row(1).querySelector('[data-test=schedule-on-new-version]')!.textContent).toBe('新模型版本时')
    expect(row(1).querySelector('[data-test=schedule-version-checked]')!.textContent).toBe('尚未检查端点')
  })

  it('create: the trigger is sent, an emptied cron goes as null and is not previewed', async () => {
    const calls = serve(() => [], {
      'GET /api/v1/schedules/preview': () => ({ json: { cron: '0 2 * * *', timezone: 'UTC', next_runs: [] } }),
      'POST /api/v1/schedules': () => ({ status: 201, json: watching(7) }),
    })
    const { wrapper } = await mountView(SchedulesView, '/schedules', {}, 'en', pinia)
    inDocument('[data-test=schedule-new]')!.click()
    await settle()
    const selects = wrapper.findAllComponents(NSelect)
    selects.find((s) => s.attributes('data-test') === 'schedule-form-trigger')!.vm.$emit('update:value', 'new_model_version')
    selects.find((s) => s.attributes('data-test') === 'schedule-form-models')!.vm.$emit('update:value', [1])
    await settle()
    expect(document.body.textContent).toContain('Cron expression (optional)')
    expect(document.body.textContent).toContain('The first version seen is only recorded')
    await type('[data-test=schedule-form-name]', 'on release')
    await type('[data-test=schedule-form-cron]', '')
    const previewsBefore = sent(calls, 'GET', '/api/v1/schedules/preview').length
    await new Promise((resolve) => setTimeout(resolve, 400))
    await settle()
    expect(sent(calls, 'GET', '/api/v1/schedules/preview')).toHaveLength(previewsBefore)
    inDocument('[data-test=schedule-form-save]')!.click()
    await settle()
    const posts = sent(calls, 'POST', '/api/v1/schedules')
    expect(posts).toHaveLength(1)
    expect(posts[0].body).toMatchObject({ name: 'on release', trigger: 'new_model_version', cron: null,
      request: { model_ids: [1] } })
  })
})
