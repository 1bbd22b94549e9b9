import { describe, expect, it } from 'vitest'
import type { CompareTable } from '@/api/types.gen'
import { barOption, radarOption } from '@/charts/options'
import { averagedDatasets, comparePoints, compareRows, overlappingRanks, rankLabel } from './compare'

const table: CompareTable = {
  metric: null,
  models: [{ id: 1, name: 'small' }, { id: 2, name: 'big' }, { id: 3, name: 'never ran' }],
  datasets: [{ id: 10, name: 'mcq' }, { id: 11, name: 'qa' }],
  cells: {
    1: { 10: { value: 40, evaluation_id: 5, finished_at: null } },
    2: {
      10: { value: 80, evaluation_id: 6, finished_at: null, n: 10, correct: 8, ci_low: 49.0, ci_high: 94.3, scorer: 'exact' },
      11: { value: 60, evaluation_id: 6, finished_at: null, comparable: false, differences: [{ part: 'limit', value: 5, reference: null }] },
    },
  },
  averages: { 1: 40, 2: 80, 3: null },
  average_dataset_ids: [10],
}

describe('compare table', () => {
  it('ranks by average, unscored models last and unranked', () => {
    const rows = compareRows(table)
    expect(rows.map((r) => [r.model, r.rank])).toEqual([['big', 1], ['small', 2], ['never ran', 0]])
    expect(rows.map(rankLabel)).toEqual(['1', '2', '—']) // no ranges from the server: the plain places
    expect(rows[1].cells['10']).toEqual({
      value: 40, evaluationId: 5, n: null, correct: null, ciLow: null, ciHigh: null, scorer: null, comparable: true, differences: [],
    })
    expect(rows[1].cells['11']).toBeUndefined()
    expect(rows[0].cells['10']).toMatchObject({ n: 10, correct: 8, ciLow: 49.0, ciHigh: 94.3, scorer: 'exact', comparable: true })
    expect(rows[0].cells['11']).toMatchObject({ comparable: false, differences: [{ part: 'limit', value: 5, reference: null }] })
  })

  it('names the datasets the averages are over', () => {
    expect(averagedDatasets(table)).toEqual([{ id: 10, name: 'mcq' }])
    expect(averagedDatasets({ ...table, average_dataset_ids: [] })).toEqual([])
  })

  it('turns cells into chart points and options', () => {
    const points = comparePoints(table)
    expect(points).toHaveLength(3)
    expect(points.find((p) => p.model === 'big' && p.dataset === 'qa')?.comparable).toBe(false)
    const bar = barOption(points)
    expect(bar.xAxis.data).toEqual(['mcq', 'qa'])
    const bars = bar.series.filter((s) => s.type === 'bar') as { name: string; data: ({ value: number } | null)[] }[]
    expect(bars.map((s) => [s.name, s.data.map((item) => item?.value ?? null)])).toEqual([['small', [40, null]], ['big', [80, 60]]])
    const radar = radarOption(points)
    expect(radar.radar.indicator.map((i) => i.name)).toEqual(['mcq', 'qa'])
    expect(radar.series[0].data.find((d) => d.name === 'small')?.value).toEqual([40, 0])
  })
})

describe('rank ranges', () => {
  const ranged: CompareTable = {
    ...table,
    models: [{ id: 1, name: 'a' }, { id: 2, name: 'b' }, { id: 3, name: 'c' }, { id: 4, name: 'd' }, { id: 5, name: 'e' }],
    averages: { 1: 70, 2: 69, 3: 50, 4: 49, 5: 10 },
    rank_intervals: { 1: { low: 1, high: 2 }, 2: { low: 1, high: 3 }, 3: { low: 2, high: 3 }, 4: { low: 4, high: 4 }, 5: { low: 5, high: 5 } },
  }

  it('shows the plausible range, a single place only when certain', () => {
    const rows = compareRows(ranged)
    expect(rows.map((r) => [r.model, rankLabel(r)])).toEqual([['a', '1–2'], ['b', '1–3'], ['c', '2–3'], ['d', '4'], ['e', '5']])
  })

  it('groups models whose ranges overlap, chained, and leaves the settled ones out', () => {
    expect(overlappingRanks(compareRows(ranged))).toEqual([['a', 'b', 'c']])
    const apart = { ...ranged, rank_intervals: { 1: { low: 1, high: 2 }, 2: { low: 1, high: 2 }, 3: { low: 3, high: 4 }, 4: { low: 3, high: 4 }, 5: { low: 5, high: 5 } } }
    expect(overlappingRanks(compareRows(apart))).toEqual([['a', 'b'], ['c', 'd']])
    expect(overlappingRanks(compareRows(table))).toEqual([])
  })
})
