import { describe, expect, it } from 'vitest'
import { createAppI18n } from '@/i18n'
import { differenceText, fingerprintLines, formatBasis, formatScoreLabel, formatValue, formatWithInterval, halfInterval, isShare } from './provenance'

// 5 of 8 right: Wilson 95 % interval 30.57..86.32 (services/statistics.py, checked against statsmodels there).
const fiveOfEight = { value: 62.5, n: 8, correct: 5, ci_low: 30.5745, ci_high: 86.3221, scorer: 'contains' }

describe('what a score rests on', () => {
  it('reads as the Markdown export writes it: ± is half the interval, % only for a share right', () => {
    expect(halfInterval(fiveOfEight)).toBeCloseTo(27.87, 2)
    expect(isShare(fiveOfEight)).toBe(true)
    expect(formatWithInterval(fiveOfEight)).toBe('62.5 % ± 27.9')
    expect(formatBasis(fiveOfEight)).toBe('n = 8 · contains')
    expect(formatScoreLabel(fiveOfEight)).toBe('62.5 % ± 27.9 · n = 8 · contains')
  })

  it('shows only what is known, and no % for a value that is not the share right', () => {
    expect(formatScoreLabel({ value: 50 })).toBe('50')
    expect(formatScoreLabel({ value: 0.4523, n: 20, ci_low: 0.31, ci_high: 0.6, scorer: 'BleuEvaluator' })).toBe('0.4523 ± 0.1 · n = 20 · BleuEvaluator')
    expect(isShare({ value: 62.5, n: 8, correct: 4 })).toBe(false)
    expect(formatValue(66.666666)).toBe('66.67')
    expect(formatValue(null)).toBe('—')
  })

  it('says what differs in either language, this result first', () => {
    const i18n = createAppI18n('en')
    const t = (key: string, values?: Record<string, unknown>) => i18n.global.t(key, values ?? {})
    expect(differenceText({ part: 'limit', value: 8, reference: 12 }, t)).toBe('limit 8 vs 12')
    expect(differenceText({ part: 'limit', value: 6, reference: null }, t)).toBe('limit 6 vs all')
    expect(differenceText({ part: 'scorer', value: 'exact', reference: 'contains' }, t)).toBe('scorer exact vs contains')
    expect(differenceText({ part: 'max_out_len', value: 64, reference: null }, t)).toBe("max output length 64 vs dataset's own")
    expect(differenceText({ part: 'unrecorded', value: null, reference: null }, t)).toContain('not recorded')
    expect(differenceText({ part: 'judge', value: 'a', reference: 'b' }, t)).toBe('judge a vs b')
    i18n.global.locale.value = 'zh'
    expect(differenceText({ part: 'limit', value: 6, reference: null }, t)).toBe('样本上限：6（本列为 全部）')
  })

  it('counts the averaged datasets in the note', () => {
    const i18n = createAppI18n('en')
    expect(i18n.global.t('provenance.averageNote', { n: 1, names: 'qa' }, 1)).toBe('Average over 1 dataset every model has with the same settings: qa.')
    expect(i18n.global.t('provenance.averageNote', { n: 2, names: 'qa, mcq' }, 2)).toBe('Average over 2 datasets every model has with the same settings: qa, mcq.')
  })
})

describe('fingerprint lines', () => {
  const t = (key: string, values?: Record<string, unknown>) => (values ? `${key}:${JSON.stringify(values)}` : key)

  it('lists the parts in the order people check them, unset ones by what they mean, later parts after', () => {
    const parts = { opencompass: '0.5.4', data: 'ab12', prompt: 'cd34', config: null, limit: null, scorer: 'contains', max_out_len: 64, judge: { model: 'j' } }
    expect(fingerprintLines(parts, t).map((l) => [l.part, l.label, l.value])).toEqual([
      ['limit', 'provenance.parts.limit', 'provenance.unset.limit'],
      ['scorer', 'provenance.parts.scorer', 'contains'],
      ['max_out_len', 'provenance.parts.max_out_len', '64'],
      ['data', 'provenance.parts.data', 'ab12'],
      ['config', 'provenance.parts.config', 'provenance.unset.config'],
      ['prompt', 'provenance.parts.prompt', 'cd34'],
      ['opencompass', 'provenance.parts.opencompass', '0.5.4'],
      ['judge', 'judge', '{"model":"j"}'],
    ])
    expect(fingerprintLines(null, t)).toEqual([])
  })
})
