import { describe, expect, it } from 'vitest'
import type { CompareTable } from '@/api/types.gen'
import { barOption, radarOption } from '@/charts/options'
import { comparePoints, compareRows } from './compare'

const table: CompareTable = {
  metric: null,
  models: [{ id: 1, name: 'small' }, { id: 2, name: 'big' }, { id: 3, name: 'never ran' }],
  datasets: [{ id: 10, name: 'mcq' }, { id: 11, name: 'qa' }],
  cells: {
    1: { 10: { value: 40, evaluation_id: 5, finished_at: null } },
    2: { 10: { value: 80, evaluation_id: 6, finished_at: null }, 11: { value: 60, evaluation_id: 6, finished_at: null } },
  },
  averages: { 1: 40, 2: 70, 3: null },
}

describe('compare table', () => {
  it('ranks by average, unscored models last and unranked', () => {
    const rows = compareRows(table)
    expect(rows.map((r) => [r.model, r.rank])).toEqual([['big', 1], ['small', 2], ['never ran', 0]])
    expect(rows[1].cells['10']).toEqual({ value: 40, evaluationId: 5 })
    expect(rows[1].cells['11']).toBeUndefined()
  })

  it('turns cells into chart points and options', () => {
    const points = comparePoints(table)
    expect(points).toHaveLength(3)
    const bar = barOption(points)
    expect(bar.xAxis.data).toEqual(['mcq', 'qa'])
    expect(bar.series.map((s) => [s.name, s.data])).toEqual([['small', [40, null]], ['big', [80, 60]]])
    const radar = radarOption(points)
    expect(radar.radar.indicator.map((i) => i.name)).toEqual(['mcq', 'qa'])
    expect(radar.series[0].data.find((d) => d.name === 'small')?.value).toEqual([40, 0])
  })
})
