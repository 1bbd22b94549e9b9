// Issue 10: quality and speed side by side. The evaluation page's score table shows how fast an endpoint model
// answered (`p50 0.52 s · p95 0.9 s · 120 tokens/answer`), and says "not recorded" for a local model; the sample
// browser shows each answer's latency and tokens in small text.
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { detail, mockApi } from '@/test/fetchMock'
import { mountApp, mountView, settle } from '@/test/mountApp'
import EvaluationDetailView from '@/views/EvaluationDetailView.vue'
import SampleBrowser from '@/components/SampleBrowser.vue'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = '' })


const SPEED = { samples: 8, latency_p50_s: 0.523, latency_p95_s: 0.9, latency_mean_s: 0.6, ttft_p50_s: null, ttft_p95_s: null,
  prompt_tokens_mean: 101, completion_tokens_mean: 119.6, total_tokens: 1765, retries: 0 }

describe('speed on the evaluation page', () => {
  it('shows each result\'s latency and tokens next to its score, and "not recorded" for a local model', async () => {
    const evaluation = detail(5, {
      status: 'succeeded',
      scores: [
        { model_id: 1, model: 'endpoint', dataset_id: 2, dataset: 'colours', metric: 'accuracy', value: 62.5, n: 8, correct: 5,
          scorer: 'contains', ci_low: 30.57, ci_high: 86.32, speed: SPEED },
        { model_id: 2, model: 'local', dataset_id: 2, dataset: 'colours', metric: 'accuracy', value: 50, n: 8, correct: 4,
          scorer: 'contains', ci_low: 21.5, ci_high: 78.5, speed: null },
      ],
    })
    mockApi({
      'GET /api/v1/auth/me': () => ({ json: { user: null, auth_enabled: false, csrf_token: null } }),
      'GET /api/v1/evaluations/5': () => ({ json: evaluation }),
      'GET /api/v1/evaluations/5/logs': () => ({ text: '' }),
    })
    const { wrapper } = await mountView(EvaluationDetailView, '/evaluations/5', { id: 5 }, 'en', pinia)
    expect(wrapper.findAll('[data-test=score-speed]').map((cell) => cell.text()))
      .toEqual(['p50 0.52 s · p95 0.9 s · 120 tokens/answer', 'not recorded'])
  })

  it('writes a sample\'s latency and tokens under its prediction', async () => {
    const sample = { model: 'endpoint', dataset: 'colours', index: 1, prompt: 'Name a colour', prediction: 'red', gold: 'red',
      correct: true, extracted: null, scorer: 'contains', latency_s: 0.523, prompt_tokens: 101, completion_tokens: 12, retries: 1 }
    const local = { ...sample, index: 2, latency_s: null, prompt_tokens: null, completion_tokens: null, retries: null }
    mockApi({ 'GET /api/v1/evaluations/5/samples': () => ({ json: { items: [sample, local], total: 2, page: 1, page_size: 20 } }) })
    mountApp(SampleBrowser, { evaluationId: 5, models: ['endpoint'], datasets: ['colours'] }, 'zh', { pinia })
    await settle()
    // the local model's sample has nothing recorded: no line at all
    expect([...document.querySelectorAll('[data-test=sample-speed]')].map((cell) => cell.textContent))
      .toEqual(['0.52 s · 101 → 12 tokens · 重试 1 次'])
  })
})
