// Issue 10, results pages: the sample browser shows what the scorer compared (the extracted answer) and which scorer
// it was, keeps the verdict on a phone, and exports the samples it is filtered to.
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { SampleRead } from '@/api/types.gen'
import SampleBrowser from '@/components/SampleBrowser.vue'
import { mockApi } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'

const SAMPLES: SampleRead[] = [
  { model: 'demo', dataset: 'mcq', index: 1, prompt: 'What is 3/4?', prediction: 'A. 3/4 … The answer is C.', extracted: 'C',
    gold: 'A', correct: false, scorer: 'exact' },
  { model: 'demo', dataset: 'mcq', index: 2, prompt: 'What is 1/2?', prediction: 'B', extracted: null, gold: 'B', correct: true,
    scorer: 'exact' },
]
const width = window.innerWidth

afterEach(() => {
  document.body.innerHTML = ''
  Object.defineProperty(window, 'innerWidth', { value: width, configurable: true })
  vi.restoreAllMocks()
})


function serve(extra: Record<string, Parameters<typeof mockApi>[0][string]> = {}) {
  return mockApi({
    'GET /api/v1/evaluations/7/samples': () => ({ json: { items: SAMPLES, total: 2, page: 1, page_size: 20 } }),
    ...extra,
  })
}

const rowOf = (index: number) => [...document.querySelectorAll('tbody tr')].find((tr) => tr.querySelector('td:nth-child(2)')?.textContent === String(index))

describe('SampleBrowser', () => {
  it('shows the extracted answer next to the prediction and the scorer next to the verdict, numbered from 1', async () => {
    serve()
    mountApp(SampleBrowser, { evaluationId: 7, models: ['demo'], datasets: ['mcq'] })
    await settle()
    const wrong = rowOf(1)!
    expect(wrong.textContent).toContain('A. 3/4 … The answer is C.')
    expect(wrong.querySelector('[data-test=sample-extracted]')?.textContent).toBe('Extracted: C')
    expect(wrong.querySelector('[data-test=sample-scorer]')?.textContent).toBe('exact')
    expect(wrong.getAttribute('data-correct')).toBe('false')
    expect(rowOf(2)!.querySelector('[data-test=sample-extracted]')).toBeNull() // nothing extracted: the prediction is it
    expect(rowOf(0)).toBeUndefined()
  })

  it('keeps the verdict and the answer against gold on a phone', async () => {
    Object.defineProperty(window, 'innerWidth', { value: 390, configurable: true })
    serve()
    mountApp(SampleBrowser, { evaluationId: 7, models: ['demo', 'other'], datasets: ['mcq'] }, 'zh')
    await settle()
    const headers = [...document.querySelectorAll('thead th')].map((th) => th.textContent?.trim())
    expect(headers).toEqual(['', '#', '提示', '答案', '正确'])
    const wrong = rowOf(1)!
    expect(wrong.querySelector('[data-correct=false]')?.textContent).toBe('✗')
    expect(wrong.textContent).toContain('C') // the extracted answer, not the long prediction
    expect(wrong.textContent).toContain('标准： A')
  })

  it('exports the samples it is filtered to, as CSV or JSON lines', async () => {
    const calls = serve({
      'GET /api/v1/evaluations/7/samples/export': (request) => ({
        text: request.url.searchParams.get('format') === 'csv' ? 'model,dataset\n' : '{}\n',
        headers: { 'content-disposition': `attachment; filename="evaluation-7-samples.${request.url.searchParams.get('format')}"` },
      }),
    })
    const saved: string[] = []
    vi.spyOn(URL, 'createObjectURL').mockImplementation(() => 'blob:sample')
    vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => undefined)
    vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (this: HTMLAnchorElement) { saved.push(this.download) })
    const wrapper = mountApp(SampleBrowser, { evaluationId: 7, models: ['demo'], datasets: ['mcq'] })
    await settle()
    await wrapper.find('[data-test=wrong-only]').trigger('click')
    await settle()
    await wrapper.find('[data-test=samples-export-csv]').trigger('click')
    await settle()
    await wrapper.find('[data-test=samples-export-jsonl]').trigger('click')
    await settle()
    const exports = calls.filter((c) => c.url.pathname === '/api/v1/evaluations/7/samples/export')
    expect(exports.map((c) => Object.fromEntries(c.url.searchParams))).toEqual([
      { format: 'csv', correct: 'false' }, { format: 'jsonl', correct: 'false' },
    ])
    expect(saved).toEqual(['evaluation-7-samples.csv', 'evaluation-7-samples.jsonl'])
  })
})
