// Issue 10, "Every score says what it rests on": compare and leaderboard show each score as `62.5 % ± 27.9` with
// n and scorer, grey a result whose settings differ (what differs in its tooltip), and say which datasets the
// average is over.
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { CompareTable } from '@/api/types.gen'
import { createAppRouter } from '@/router'
import { mockApi } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'
import CompareView from '@/views/CompareView.vue'

beforeEach(() => { setActivePinia(createPinia()) })
afterEach(() => { document.body.innerHTML = '' })


const BOARD: CompareTable = {
  metric: null,
  models: [{ id: 1, name: 'alpha', average: 25 }, { id: 2, name: 'beta', average: 25 }],
  datasets: [{ id: 10, name: 'colours', metric: 'accuracy' }, { id: 11, name: 'phrases', metric: 'accuracy' }],
  cells: {
    1: {
      10: { value: 50, evaluation_id: 7, finished_at: null, n: 6, correct: 3, ci_low: 18.76, ci_high: 81.24, scorer: 'contains',
            fingerprint: 'a'.repeat(16), comparable: false, differences: [{ part: 'limit', value: 6, reference: null }] },
      11: { value: 25, evaluation_id: 7, finished_at: null, n: 4, correct: 1, ci_low: 4.56, ci_high: 69.94, scorer: 'exact', fingerprint: 'c'.repeat(16) },
    },
    2: {
      10: { value: 62.5, evaluation_id: 8, finished_at: null, n: 8, correct: 5, ci_low: 30.57, ci_high: 86.32, scorer: 'contains', fingerprint: 'b'.repeat(16) },
      11: { value: 25, evaluation_id: 8, finished_at: null, n: 4, correct: 1, ci_low: 4.56, ci_high: 69.94, scorer: 'exact', fingerprint: 'c'.repeat(16) },
    },
  },
  averages: { 1: 25, 2: 25 },
  average_dataset_ids: [11],
}

async function openLeaderboard(table: CompareTable, locale: 'en' | 'zh' = 'en') {
  mockApi({
    'GET /api/v1/models': () => ({ json: [] }),
    'GET /api/v1/datasets': () => ({ json: [] }),
    'GET /api/v1/leaderboard': () => ({ json: table }),
  })
  const router = createAppRouter('/')
  await router.push('/leaderboard')
  const wrapper = mountApp(CompareView, { mode: 'leaderboard' }, locale, { plugins: [router] })
  await settle()
  // The registry, then the table: under load a few more turns than settle() gives.
  await vi.waitFor(() => expect(wrapper.find('[data-test=average-note]').exists()).toBe(true))
  return wrapper
}

describe('CompareView', () => {
  it('shows value ± interval with n and scorer, and greys a result with other settings', async () => {
    const wrapper = await openLeaderboard(BOARD)
    const comparable = wrapper.findAll('[data-test=compare-cell]').map((cell) => cell.text())
    expect(comparable).toContain('62.5 % ± 27.9n = 8 · contains')
    expect(comparable).toContain('25 % ± 32.7n = 4 · exact')
    const greyed = wrapper.find('[data-test=compare-cell-incomparable]')
    expect(greyed.classes()).toContain('incomparable')
    expect(greyed.text()).toBe('≠ 50 % ± 31.2n = 6 · contains')
    expect(wrapper.find('[data-test=average-note]').text()).toBe('Average over 1 dataset every model has with the same settings: phrases.')
    greyed.element.dispatchEvent(new MouseEvent('mouseenter'))
    await vi.waitFor(() => expect(document.body.querySelector('[data-test=incomparable-reason]')?.textContent).toBe(
      'Not comparable with the other results in this column:· limit 6 vs all'))
  })

  it('says when no dataset can be averaged, in Chinese too', async () => {
    const wrapper = await openLeaderboard({ ...BOARD, average_dataset_ids: [], averages: { 1: null, 2: null } }, 'zh')
    expect(wrapper.find('[data-test=average-note]').text()).toContain('没有哪个数据集是所有模型以相同设置评测过的')
    wrapper.unmount()
    const note = await openLeaderboard(BOARD, 'zh')
    expect(note.find('[data-test=average-note]').text()).toBe('平均分只计 1 个所有模型以相同设置评测过的数据集：phrases。')
  })

  it("shows each model's plausible rank range and names the models it cannot order", async () => {
    const ranked = { ...BOARD, rank_resamples: 1000, rank_intervals: { 1: { low: 1, high: 2 }, 2: { low: 1, high: 2 } } }
    const wrapper = await openLeaderboard(ranked)
    expect(wrapper.findAll('[data-test=rank-range]').map((cell) => cell.text())).toEqual(['1–2', '1–2'])
    expect(wrapper.find('[data-test=rank-note]').text()).toBe('Not clearly ordered (their rank ranges overlap): alpha, beta.')
    wrapper.unmount()
    const settled = await openLeaderboard({ ...ranked, rank_intervals: { 1: { low: 1, high: 1 }, 2: { low: 2, high: 2 } } }, 'zh')
    expect(settled.findAll('[data-test=rank-range]').map((cell) => cell.text())).toEqual(['1', '2'])
    expect(settled.find('[data-test=rank-note]').text()).toBe('每个模型的名次区间都只有一个名次：样本足以确定先后。')
  })

  it("opens with the server's suggestion and links two models to their sample-by-sample comparison", async () => {
    const calls = mockApi({
      'GET /api/v1/models': () => ({ json: [{ id: 1, name: 'alpha' }, { id: 2, name: 'beta' }, { id: 3, name: 'never ran' }] }),
      'GET /api/v1/datasets': () => ({ json: [] }),
      'GET /api/v1/compare/suggested': () => ({ json: { model_ids: [2, 1], evaluation_ids: [8, 7], dataset_ids: [11] } }),
      'GET /api/v1/compare': () => ({ json: BOARD }),
    })
    const router = createAppRouter('/')
    await router.push('/compare')
    const wrapper = mountApp(CompareView, { mode: 'compare' }, 'en', { plugins: [router] })
    await settle()
    await vi.waitFor(() => expect(wrapper.find('[data-test=paired-links]').exists()).toBe(true))
    const links = wrapper.findAll('[data-test=paired-links] a')
    // colours: alpha's result has other settings (limit 6), so only phrases can be paired
    expect(links.map((link) => link.text())).toEqual(['Sample by sample on phrases →'])
    expect(links[0].attributes('href')).toBe('/compare/paired?a=7&b=8&model_a=alpha&model_b=beta')
    // The suggested models were asked for (not the registry's first ones), and the page says why these.
    const asked = calls.filter((c) => c.url.pathname === '/api/v1/compare')
    expect(asked.map((c) => c.url.searchParams.getAll('model_ids'))).toEqual([['2', '1']])
    expect(wrapper.find('[data-test=suggested-note]').text()).toBe('Showing the latest comparable evaluations of 2 models.')
  })
})
