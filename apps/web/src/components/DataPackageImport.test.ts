// Issue 12, data for built-in benchmarks: administrators import OpenCompass data packages (an upload with its own
// progress, or a path on the server), the import's progress is read from the server until it ends, and the report
// says what became ready; refusals and failed imports are shown, in English and Chinese.
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { DataImportRead, DataPackagesStatus } from '@/api/types.gen'
import DataPackageImport from '@/components/DataPackageImport.vue'
import { useSessionStore } from '@/stores/session'
import { mockApi, type Recorded } from '@/test/fetchMock'
import { mountApp, settle, signedInAs } from '@/test/mountApp'
import { formatBytes } from '@/utils/format'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = ''; vi.unstubAllGlobals() })

const MB = 1024 * 1024
function record(overrides: Partial<DataImportRead> = {}): DataImportRead {
  return {
    id: 'imp-1', source: 'gsm8k.zip', state: 'queued', stage: null, done_bytes: 0, total_bytes: 0, error: null, report: null,
    requested_by: 'alice', started_at: '2026-12-01T00:00:00Z', finished_at: null, ...overrides,
  }
}
const REPORT = {
  installed: ['gsm8k'], replaced: [], became_ready: ['gsm8k_gen'], benchmarks_ready: ['gsm8k'], bytes: 3 * MB, files: 3,
  checksum: 'md5 matches OpenCompass', md5: 'abc',
}
function status(overrides: Partial<DataPackagesStatus> = {}): DataPackagesStatus {
  return {
    data_root: '/srv/aieval/compass', extensions: ['.zip', '.tar', '.tar.gz'], import_roots: ['/srv/packages'], imports: [],
    max_bytes: 100 * MB, ...overrides,
  }
}

/** The component as the datasets page shows it to a signed-in administrator. */
async function mountImport(routes: Parameters<typeof mockApi>[0], locale: 'en' | 'zh' = 'en') {
  const calls = mockApi({ 'GET /api/v1/auth/me': () => signedInAs('admin'), ...routes })
  await useSessionStore(pinia).load()
  const imported: DataImportRead[] = []
  const wrapper = mountApp(DataPackageImport, { onImported: (r: DataImportRead) => imported.push(r) }, locale, { pinia })
  await settle()
  return { calls, wrapper, imported }
}

const inDocument = (selector: string) => document.querySelector(selector) as HTMLElement | null
const progresses = (calls: Recorded[]) => calls.filter((c) => c.url.pathname === '/api/v1/datasets/packages/imp-1')
/** The component reads the import's progress every 700 ms. */
const nextPoll = async () => { await new Promise((resolve) => setTimeout(resolve, 750)); await settle() }

/** Answers the progress endpoint with `steps` in turn, the last one from then on. */
function stepsOf(...steps: DataImportRead[]) {
  let i = 0
  return () => ({ json: steps[Math.min(i++, steps.length - 1)] })
}

/** Type a path on the server into the import panel and press its button, as an administrator would. */
async function importFromPath(serverPath: string) {
  const path = inDocument('[data-test=data-package-path] input') as HTMLInputElement
  path.value = serverPath
  path.dispatchEvent(new Event('input'))
  await settle()
  inDocument('[data-test=data-package-path-import]')!.click()
  await settle()
}

describe('DataPackageImport', () => {
  it('says what it accepts and where the data goes, as the server says, and lists the recent imports', async () => {
    await mountImport({ 'GET /api/v1/datasets/packages': () => ({ json: status({ imports: [
      record({ state: 'succeeded', report: REPORT, finished_at: '2026-12-01T00:01:00Z' }),
      record({ id: 'imp-0', source: 'broken.zip', state: 'failed', error: 'broken.zip: not a zip or tar archive' }),
    ] }) }) })
    expect(inDocument('[data-test=data-package-input]')!.getAttribute('accept')).toBe('.zip,.tar,.tar.gz')
    const intro = inDocument('[data-test=data-package-import]')!.textContent!
    expect(intro).toContain(`at most ${formatBytes(100 * MB)}`)
    expect(intro).toContain('/srv/aieval/compass/data')
    expect((inDocument('[data-test=data-package-path] input') as HTMLInputElement).placeholder).toContain('/srv/packages')
    const lines = [...document.querySelectorAll('[data-test=data-package-imports] .import-line')].map((l) => l.textContent)
    expect(lines[0]).toContain('Succeeded')
    expect(lines[0]).toContain('Installed: gsm8k; now ready: gsm8k; Checksum: md5 matches OpenCompass')
    expect(lines[1]).toContain('Failed')
    expect(lines[1]).toContain('broken.zip: not a zip or tar archive')
  })

  it('imports a path on the server and shows the import\'s progress from its status endpoint until it is done', async () => {
    const { calls, imported } = await mountImport({
      'GET /api/v1/datasets/packages': () => ({ json: status() }),
      'POST /api/v1/datasets/packages/from-path': () => ({ status: 202, json: record() }),
      'GET /api/v1/datasets/packages/imp-1': stepsOf(
        record({ state: 'running', stage: 'unpacking', done_bytes: 2 * MB, total_bytes: 5 * MB }),
        record({ state: 'succeeded', stage: null, done_bytes: 5 * MB, total_bytes: 5 * MB, report: REPORT }),
      ),
    })
    await importFromPath('/srv/packages/gsm8k.zip')
    expect(calls.filter((c) => c.url.pathname === '/api/v1/datasets/packages/from-path').map((c) => c.body))
      .toEqual([{ path: '/srv/packages/gsm8k.zip' }])
    // Queued: waiting for an earlier import; nothing can be started meanwhile.
    expect(inDocument('[data-test=data-package-import-progress]')!.textContent).toContain('gsm8k.zip — Waiting for an earlier import…')
    expect((inDocument('[data-test=data-package-choose]') as HTMLButtonElement).disabled).toBe(true)

    await nextPoll()
    expect(progresses(calls)).toHaveLength(1)
    const progress = inDocument('[data-test=data-package-import-progress]')!
    expect(progress.textContent).toContain('gsm8k.zip — Unpacking')
    expect(progress.querySelector('[role=progressbar]')!.getAttribute('aria-valuenow')).toBe('40')
    expect(imported).toHaveLength(0)

    await nextPoll()
    expect(progresses(calls)).toHaveLength(2)
    expect(inDocument('[data-test=data-package-import-progress]')).toBeNull()
    expect(document.body.textContent).toContain('gsm8k.zip imported: gsm8k now ready')
    expect(imported.map((r) => r.state)).toEqual(['succeeded'])
    await nextPoll()
    expect(progresses(calls)).toHaveLength(2) // no more polling once it ended
    expect((inDocument('[data-test=data-package-choose]') as HTMLButtonElement).disabled).toBe(false)
  })

  it('a failed import says so with the server\'s reason', async () => {
    const { imported } = await mountImport({
      'GET /api/v1/datasets/packages': () => ({ json: status() }),
      'POST /api/v1/datasets/packages/from-path': () => ({ status: 202, json: record({ state: 'running', stage: 'verifying' }) }),
      'GET /api/v1/datasets/packages/imp-1': () => ({ json: record({ state: 'failed',
        error: 'gsm8k.zip: checksum mismatch (expected 1234, got 5678): the download is damaged' }) }),
    })
    await importFromPath('/srv/packages/gsm8k.zip')
    expect(inDocument('[data-test=data-package-import-progress]')!.textContent).toContain('Checking the checksum')
    await nextPoll()
    const alert = inDocument('[data-test=data-package-import] [role=alert]')!.textContent
    expect(alert).toContain('Import of gsm8k.zip failed')
    expect(alert).toContain('checksum mismatch (expected 1234, got 5678)')
    expect(imported.map((r) => r.state)).toEqual(['failed'])
  })

  it('a refused path is shown with the server\'s words', async () => {
    await mountImport({
      'GET /api/v1/datasets/packages': () => ({ json: status() }),
      'POST /api/v1/datasets/packages/from-path': () => ({ status: 422, json: {
        detail: '/etc/passwd is not under an import folder', problems: ['path: under /srv/packages'] } }),
    })
    const path = inDocument('[data-test=data-package-path] input') as HTMLInputElement
    path.value = '/etc/passwd'
    path.dispatchEvent(new Event('input'))
    await settle()
    inDocument('[data-test=data-package-path-import]')!.click()
    await settle()
    const alert = inDocument('[role=alert]')!.textContent
    expect(alert).toContain('/etc/passwd is not under an import folder')
    expect(alert).toContain('path: under /srv/packages')
  })

  describe('uploading an archive', () => {
    /** An XMLHttpRequest that records what it was sent and answers when the test says. */
    class FakeRequest {
      static last: FakeRequest | null = null
      method = ''; url = ''; headers: Record<string, string> = {}; body: FormData | null = null
      status = 0; responseText = ''
      upload: { onprogress: ((e: { lengthComputable: boolean; loaded: number; total: number }) => void) | null } = { onprogress: null }
      onload: (() => void) | null = null
      onerror: (() => void) | null = null
      open(method: string, url: string) { this.method = method; this.url = url }
      setRequestHeader(name: string, value: string) { this.headers[name] = value }
      send(body: FormData) { this.body = body; FakeRequest.last = this }
      answer(status: number, body: unknown) { this.status = status; this.responseText = JSON.stringify(body); this.onload?.() }
    }
    beforeEach(() => { FakeRequest.last = null; vi.stubGlobal('XMLHttpRequest', FakeRequest) })

    async function choose(size: number) {
      const input = inDocument('[data-test=data-package-input]') as HTMLInputElement
      const file = new File(['x'], 'OpenCompassData-core.zip')
      Object.defineProperty(file, 'size', { value: size })
      Object.defineProperty(input, 'files', { value: [file], configurable: true })
      input.dispatchEvent(new Event('change'))
      await settle()
    }

    it('shows the upload\'s progress, sends the CSRF header, then follows the import', async () => {
      const { calls } = await mountImport({
        'GET /api/v1/datasets/packages': () => ({ json: status() }),
        'GET /api/v1/datasets/packages/imp-1': () => ({ json: record({ source: 'OpenCompassData-core.zip', state: 'succeeded',
          report: { ...REPORT, benchmarks_ready: ['gsm8k', 'mmlu'] } }) }),
      })
      await choose(10 * MB)
      const request = FakeRequest.last!
      expect([request.method, request.url]).toEqual(['POST', '/api/v1/datasets/packages'])
      expect(request.headers['X-CSRF-Token']).toBe('csrf')
      expect((request.body!.get('file') as File).name).toBe('OpenCompassData-core.zip')
      request.upload.onprogress!({ lengthComputable: true, loaded: 3 * MB, total: 10 * MB })
      await settle()
      const upload = inDocument('[data-test=data-package-upload-progress]')!
      expect(upload.textContent).toContain('Uploading OpenCompassData-core.zip')
      expect(upload.querySelector('[role=progressbar]')!.getAttribute('aria-valuenow')).toBe('30')

      request.answer(202, record({ source: 'OpenCompassData-core.zip', state: 'running', stage: 'installing', done_bytes: 1, total_bytes: 4 }))
      await settle()
      expect(inDocument('[data-test=data-package-upload-progress]')).toBeNull()
      expect(inDocument('[data-test=data-package-import-progress]')!.textContent).toContain('Installing')
      await nextPoll()
      expect(progresses(calls)).toHaveLength(1)
      expect(document.body.textContent).toContain('OpenCompassData-core.zip imported: gsm8k, mmlu now ready')
    })

    it('refuses a file over the server\'s limit before sending it; shows the server\'s refusal of an upload', async () => {
      await mountImport({ 'GET /api/v1/datasets/packages': () => ({ json: status() }) })
      await choose(101 * MB)
      expect(FakeRequest.last).toBeNull()
      expect(inDocument('[role=alert]')!.textContent).toContain(`The file is ${formatBytes(101 * MB)}; the server accepts at most ${formatBytes(100 * MB)}`)

      await choose(10 * MB)
      FakeRequest.last!.answer(409, { detail: 'Another import is running: wait for it to end' })
      await settle()
      expect(inDocument('[role=alert]')!.textContent).toContain('Another import is running: wait for it to end')
      expect(inDocument('[data-test=data-package-upload-progress]')).toBeNull()
    })
  })

  it('zh: the panel, stages and states in Chinese', async () => {
    await mountImport({
      'GET /api/v1/datasets/packages': () => ({ json: status({ imports: [record({ state: 'succeeded', report: REPORT })] }) }),
      'POST /api/v1/datasets/packages/from-path': () => ({ status: 202, json: record({ state: 'running', stage: 'downloading', done_bytes: 3 * MB }) }),
      'GET /api/v1/datasets/packages/imp-1': () => ({ json: record({ state: 'running', stage: 'downloading', done_bytes: 3 * MB }) }),
    }, 'zh')
    const panel = inDocument('[data-test=data-package-import]')!
    expect(panel.textContent).toContain('OpenCompass 以压缩包发布各评测基准的数据')
    expect(panel.querySelector('[data-test=data-package-imports] .import-line')!.textContent).toContain('成功')
    expect(panel.textContent).not.toMatch(/succeeded|Installed|Checksum/)
    await importFromPath('/srv/packages/gsm8k.zip')
    expect(inDocument('[data-test=data-package-import-progress]')!.textContent).toContain(`正在下载 ${formatBytes(3 * MB)}`)
  })
})
