// Issue 10, scoring free-form answers: the judge's rationale under its verdict in the sample browser, the Re-score
// dialog on a succeeded evaluation (a new evaluation, opened at once), and the wizard asking for a judge model only
// when a chosen dataset is scored by one (the server says so: a file's scorer, a built-in config's needs_judge).
import { type VueWrapper } from '@vue/test-utils'
import { NSelect } from 'naive-ui'
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { DatasetRead, EvaluationDetail, ModelRead, SampleRead } from '@/api/types.gen'
import SampleBrowser from '@/components/SampleBrowser.vue'
import { detail, mockApi } from '@/test/fetchMock'
import { mountApp, mountView, settle, signedInAs } from '@/test/mountApp'
import EvaluationDetailView from '@/views/EvaluationDetailView.vue'
import NewEvaluationView from '@/views/NewEvaluationView.vue'

let pinia: Pinia
beforeEach(() => {
  pinia = createPinia()
  setActivePinia(pinia)
})
afterEach(() => { document.body.innerHTML = '' })


/** Pick the judge the way a click on its option would: the select's own update event (its menu needs a browser). */
async function chooseJudge(wrapper: VueWrapper, id: number, offered: string[]) {
  const select = wrapper.findAllComponents(NSelect).find((s) => s.attributes('data-test') === 'judge-model')!
  expect((select.props('options') as { label: string }[]).map((o) => o.label)).toEqual(offered)
  select.vm.$emit('update:value', id)
  await settle()
}

const ME = signedInAs('member')
const owned = { owner: null, visibility: 'shared' as const, can_change: true }
const model = (id: number, name: string): ModelRead => ({
  ...owned, id, name, kind: 'openai', settings: { base_url: 'http://127.0.0.1:8000/v1' }, has_api_key: false, api_key_hint: null,
  is_demo: false, max_concurrency: null, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z',
})
const dataset = (id: number, name: string, scorer: string): DatasetRead => ({
  ...owned, id, name, kind: 'custom', builtin_config: null, sha256: 'x', file_format: 'jsonl', data_type: 'qa', scorer,
  infer_method: 'gen', columns: ['question', 'answer'], rows: 4, size_bytes: 100, original_filename: `${name}.jsonl`,
  is_demo: false, available: true, created_at: '2026-11-24T00:00:00Z',
})

describe('the sample browser with a judge', () => {
  const SAMPLES: SampleRead[] = [
    { model: 'demo', dataset: 'colours', index: 1, prompt: 'Name a colour', prediction: 'red green blue', gold: 'red',
      correct: true, scorer: 'judge:strict-judge', judge_verdict: 'correct', judge_rationale: 'The answer names red first.' },
    { model: 'demo', dataset: 'colours', index: 2, prompt: 'Name a fruit', prediction: 'red green blue', gold: 'apple',
      correct: false, scorer: 'exact' },
  ]

  it('shows the rationale under the verdict on demand, and verdict and rationale in the expanded row', async () => {
    mockApi({ 'GET /api/v1/evaluations/7/samples': () => ({ json: { items: SAMPLES, total: 2, page: 1, page_size: 20 } }) })
    const wrapper = mountApp(SampleBrowser, { evaluationId: 7, models: ['demo'], datasets: ['colours'] }, 'zh')
    await settle()
    const rows = wrapper.findAll('tbody tr')
    expect(rows[0].find('[data-test=sample-scorer]').text()).toBe('judge:strict-judge')
    expect(rows[1].find('[data-test=sample-rationale-toggle]').exists()).toBe(false) // no judge, no rationale
    const toggle = rows[0].find('[data-test=sample-rationale-toggle]')
    expect(toggle.text()).toBe('理由')
    expect(rows[0].find('[data-test=sample-rationale]').exists()).toBe(false)
    await toggle.trigger('click')
    expect(wrapper.find('[data-test=sample-rationale]').text()).toBe('The answer names red first.')
    expect(wrapper.find('[data-test=sample-rationale-toggle]').text()).toBe('收起')

    await wrapper.find('tbody tr .n-data-table-expand-trigger').trigger('click')
    await settle()
    expect(wrapper.find('[data-test=sample-judge-verdict]').text()).toBe('correct')
    expect(wrapper.find('[data-test=sample-judge-rationale]').text()).toBe('The answer names red first.')
  })
})

describe('Re-score', () => {
  async function open(evaluation: EvaluationDetail, routes = {}) {
    const calls = mockApi({
      'GET /api/v1/auth/me': () => ME,
      [`GET /api/v1/evaluations/${evaluation.id}`]: () => ({ json: evaluation }),
      [`GET /api/v1/evaluations/${evaluation.id}/logs`]: () => ({ text: '' }),
      'GET /api/v1/models': () => ({ json: [model(1, 'answering'), model(2, 'strict-judge')] }),
      ...routes,
    })
    const { wrapper, router } = await mountView(EvaluationDetailView, `/evaluations/${evaluation.id}`, { id: evaluation.id }, 'en', pinia)
    return { wrapper, calls, router }
  }

  it('scores a succeeded evaluation again with a judge and opens the new evaluation', async () => {
    const source = detail(8, { status: 'succeeded', name: 'colours' })
    const rescored = detail(9, { status: 'queued', name: 'colours (re-scored)', rescored_from_id: 8, scorer: 'judge',
      judge: { model_id: 2, model: 'strict-judge', prompt_language: 'auto' } })
    const { wrapper, calls, router } = await open(source, {
      'POST /api/v1/evaluations/8/rescore': () => ({ status: 201, json: rescored }),
      'GET /api/v1/evaluations/9': () => ({ json: rescored }),
      'GET /api/v1/evaluations/9/logs': () => ({ text: '' }),
    })
    await wrapper.find('[data-test=detail-rescore]').trigger('click')
    await settle()
    const dialog = () => document.querySelector('[data-test=rescore-dialog]')!
    expect(dialog().textContent).toContain('The models are not called again')
    const start = () => document.querySelector<HTMLButtonElement>('[data-test=rescore-start]')!
    expect(start().disabled).toBe(true) // nothing chosen yet
    document.querySelector<HTMLInputElement>('[data-test=rescore-judge] input')!.click()
    await settle()
    expect(document.querySelector('[data-test=judge-picker]')).not.toBeNull()
    expect(start().disabled).toBe(true) // the judge scorer needs a judge model
    await chooseJudge(wrapper, 2, ['answering · openai', 'strict-judge · openai'])
    expect(start().disabled).toBe(false)
    start().click()
    await settle()
    const posted = calls.filter((c) => c.method === 'POST')
    expect(posted.map((c) => c.url.pathname)).toEqual(['/api/v1/evaluations/8/rescore'])
    expect(posted[0].body).toEqual({ scorer: 'judge', judge_model_id: 2, judge_prompt_language: 'auto' })
    expect(router.currentRoute.value.fullPath).toBe('/evaluations/9')
  })

  it('says what an evaluation was re-scored from and by which judge; not offered before it succeeded', async () => {
    const rescored = detail(9, { status: 'succeeded', rescored_from_id: 8, judge: { model_id: 2, model: 'strict-judge', prompt_language: 'zh' } })
    const { wrapper } = await open(rescored)
    expect(wrapper.find('[data-test=detail-rescored-from]').text()).toBe('Re-scored from #8')
    expect(wrapper.find('[data-test=detail-rescored-from]').attributes('href')).toBe('/evaluations/8')
    expect(wrapper.find('[data-test=detail-judge]').text()).toContain('Judged by strict-judge')
    document.body.innerHTML = ''
    const running = await open(detail(10, { status: 'running' }))
    expect(running.wrapper.find('[data-test=detail-rescore]').exists()).toBe(false)
    expect(running.wrapper.find('[data-test=detail-scoring]').exists()).toBe(false)
  })
})

describe('the wizard asks for a judge only when one is needed', () => {
  it('a judged file needs a judge model before going on, and the submission names it', async () => {
    const calls = mockApi({
      'GET /api/v1/auth/me': () => ME,
      'GET /api/v1/models': () => ({ json: [model(1, 'answering'), model(2, 'strict-judge')] }),
      'GET /api/v1/datasets': () => ({ json: [dataset(5, 'colours-exact', 'exact'), dataset(6, 'colours-judged', 'judge')] }),
      'POST /api/v1/evaluations': () => ({ status: 201, json: detail(12) }),
      'GET /api/v1/evaluations/12': () => ({ json: detail(12) }),
    })
    const { wrapper } = await mountView(NewEvaluationView, '/evaluations/new', {}, 'en', pinia)
    const next = () => wrapper.find('[data-test=wizard-next]')
    await wrapper.find('[data-test=model-choice-1]').trigger('click')
    await next().trigger('click')
    await wrapper.find('[data-test=dataset-choice-5]').trigger('click')
    await next().trigger('click')
    await settle()
    expect(wrapper.find('[data-test=judge-block]').exists()).toBe(false) // exact match: no judge to choose
    await wrapper.find('[data-test=wizard-back]').trigger('click')
    await wrapper.find('[data-test=dataset-choice-6]').trigger('click')
    await next().trigger('click')
    await settle()
    expect(wrapper.find('[data-test=judge-block]').text()).toContain('Scored by an LLM judge: colours-judged')
    expect(next().attributes('disabled')).toBeDefined()
    expect(wrapper.find('[data-test=wizard-blocked]').text()).toBe('Choose a judge model')
    await chooseJudge(wrapper, 2, ['answering · openai', 'strict-judge · openai'])
    document.querySelector<HTMLInputElement>('[data-test=judge-language] input[value=zh]')!.click()
    await settle()
    await next().trigger('click')
    expect(wrapper.find('[data-test=review-judge]').text()).toBe('strict-judge · zh')
    await wrapper.find('[data-test=wizard-submit]').trigger('click')
    await settle()
    const body = calls.find((c) => c.method === 'POST')!.body as Record<string, unknown>
    expect(body).toMatchObject({ model_ids: [1], dataset_ids: [5, 6], judge_model_id: 2, judge_prompt_language: 'zh' })
  })

  it('a built-in config the server marks needs_judge asks for a judge; one it does not mark does not', async () => {
    const builtin = (id: number, config: string): DatasetRead => ({ ...dataset(id, config, 'exact'), kind: 'builtin', builtin_config: config, data_type: null })
    mockApi({
      'GET /api/v1/auth/me': () => ME,
      'GET /api/v1/models': () => ({ json: [model(1, 'answering')] }),
      'GET /api/v1/datasets': () => ({ json: [builtin(7, 'omni_math_llmverify_gen_ccf9c0'), builtin(8, 'gsm8k_gen')] }),
      'GET /api/v1/datasets/builtin/omni_math_llmverify_gen_ccf9c0/settings': () => ({ json: {
        config: 'omni_math_llmverify_gen_ccf9c0', generates: true, inferencers: ['GenInferencer'], max_out_len: [], model_decides: true,
        model_default_max_out_len: 256, stopping_criteria: [], readable: true, needs_judge: true } }),
      'GET /api/v1/datasets/builtin/gsm8k_gen/settings': () => ({ json: {
        config: 'gsm8k_gen', generates: true, inferencers: ['GenInferencer'], max_out_len: [512], model_decides: false,
        model_default_max_out_len: 256, stopping_criteria: [], readable: true, needs_judge: false } }),
    })
    const { wrapper } = await mountView(NewEvaluationView, '/evaluations/new', {}, 'zh', pinia)
    await wrapper.find('[data-test=model-choice-1]').trigger('click')
    await wrapper.find('[data-test=wizard-next]').trigger('click')
    await wrapper.find('[data-test=dataset-choice-8]').trigger('click')
    await wrapper.find('[data-test=wizard-next]').trigger('click')
    await settle()
    expect(wrapper.find('[data-test=judge-block]').exists()).toBe(false)
    await wrapper.find('[data-test=wizard-back]').trigger('click')
    await wrapper.find('[data-test=dataset-choice-7]').trigger('click')
    await wrapper.find('[data-test=wizard-next]').trigger('click')
    await settle()
    expect(wrapper.find('[data-test=judge-block]').text()).toContain('由大模型评判打分：omni_math_llmverify_gen_ccf9c0')
    expect(wrapper.find('[data-test=wizard-next]').attributes('disabled')).toBeDefined()
  })
})
