import { flushPromises } from '@vue/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import DatasetUpload from '@/components/DatasetUpload.vue'
import ErrorAlert from '@/components/ErrorAlert.vue'
import EvaluationProgress from '@/components/EvaluationProgress.vue'
import StatusTag from '@/components/StatusTag.vue'
import { mockApi } from '@/test/fetchMock'
import { mountApp } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

describe('StatusTag', () => {
  it('translates the status and marks a running job being cancelled', () => {
    expect(mountApp(StatusTag, { status: 'succeeded' }).text()).toBe('Succeeded')
    expect(mountApp(StatusTag, { status: 'running' }, 'zh').text()).toBe('运行中')
    expect(mountApp(StatusTag, { status: 'running', cancelRequested: true }).text()).toBe('Cancelling')
    expect(mountApp(StatusTag, { status: 'weird-new-state' }).text()).toBe('weird-new-state')
  })
})

describe('EvaluationProgress', () => {
  it('shows the running fraction and stage, and 100% once succeeded', () => {
    const running = mountApp(EvaluationProgress, { status: 'running', fraction: 0.42, stage: 'infer' })
    expect(running.find('[data-percent]').attributes('data-percent')).toBe('42')
    expect(running.text()).toContain('42% · inference')
    const done = mountApp(EvaluationProgress, { status: 'succeeded', fraction: 0.9 })
    expect(done.find('[data-percent]').attributes('data-percent')).toBe('100')
  })
})

describe('ErrorAlert', () => {
  it('renders nothing without a message and lists problems with one', () => {
    expect(mountApp(ErrorAlert, { message: null }).find('[role=alert]').exists()).toBe(false)
    const alert = mountApp(ErrorAlert, { message: 'bad file', problems: ['line 2: x', 'line 3: y'] })
    expect(alert.find('[role=alert]').text()).toContain('bad file')
    expect(alert.findAll('li').map((li) => li.text())).toEqual(['line 2: x', 'line 3: y'])
  })
})

describe('DatasetUpload', () => {
  async function choose(wrapper: ReturnType<typeof mountApp>, name: string, text: string) {
    const input = wrapper.find('[data-test=dataset-file]')
    const file = new File([text], name, { type: 'text/plain' })
    Object.defineProperty(input.element, 'files', { value: [file], configurable: true })
    await input.trigger('change')
    await flushPromises()
    await new Promise((r) => setTimeout(r, 0))
    await flushPromises()
  }

  it('previews rows before upload and shows the server\'s row errors inline', async () => {
    const calls = mockApi({
      'POST /api/v1/datasets': () => ({ status: 422, json: { detail: 'bad.csv cannot be used as a dataset', problems: ["line 2: 'question' is empty"] } }),
    })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'bad.csv', 'question,answer\n,x\nq2,y\n')
    const rows = () => document.querySelectorAll('[data-test=dataset-preview] tbody tr')
    expect(rows()).toHaveLength(2)
    expect(rows()[0].textContent).toContain('"question" is empty') // the browser's own check
    ;(document.querySelector('[data-test=dataset-upload]') as HTMLButtonElement).click()
    await flushPromises()
    await new Promise((r) => setTimeout(r, 10))
    await flushPromises()
    expect(calls.at(-1)!.method).toBe('POST')
    expect(document.body.textContent).toContain('bad.csv cannot be used as a dataset')
    expect(rows()[0].textContent).toContain("'question' is empty") // now the server's words
    expect(rows()[1].querySelectorAll('[data-test=row-error]')).toHaveLength(0)
  })

  it('emits the stored dataset after a successful upload', async () => {
    const dataset = { id: 9, name: 'mine', kind: 'custom' }
    mockApi({ 'POST /api/v1/datasets': () => ({ status: 201, json: { dataset, existing: false } }) })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'mine.jsonl', '{"question":"q","answer":"a"}\n')
    ;(document.querySelector('[data-test=dataset-upload]') as HTMLButtonElement).click()
    await flushPromises()
    await new Promise((r) => setTimeout(r, 10))
    const upload = wrapper.findComponent(DatasetUpload)
    expect(upload.emitted('uploaded')?.[0]).toEqual([dataset, false])
  })
})
