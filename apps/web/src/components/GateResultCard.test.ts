import { afterEach, describe, expect, it } from 'vitest'
import GateBadge from '@/components/GateBadge.vue'
import GateResultCard from '@/components/GateResultCard.vue'
import { createAppRouter } from '@/router'
import { mountApp } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

const failedGate = {
  status: 'failed', schedule_id: 3, baseline_evaluation_id: 7, checked_at: '2026-12-01T02:05:00Z',
  rules: [
    { rule: { kind: 'no_significant_drop', alpha: 0.05 }, status: 'failed',
      reasons: ['m / gsm8k: 12.50 points worse than baseline #7 (Holm p = 0.008 < 0.05)'] },
    { rule: { kind: 'min_score', dataset: 'mmlu', metric: null, threshold: 60 }, status: 'passed',
      reasons: ['m / mmlu / accuracy: 71.00 ≥ 60'] },
  ],
}

describe('GateBadge', () => {
  it('shows the verdict in both languages and nothing without one', () => {
    expect(mountApp(GateBadge, { status: 'failed' }).text()).toBe('Gate: failed')
    expect(mountApp(GateBadge, { status: 'passed' }, 'zh').text()).toBe('门禁: 通过')
    expect(mountApp(GateBadge, { status: null }).find('[data-test=gate-badge]').exists()).toBe(false)
  })
})

describe('GateResultCard', () => {
  it('lists every rule with its verdict and the reasons the server gave, linking the baseline', () => {
    const card = mountApp(GateResultCard, { gate: failedGate }, 'en', { plugins: [createAppRouter('/')] })
    const rules = card.findAll('.gate-rule')
    expect(rules.map((r) => r.attributes('data-rule-status'))).toEqual(['failed', 'passed'])
    expect(rules[0].text()).toContain('No significant drop (alpha 0.05)')
    expect(rules[0].text()).toContain('12.50 points worse than baseline #7')
    expect(rules[1].text()).toContain('mmlu / accuracy ≥ 60')
    expect(card.find('a[href="/evaluations/7"]').text()).toBe('baseline #7')
  })
})
