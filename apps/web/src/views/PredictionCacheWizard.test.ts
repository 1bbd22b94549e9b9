// Issue 11, "never ask twice": the wizard's "reuse cached answers" checkbox is on by default, the review says what the
// run will do, and the submission carries the choice (params.prediction_cache).
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { DatasetRead, ModelRead } from '@/api/types.gen'
import { detail, mockApi } from '@/test/fetchMock'
import { mountApp, mountView, settle, signedInAs } from '@/test/mountApp'
import NewEvaluationView from '@/views/NewEvaluationView.vue'

let pinia: Pinia
beforeEach(() => {
  pinia = createPinia()
  setActivePinia(pinia)
})
afterEach(() => { document.body.innerHTML = '' })


const ME = signedInAs('member')
const owned = { owner: null, visibility: 'shared' as const, can_change: true }
const MODEL: ModelRead = {
  ...owned, id: 1, name: 'endpoint', kind: 'openai', settings: { base_url: 'http://127.0.0.1:8000/v1' }, has_api_key: false,
  api_key_hint: null, is_demo: false, max_concurrency: null, created_at: '2026-12-01T00:00:00Z', updated_at: '2026-12-01T00:00:00Z',
}
const DATASET: DatasetRead = {
  ...owned, id: 5, name: 'quiz', kind: 'custom', builtin_config: null, sha256: 'x', file_format: 'jsonl', data_type: 'qa',
  scorer: 'exact', infer_method: 'gen', columns: ['question', 'answer'], rows: 4, size_bytes: 100,
  original_filename: 'quiz.jsonl', is_demo: false, available: true, created_at: '2026-12-01T00:00:00Z',
}

async function submitted(locale: 'en' | 'zh', uncheck: boolean) {
  const calls = mockApi({
    'GET /api/v1/auth/me': () => ME,
    'GET /api/v1/models': () => ({ json: [MODEL] }),
    'GET /api/v1/datasets': () => ({ json: [DATASET] }),
    'POST /api/v1/evaluations': () => ({ status: 201, json: detail(12) }),
    'GET /api/v1/evaluations/12': () => ({ json: detail(12) }),
  })
  const { wrapper } = await mountView(NewEvaluationView, '/evaluations/new', {}, locale, pinia)
  const next = () => wrapper.find('[data-test=wizard-next]')
  await wrapper.find('[data-test=model-choice-1]').trigger('click')
  await next().trigger('click')
  await wrapper.find('[data-test=dataset-choice-5]').trigger('click')
  await next().trigger('click')
  await settle()
  const checkbox = wrapper.find('[data-test=param-prediction-cache]')
  expect(checkbox.attributes('aria-checked')).toBe('true') // on unless the user turns it off
  if (uncheck) {
    await checkbox.trigger('click')
    await settle()
    expect(checkbox.attributes('aria-checked')).toBe('false')
  }
  await next().trigger('click')
  const review = wrapper.find('[data-test=review-prediction-cache]').text()
  await wrapper.find('[data-test=wizard-submit]').trigger('click')
  await settle()
  const body = calls.find((c) => c.method === 'POST')!.body as { params: Record<string, unknown> }
  return { review, params: body.params }
}

describe('the wizard and the prediction cache', () => {
  it('reuses cached answers by default', async () => {
    const { review, params } = await submitted('en', false)
    expect(review).toBe('Reuse cached answers')
    expect(params.prediction_cache).toBe(true)
  })

  it('sends every prompt when the box is unticked (in Chinese too)', async () => {
    const { review, params } = await submitted('zh', true)
    expect(review).toBe('每条提示词都发送')
    expect(params.prediction_cache).toBe(false)
  })
})
