import { describe, expect, it } from 'vitest'
import { headlineTitle, headlineValue } from './headline'

const t = (key: string, values?: Record<string, unknown>) => `${key}:${JSON.stringify(values ?? {})}`

describe('headline scores', () => {
  it('one dataset: the score with its interval; the tooltip names dataset and metric', () => {
    const score = { model_id: 1, model: 'm', value: 62.5, datasets: 1, dataset: 'qa', metric: 'accuracy', n: 8, correct: 5, ci_low: 30.57, ci_high: 86.32 }
    expect(headlineValue(score, t)).toBe('62.5 % ± 27.9')
    expect(headlineValue({ ...score, correct: null, ci_low: null, ci_high: null, value: 3.25 }, t)).toBe('3.25')
    expect(headlineTitle(score, t)).toBe('m · qa · accuracy')
  })

  it('several datasets: the average and over how many', () => {
    const score = { model_id: 1, model: 'm', value: 45.25, datasets: 3, n: 24 }
    expect(headlineValue(score, t)).toBe('headline.average:{"value":"45.25","n":3}')
    expect(headlineTitle(score, t)).toBe('headline.averageTitle:{"model":"m","n":3}')
  })
})
