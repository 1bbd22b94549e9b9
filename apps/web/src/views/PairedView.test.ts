// Issue 10, "Comparing two models the right way": the paired comparison page shows what the server computed (difference
// ± interval, p, Holm p, significance, the "too few samples" sentence, why a dataset is not comparable) and the
// samples side by side, filtered by who got them right; the evaluation page leads there.
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { PairedComparison, PairedSampleRead } from '@/api/types.gen'
import { createAppRouter } from '@/router'
import { useSessionStore } from '@/stores/session'
import { detail, mockApi, summary, type Recorded } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'
import EvaluationDetailView from '@/views/EvaluationDetailView.vue'
import PairedView from '@/views/PairedView.vue'

beforeEach(() => { setActivePinia(createPinia()) })
afterEach(() => { document.body.innerHTML = '' })


const COMPARISON: PairedComparison = {
  a: { evaluation_id: 5, evaluation_name: 'nightly', model: 'model-a' },
  b: { evaluation_id: 6, evaluation_name: 'candidate', model: 'model-b' },
  alpha: 0.05,
  datasets: [
    {
      dataset: 'letters', dataset_b: null, comparable: true, reason: null, n: 16, accuracy_a: 81.25, accuracy_b: 25,
      difference: 56.25, ci_low: 24.3, ci_high: 73.9, counts: { both: 3, only_a: 10, only_b: 1, neither: 2 },
      test: 'mcnemar_exact', p_value: 0.01172, p_holm: 0.02344, significant: true, detectable_difference: 37.2, few_samples: true,
    },
    {
      dataset: 'phrases', dataset_b: null, comparable: true, reason: null, n: 4, accuracy_a: 25, accuracy_b: 25, difference: 0,
      ci_low: -52.1, ci_high: 52.1, counts: { both: 0, only_a: 1, only_b: 1, neither: 2 }, test: 'mcnemar_exact',
      p_value: 1, p_holm: 1, significant: false, detectable_difference: null, few_samples: true,
    },
    { dataset: 'sums', comparable: false, reason: 'different sample selection: A used all samples, B the first 5 (limit 5)' },
  ],
}

function sample(index: number, a: boolean, b: boolean): PairedSampleRead {
  return {
    index, prompt: `Say word ${index}`, prompt_b: null, gold: `w${index}`,
    a: { prediction: `answer of A to ${index}`, extracted: a ? `w${index}` : null, correct: a },
    b: { prediction: `answer of B to ${index}`, extracted: null, correct: b },
  }
}

// A scorer with partial credit: the server compared per-sample scores (bootstrap interval, permutation test).
const SCORED: PairedComparison = {
  ...COMPARISON,
  datasets: [{
    dataset: 'summaries', dataset_b: null, comparable: true, reason: null, n: 40, basis: 'scores', accuracy_a: null,
    accuracy_b: null, mean_a: 0.6126, mean_b: 0.5, difference: 0.1126, ci_low: 0.0412, ci_high: 0.1838,
    interval_method: 'paired_bootstrap', counts: null, test: 'sign_flip_permutation', p_value: 0.0031, p_holm: 0.0031,
    significant: true, detectable_difference: 0.0934, few_samples: true,
  }],
}

function scoredSample(index: number, a: number, b: number): PairedSampleRead {
  return {
    index, prompt: `Summarise ${index}`, prompt_b: null, gold: `g${index}`,
    a: { prediction: `A's summary ${index}`, extracted: null, correct: null, score: a },
    b: { prediction: `B's summary ${index}`, extracted: null, correct: null, score: b },
  }
}

async function open(path: string, locale: 'en' | 'zh' = 'en', comparison: PairedComparison = COMPARISON) {
  const calls = mockApi({
    'GET /api/v1/evaluations': () => ({ json: { items: [summary(5, { status: 'succeeded', name: 'nightly' }),
      summary(6, { status: 'succeeded', name: 'candidate' })], total: 2, page: 1, page_size: 50 } }),
    'GET /api/v1/paired': () => ({ json: comparison }),
    'GET /api/v1/paired/samples/export': (request: Recorded) => ({
      text: 'dataset,index\n', headers: { 'content-disposition':
        `attachment; filename="paired-5-6-samples.${request.url.searchParams.get('format')}"` },
    }),
    'GET /api/v1/paired/samples': (request: Recorded) => {
      const flip = request.url.searchParams.get('flip')
      if (comparison === SCORED) {
        const items = [scoredSample(2, 0.75, 0.5), scoredSample(5, 0.2, 0.4)]
        return { json: { items, total: items.length, page: 1, page_size: 10 } }
      }
      const items = flip === 'a_only' ? [sample(1, true, false), sample(4, true, false)]
        : flip === 'b_only' ? [sample(3, false, true)] : [sample(1, true, false), sample(3, false, true), sample(4, true, false)]
      return { json: { items, total: items.length, page: 1, page_size: 10 } }
    },
  })
  const router = createAppRouter('/')
  await router.push(path)
  const wrapper = mountApp(PairedView, {}, locale, { plugins: [router] })
  await settle()
  return { wrapper, calls, router }
}

const requests = (calls: Recorded[], path: string) => calls.filter((c) => c.url.pathname === path).map((c) => Object.fromEntries(c.url.searchParams))

describe('PairedView', () => {
  it('shows each dataset: difference ± interval, p, Holm p, significance, what n can see, why not comparable', async () => {
    const { wrapper, calls } = await open('/compare/paired?a=5&b=6')
    expect(requests(calls, '/api/v1/paired')).toEqual([{ a: '5', b: '6' }])
    expect(wrapper.find('[data-test=paired-sides]').text()).toContain('#5 nightly · model-a')
    const rows = wrapper.findAll('[data-test=paired-row]')
    expect(rows.map((r) => r.attributes('data-dataset'))).toEqual(['letters', 'phrases', 'sums'])
    const letters = rows[0]
    expect(letters.find('[data-test=paired-difference]').text()).toBe('+56.3 points')
    expect(letters.find('[data-test=paired-ci]').text()).toBe('[+24.3, +73.9]')
    expect(letters.find('[data-test=paired-p]').text()).toBe('p = 0.012')
    expect(letters.find('[data-test=paired-holm]').text()).toBe('Holm p 0.023')
    expect(letters.find('[data-test=paired-significant]').text()).toBe('significant')
    expect(letters.find('[data-test=paired-counts]').text()).toBe('both right 3 · only A 10 · only B 1 · both wrong 2')
    expect(letters.find('[data-test=paired-note]').text()).toBe('With 16 samples, differences under ~38 points cannot be told from chance.')
    const phrases = rows[1]
    expect(phrases.find('[data-test=paired-difference]').text()).toBe('±0.0 points')
    expect(phrases.find('[data-test=paired-significant]').text()).toBe('not significant')
    expect(phrases.find('[data-test=paired-note]').text()).toBe('With 4 samples and this few disagreements, no difference can be told from chance.')
    expect(rows[2].find('[data-test=paired-reason]').text())
      .toBe('Not comparable: different sample selection: A used all samples, B the first 5 (limit 5)')
    expect(rows[2].find('[data-test=paired-p]').exists()).toBe(false)
  })

  it('lists the samples that changed, side by side, and filters by who got them right', async () => {
    const { wrapper, calls } = await open('/compare/paired?a=5&b=6')
    expect(requests(calls, '/api/v1/paired/samples').at(-1)).toEqual({ a: '5', b: '6', dataset: 'letters', flip: 'changed', page: '1', page_size: '10' })
    let shown = wrapper.findAll('[data-test=paired-sample]')
    expect(shown.map((s) => s.attributes('data-index'))).toEqual(['1', '3', '4'])
    const first = shown[0]
    expect(first.find('[data-test=paired-answer-a]').attributes('data-correct')).toBe('true')
    expect(first.find('[data-test=paired-answer-a]').text()).toContain('answer of A to 1')
    expect(first.find('[data-test=paired-answer-b]').attributes('data-correct')).toBe('false')
    expect(first.find('[data-test=paired-answer-b]').text()).toContain('answer of B to 1')
    expect(first.text()).toContain('w1')

    await wrapper.find('[data-test=paired-flip-b_only] input').setValue(true)
    await settle()
    expect(requests(calls, '/api/v1/paired/samples').at(-1)?.flip).toBe('b_only')
    shown = wrapper.findAll('[data-test=paired-sample]')
    expect(shown.map((s) => s.attributes('data-index'))).toEqual(['3'])
    expect(wrapper.find('[data-test=paired-total]').text()).toBe('1 sample')

    await wrapper.find('[data-test=paired-flip-all] input').setValue(true)
    await settle()
    expect(requests(calls, '/api/v1/paired/samples').at(-1)).not.toHaveProperty('flip')
  })

  it('exports the samples it is filtered to, both answers per row, as CSV or JSON lines', async () => {
    const { wrapper, calls } = await open('/compare/paired?a=5&b=6')
    const saved: string[] = []
    vi.spyOn(URL, 'createObjectURL').mockImplementation(() => 'blob:paired')
    vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => undefined)
    vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (this: HTMLAnchorElement) { saved.push(this.download) })
    await wrapper.find('[data-test=paired-flip-a_only] input').setValue(true)
    await settle()
    await wrapper.find('[data-test=paired-export-csv]').trigger('click')
    await settle()
    await wrapper.find('[data-test=paired-export-jsonl]').trigger('click')
    await settle()
    expect(requests(calls, '/api/v1/paired/samples/export')).toEqual([
      { a: '5', b: '6', dataset: 'letters', flip: 'a_only', format: 'csv' },
      { a: '5', b: '6', dataset: 'letters', flip: 'a_only', format: 'jsonl' },
    ])
    expect(saved).toEqual(['paired-5-6-samples.csv', 'paired-5-6-samples.jsonl'])
    vi.restoreAllMocks()
  })

  it('speaks Chinese', async () => {
    const { wrapper } = await open('/compare/paired?a=5&b=6', 'zh')
    expect(wrapper.find('h1').text()).toBe('配对比较')
    const letters = wrapper.findAll('[data-test=paired-row]')[0]
    expect(letters.find('[data-test=paired-significant]').text()).toBe('显著')
    expect(letters.find('[data-test=paired-note]').text()).toBe('只有 16 个样本时，小于约 38 个百分点的差异无法与偶然区分。')
    expect(wrapper.find('[data-test=paired-flip-a_only]').text()).toBe('仅 A 对')
  })

  it('shows per-sample scores compared by the method the server chose, in English and Chinese', async () => {
    const { wrapper, calls } = await open('/compare/paired?a=5&b=6', 'en', SCORED)
    const row = wrapper.find('[data-test=paired-row]')
    expect(row.find('[data-test=paired-difference]').text()).toBe('+0.113 in score')
    expect(row.find('[data-test=paired-ci]').text()).toBe('[+0.0412, +0.184]')
    expect(row.find('[data-test=paired-p]').text()).toBe('p = 0.003')
    expect(row.find('[data-test=paired-counts]').exists()).toBe(false)
    expect(row.find('[data-test=paired-method]').text())
      .toBe('Per-sample scores (not right/wrong): mean difference, paired bootstrap interval, sign-flip permutation test')
    expect(row.text()).toContain('mean A 0.613')
    expect(row.find('[data-test=paired-note]').text()).toBe('With 40 samples, score differences under ~0.0934 cannot be told from chance.')
    expect(wrapper.find('[data-test=paired-scores-legend]').text()).toContain('sign-flip permutation test')
    // No right/wrong split to filter by: who scored higher instead.
    expect(wrapper.find('[data-test=paired-flip-both]').exists()).toBe(false)
    expect(wrapper.find('[data-test=paired-flip-a_only]').text()).toBe('A higher')
    expect(requests(calls, '/api/v1/paired/samples').at(-1)?.flip).toBe('changed')
    expect(wrapper.findAll('[data-test=paired-score]').map((tag) => tag.text())).toEqual(['0.75', '0.5', '0.2', '0.4'])

    document.body.innerHTML = ''
    const zh = (await open('/compare/paired?a=5&b=6', 'zh', SCORED)).wrapper
    expect(zh.find('[data-test=paired-method]').text()).toBe('逐样本得分（非对错判定）：均值差、配对 bootstrap 区间、符号翻转置换检验')
    expect(zh.find('[data-test=paired-difference]').text()).toBe('+0.113 分')
    expect(zh.find('[data-test=paired-flip-b_only]').text()).toBe('B 更高')
  })

  it('asks for the second evaluation before comparing anything', async () => {
    const { wrapper, calls } = await open('/compare/paired?a=5')
    expect(requests(calls, '/api/v1/paired')).toEqual([])
    expect(wrapper.text()).toContain('Choose two finished evaluations (A and B) to compare.')
    expect(requests(calls, '/api/v1/evaluations')[0]).toMatchObject({ status: 'succeeded' })
  })

  it('is offered on a finished evaluation\'s page', async () => {
    mockApi({
      'GET /api/v1/auth/me': () => ({ json: { user: { id: 3, username: 'alice', display_name: 'Alice', role: 'member', is_local: false },
        auth_enabled: true, csrf_token: 'csrf' } }),
      'GET /api/v1/evaluations/5': () => ({ json: detail(5, { status: 'succeeded' }) }),
      'GET /api/v1/evaluations/7': () => ({ json: detail(7, { status: 'running' }) }),
      'GET /api/v1/evaluations/5/logs': () => ({ text: '' }),
      'GET /api/v1/evaluations/7/logs': () => ({ text: '' }),
    })
    const pinia = createPinia()
    setActivePinia(pinia)
    await useSessionStore(pinia).load()
    const router = createAppRouter('/')
    await router.push('/evaluations/5')
    const wrapper = mountApp(EvaluationDetailView, { id: 5 }, 'en', { pinia, plugins: [router] })
    await settle()
    const button = wrapper.find('[data-test=detail-paired]')
    expect(button.text()).toBe('Compare with…')
    await button.trigger('click')
    await settle()
    expect(router.currentRoute.value.fullPath).toBe('/compare/paired?a=5')
    wrapper.unmount()
    document.body.innerHTML = ''
    const running = mountApp(EvaluationDetailView, { id: 7 }, 'en', { pinia, plugins: [router] })
    await settle()
    expect(running.find('[data-test=evaluation-detail]').exists()).toBe(true)
    expect(running.find('[data-test=detail-paired]').exists()).toBe(false)
  })
})
