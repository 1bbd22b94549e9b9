// Issue 10, "Every score says what it rests on": the evaluation page's score table reads `62.5 % ± 27.9` over
// `n = 8 · contains`, and shows only what is known for a score stored before that was recorded.
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { detail, mockApi } from '@/test/fetchMock'
import { mountApp, mountView } from '@/test/mountApp'
import EvaluationDetailView from '@/views/EvaluationDetailView.vue'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = '' })


describe('score table on the evaluation page', () => {
  it('shows value ± half the 95 % interval, n and scorer', async () => {
    const evaluation = detail(5, {
      status: 'succeeded',
      scores: [
        { model_id: 1, model: 'demo', dataset_id: 2, dataset: 'colours', metric: 'accuracy', value: 62.5, n: 8, correct: 5,
          scorer: 'contains', ci_low: 30.57, ci_high: 86.32, fingerprint: '0123456789abcdef',
          fingerprint_parts: { data: 'ab'.repeat(8), config: null, prompt: 'cd'.repeat(8), limit: 8, scorer: 'contains', max_out_len: null, opencompass: '0.5.4' } },
        { model_id: 1, model: 'demo', dataset_id: 3, dataset: 'old', metric: 'accuracy', value: 50, n: null, correct: null,
          scorer: null, ci_low: null, ci_high: null },
      ],
    })
    mockApi({
      'GET /api/v1/auth/me': () => ({ json: { user: null, auth_enabled: false, csrf_token: null } }),
      'GET /api/v1/evaluations/5': () => ({ json: evaluation }),
      'GET /api/v1/evaluations/5/logs': () => ({ text: '' }),
    })
    const { wrapper } = await mountView(EvaluationDetailView, '/evaluations/5', { id: 5 }, 'zh', pinia)
    const values = wrapper.findAll('[data-test=score-value]').map((cell) => cell.text())
    expect(values).toEqual(['62.5 % ± 27.9n = 8 · containsⓘ', '50ⓘ'])
    expect(wrapper.text()).toContain('± 为 95% 置信区间宽度的一半')
    // What the score's comparability rests on, behind the ⓘ; a score stored before fingerprints says so.
    const [recorded, old] = wrapper.findAll('[data-test=score-fingerprint]')
    recorded.element.dispatchEvent(new MouseEvent('mouseenter'))
    await vi.waitFor(() => expect(document.body.querySelector('[data-test=score-fingerprint-parts]')?.textContent).toBe(
      '可比性指纹: 0123456789abcdef样本上限: 8评分方式: contains最大输出长度: 数据集自带数据: abababababababab配置: 无（上传的文件）提示词: cdcdcdcdcdcdcdcdOpenCompass 版本: 0.5.4'))
    recorded.element.dispatchEvent(new MouseEvent('mouseleave'))
    old.element.dispatchEvent(new MouseEvent('mouseenter'))
    await vi.waitFor(() => expect(document.body.textContent).toContain('可比性指纹: 未记录（早于记录功能）'))
  })
})
