// Issue 12, data for built-in benchmarks: the catalogue is grouped by benchmark with ready / partly ready / missing
// badges, says for a missing one exactly what to import or fetch (as the server says), and offers the import panel
// only to administrators (the role the server gives in /auth/me).
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { BenchmarkRead, DataPackagesStatus } from '@/api/types.gen'
import { mockApi, type Recorded } from '@/test/fetchMock'
import { mountView, settle, signedInAs } from '@/test/mountApp'
import DatasetsView from '@/views/DatasetsView.vue'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = '' })

const GSM8K: BenchmarkRead = {
  name: 'gsm8k', status: 'missing', ready_configs: 0, total_configs: 2,
  configs: [
    { name: 'gsm8k_gen', ready: false, missing: ['data/gsm8k/test.jsonl'], registered_id: null },
    { name: 'gsm8k_gen_1d7fe4', ready: false, missing: ['data/gsm8k/test.jsonl'], registered_id: null },
  ],
  packages: [{ archive_name: 'gsm8k.zip', url: 'http://127.0.0.1:9/gsm8k.zip', md5: null }],
  fetch_command: 'aieval datasets fetch gsm8k', how_to_get: 'import gsm8k.zip (or run: aieval datasets fetch gsm8k)',
}
const MMLU: BenchmarkRead = {
  name: 'mmlu', status: 'partial', ready_configs: 1, total_configs: 2,
  configs: [
    { name: 'mmlu_gen', ready: true, missing: [], registered_id: 12 },
    { name: 'mmlu_ppl', ready: false, missing: ['data/mmlu/extra.csv'], registered_id: null },
  ],
  packages: [{ archive_name: 'OpenCompassData-core-20240207.zip', url: 'http://127.0.0.1:9/core.zip', md5: 'x' }],
  fetch_command: 'aieval datasets fetch mmlu', how_to_get: 'import OpenCompassData-core-20240207.zip',
}
const DEMO: BenchmarkRead = {
  name: 'demo_letters', status: 'ready', ready_configs: 1, total_configs: 1,
  configs: [{ name: 'demo_letters_gen', ready: true, missing: [], registered_id: null }],
  packages: [], fetch_command: null, how_to_get: '',
}
const LOCAL_ONLY: BenchmarkRead = {
  name: 'private_set', status: 'missing', ready_configs: 0, total_configs: 1,
  configs: [{ name: 'private_set_gen', ready: false, missing: ['data/private/x.jsonl'], registered_id: null }],
  packages: [], fetch_command: null, how_to_get: 'copy its files into the data folder',
}
const STATUS: DataPackagesStatus = { data_root: '/srv/compass', extensions: ['.zip'], import_roots: [], imports: [], max_bytes: 1 << 30 }

function serve(role: 'admin' | 'member' | 'viewer', routes: Parameters<typeof mockApi>[0] = {}) {
  return mockApi({
    'GET /api/v1/auth/me': () => signedInAs(role),
    'GET /api/v1/models': () => ({ json: [] }),
    'GET /api/v1/datasets': () => ({ json: [] }),
    'GET /api/v1/datasets/builtin/benchmarks': ({ url }) => {
      const wanted = url.searchParams.get('status')
      const items = [GSM8K, MMLU, DEMO, LOCAL_ONLY].filter((b) => !wanted || b.status === wanted)
      return { json: { items, total: items.length, page: 1, page_size: 20 } }
    },
    'GET /api/v1/datasets/packages': () => (role === 'admin' ? { json: STATUS } : { status: 403, json: { detail: 'administrators only' } }),
    ...routes,
  })
}

const inDocument = (selector: string) => document.querySelector(selector) as HTMLElement | null
const benchmarkRow = (name: string) => inDocument(`[data-benchmark="${name}"]`)!.closest('tr') as HTMLElement
const catalogueCalls = (calls: Recorded[]) => calls.filter((c) => c.url.pathname === '/api/v1/datasets/builtin/benchmarks')

async function openCatalogue(role: 'admin' | 'member' | 'viewer', locale: 'en' | 'zh' = 'en') {
  const calls = serve(role)
  const { wrapper } = await mountView(DatasetsView, '/datasets', {}, locale, pinia)
  const tab = [...document.querySelectorAll('.n-tabs-tab')].find((t) => t.textContent === (locale === 'en' ? 'Built-in catalogue' : '内置数据集目录'))
  ;(tab as HTMLElement).click()
  await settle()
  return { calls, wrapper }
}

describe('the built-in catalogue', () => {
  it('one row per benchmark with its badge and ready count; a missing one says what to import or fetch', async () => {
    const { calls } = await openCatalogue('admin')
    expect(catalogueCalls(calls)).toHaveLength(1)
    expect(catalogueCalls(calls)[0].url.searchParams.get('page_size')).toBe('20')
    expect([...document.querySelectorAll('[data-benchmark]')].map((b) => b.textContent)).toEqual(['gsm8k', 'mmlu', 'demo_letters', 'private_set'])
    const badge = (name: string) => benchmarkRow(name).querySelector('[data-test=benchmark-status]')!.textContent
    expect([badge('gsm8k'), badge('mmlu'), badge('demo_letters')]).toEqual(['Data missing', 'Partly ready', 'Ready'])
    expect(benchmarkRow('mmlu').textContent).toContain('1/2 configs')
    expect(benchmarkRow('gsm8k').querySelector('[data-test=benchmark-how-to-get]')!.textContent)
      .toBe('Import gsm8k.zip or run on the server: aieval datasets fetch gsm8k')
    expect(benchmarkRow('mmlu').querySelector('[data-test=benchmark-how-to-get]')!.textContent)
      .toBe('Import OpenCompassData-core-20240207.zip or run on the server: aieval datasets fetch mmlu')
    expect(benchmarkRow('demo_letters').querySelector('[data-test=benchmark-how-to-get]')).toBeNull()
    expect(benchmarkRow('private_set').textContent).toContain('OpenCompass publishes no archive for this data')
  })

  it('a benchmark opens to its configs: which files each lacks, registered or registrable', async () => {
    await openCatalogue('member')
    ;(benchmarkRow('mmlu').querySelector('.n-data-table-expand-trigger') as HTMLElement).click()
    await settle()
    const configs = [...document.querySelectorAll('[data-test=benchmarks-table] .n-data-table tbody tr')] as HTMLElement[]
    expect(configs.map((r) => r.querySelector('td')!.textContent)).toEqual(['mmlu_gen', 'mmlu_ppl'])
    expect(configs[0].textContent).toContain('#12')
    expect(configs[1].textContent).toContain('data/mmlu/extra.csv')
    expect((configs[1].querySelector('button') as HTMLButtonElement).disabled).toBe(true) // nothing to register yet
  })

  it('the status filter asks the server', async () => {
    const { calls } = await openCatalogue('member')
    const missing = [...document.querySelectorAll('[data-test=benchmark-status-filter] .n-radio-button')]
      .find((b) => b.textContent === 'Data missing') as HTMLElement
    missing.querySelector('input')!.click()
    await new Promise((resolve) => setTimeout(resolve, 350))
    await settle()
    expect(catalogueCalls(calls).at(-1)!.url.searchParams.get('status')).toBe('missing')
    expect([...document.querySelectorAll('[data-benchmark]')].map((b) => b.textContent)).toEqual(['gsm8k', 'private_set'])
  })

  it('the import panel is for administrators only; others are told to ask one', async () => {
    const admin = await openCatalogue('admin')
    expect(inDocument('[data-test=data-packages-card]')).not.toBeNull()
    expect(admin.calls.some((c) => c.url.pathname === '/api/v1/datasets/packages')).toBe(true)
    admin.wrapper.unmount()
    document.body.innerHTML = ''

    pinia = createPinia()
    setActivePinia(pinia)
    const member = await openCatalogue('member')
    expect(inDocument('[data-test=data-packages-card]')).toBeNull()
    expect(member.calls.some((c) => c.url.pathname === '/api/v1/datasets/packages')).toBe(false)
    expect(benchmarkRow('gsm8k').querySelector('[data-test=benchmark-how-to-get]')!.textContent)
      .toBe('Administrators import data packages: ask one to import gsm8k.zip or run on the server: aieval datasets fetch gsm8k')
  })

  it('a failed catalogue load is shown', async () => {
    serve('member', { 'GET /api/v1/datasets/builtin/benchmarks': () => ({ status: 503, json: { detail: 'The OpenCompass configs cannot be read' } }) })
    await mountView(DatasetsView, '/datasets', {}, 'en', pinia)
    ;([...document.querySelectorAll('.n-tabs-tab')].find((t) => t.textContent === 'Built-in catalogue') as HTMLElement).click()
    await settle()
    expect(inDocument('[role=alert]')!.textContent).toContain('The OpenCompass configs cannot be read')
  })

  it('zh: badges and what to do in Chinese', async () => {
    await openCatalogue('admin', 'zh')
    expect(benchmarkRow('gsm8k').querySelector('[data-test=benchmark-status]')!.textContent).toBe('缺少数据')
    const how = benchmarkRow('gsm8k').querySelector('[data-test=benchmark-how-to-get]')!.textContent!
    expect(how).toContain('gsm8k.zip')
    expect(how).toContain('aieval datasets fetch gsm8k')
    expect(how).toBe('导入 gsm8k.zip 或在服务器上运行： aieval datasets fetch gsm8k')
    expect(inDocument('[data-test=data-packages-card]')!.textContent).toContain('导入数据包')
  })
})
