// Issue 8, finding 17: the upload dialog shows the server's verdict (its dry run), never a guess of its own.
import { afterEach, describe, expect, it } from 'vitest'
import type { DatasetValidation } from '@/api/types.gen'
import DatasetUpload from '@/components/DatasetUpload.vue'
import { mockApi, type Recorded } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

const RULES = { extensions: ['.jsonl', '.csv'], max_bytes: 1000, max_rows: 100_000 }

function verdict(overrides: Partial<DatasetValidation> = {}): DatasetValidation {
  return {
    ok: true, file_format: 'jsonl', data_type: 'qa', columns: ['question', 'answer'], rows: 1, name: 'qa', problems: [],
    preview: [{ question: 'q', answer: 'a' }], existing_dataset_id: null, name_taken: false, ...overrides,
  }
}


async function choose(wrapper: ReturnType<typeof mountApp>, name: string, text: string) {
  const input = wrapper.find('[data-test=dataset-file]')
  Object.defineProperty(input.element, 'files', { value: [new File([text], name, { type: 'text/plain' })], configurable: true })
  await input.trigger('change')
  await settle()
}

const uploadButton = () => document.querySelector('[data-test=dataset-upload]') as HTMLButtonElement
const shownProblems = () => [...document.querySelectorAll('[data-test=dataset-problem]')].map((li) => li.textContent)
const validations = (calls: Recorded[]) => calls.filter((c) => c.url.pathname === '/api/v1/datasets/validate')

describe('DatasetUpload', () => {
  it('offers only the extensions the server accepts (no .json)', async () => {
    mockApi({ 'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }) })
    const wrapper = mountApp(DatasetUpload)
    await settle()
    expect(wrapper.find('[data-test=dataset-file]').attributes('accept')).toBe('.jsonl,.csv')
    expect(wrapper.text()).toContain('.jsonl / .csv')
  })

  it('sends the chosen file to the dry run and keeps Upload disabled while the server refuses it', async () => {
    const calls = mockApi({
      'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }),
      // A .txt used to be previewed as JSONL and offered for upload.
      'POST /api/v1/datasets/validate': () => ({ json: verdict({
        ok: false, file_format: null, data_type: null, columns: [], rows: null, name: 'notes', preview: [],
        problems: ['notes.txt: only .jsonl and .csv files are accepted'],
      }) }),
    })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'notes.txt', '{"question":"q","answer":"a"}\n')
    const sent = validations(calls)
    expect(sent).toHaveLength(1)
    // The same multipart form as the upload itself (jsdom's File does not survive into the recorded body text).
    expect(String(sent[0].body)).toMatch(/name="file".*name="scorer"\s+exact.*name="infer_method"\s+gen/s)
    expect(shownProblems()).toEqual(['notes.txt: only .jsonl and .csv files are accepted'])
    expect(uploadButton().disabled).toBe(true)
    expect(document.querySelector('[data-test=dataset-preview]')).toBeNull() // no preview of our own making
    uploadButton().click()
    await settle()
    expect(calls.some((c) => c.method === 'POST' && c.url.pathname === '/api/v1/datasets')).toBe(false)
  })

  it('shows the type the server detected and its problems, word for word', async () => {
    // Columns question, A, B, answer: the old preview said "Detected: QA", the server reads multiple choice.
    mockApi({
      'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }),
      'POST /api/v1/datasets/validate': () => ({ json: verdict({
        ok: false, data_type: 'mcq', columns: ['question', 'A', 'B', 'answer'], rows: null, name: 'quiz',
        preview: [{ question: 'q', A: 'x', B: 'y', answer: 'C' }],
        problems: ["line 1: 'answer' is 'C' but must be one of the options A, B"],
      }) }),
    })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'quiz.jsonl', '{"question":"q","A":"x","B":"y","answer":"C"}\n')
    expect(document.querySelector('[data-test=dataset-detected]')?.textContent).toBe('Detected: MCQ')
    expect(shownProblems()).toEqual(["line 1: 'answer' is 'C' but must be one of the options A, B"])
    expect(document.querySelectorAll('[data-test=dataset-preview] tbody tr')).toHaveLength(1)
    expect(document.querySelector('[data-test=dataset-preview]')?.textContent).toContain('C')
    expect(uploadButton().disabled).toBe(true)
  })

  it('shows the server\'s message for an empty file (not the name of its own temporary file)', async () => {
    mockApi({
      'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }),
      'POST /api/v1/datasets/validate': () => ({ json: verdict({
        ok: false, data_type: null, columns: [], rows: null, name: 'empty', preview: [], problems: ['empty.jsonl: the file is empty'],
      }) }),
    })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'empty.jsonl', '')
    expect(shownProblems()).toEqual(['empty.jsonl: the file is empty'])
    expect(document.body.textContent).not.toContain('upload.jsonl')
    expect(uploadButton().disabled).toBe(true)
  })

  it('enables Upload once the dry run says ok, suggests the server\'s name and emits the stored dataset', async () => {
    const dataset = { id: 9, name: 'qa (csv)', kind: 'custom' }
    const calls = mockApi({
      'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }),
      'POST /api/v1/datasets/validate': () => ({ json: verdict({ file_format: 'csv', name: 'qa (csv)' }) }),
      'POST /api/v1/datasets': () => ({ status: 201, json: { dataset, existing: false } }),
    })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'qa.csv', 'question,answer\nq,a\n')
    expect(document.querySelector('[data-test=dataset-summary]')?.textContent?.trim()).toBe('1 row · Detected: QA')
    expect((document.querySelector('[data-test=dataset-name] input') as HTMLInputElement).placeholder).toBe('qa (csv)')
    expect(uploadButton().disabled).toBe(false)
    uploadButton().click()
    await settle()
    expect(calls.at(-1)!.url.pathname).toBe('/api/v1/datasets')
    expect(wrapper.findComponent(DatasetUpload).emitted('uploaded')?.[0]).toEqual([dataset, false])
  })

  it('asks again when the name changes and shows that it is taken', async () => {
    const calls = mockApi({
      'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }),
      'POST /api/v1/datasets/validate': (request) => (String(request.body).includes('name="name"')
        ? { json: verdict({ ok: false, name: 'taken', name_taken: true, problems: ["a dataset named 'taken' already exists; choose another name"] }) }
        : { json: verdict() }),
    })
    const wrapper = mountApp(DatasetUpload)
    await choose(wrapper, 'qa.jsonl', '{"question":"q","answer":"a"}\n')
    expect(uploadButton().disabled).toBe(false)
    await wrapper.find('[data-test=dataset-name] input').setValue('taken')
    await new Promise((r) => setTimeout(r, 350))
    await settle()
    expect(validations(calls)).toHaveLength(2)
    expect(String(validations(calls)[1].body)).toContain('taken')
    expect(shownProblems()).toEqual(["a dataset named 'taken' already exists; choose another name"])
    expect(uploadButton().disabled).toBe(true)
  })

  it('does not send a file over the server\'s size limit and says why', async () => {
    const calls = mockApi({ 'GET /api/v1/datasets/upload-rules': () => ({ json: RULES }) })
    const wrapper = mountApp(DatasetUpload)
    await settle()
    await choose(wrapper, 'big.jsonl', 'x'.repeat(RULES.max_bytes + 1))
    expect(validations(calls)).toHaveLength(0)
    expect(document.body.textContent).toContain('the server accepts at most')
    expect(uploadButton().disabled).toBe(true)
  })

  it('shows a refused dry run (413) as the reason and keeps Upload disabled', async () => {
    mockApi({
      'GET /api/v1/datasets/upload-rules': () => ({ status: 500, json: { detail: 'rules unavailable' } }),
      'POST /api/v1/datasets/validate': () => ({ status: 413, json: { detail: 'the file is larger than the limit of 100 MiB', problems: [] } }),
    })
    const wrapper = mountApp(DatasetUpload)
    await settle()
    expect(wrapper.find('[data-test=dataset-file]').attributes('accept')).toBeUndefined()
    await choose(wrapper, 'big.jsonl', '{"question":"q","answer":"a"}\n')
    expect(document.body.textContent).toContain('the file is larger than the limit of 100 MiB')
    expect(uploadButton().disabled).toBe(true)
  })
})
