import { describe, expect, it } from 'vitest'
import { barOption, barSlot, type ScorePoint } from './options'

const points: ScorePoint[] = [
  { model: 'a', dataset: 'colours', value: 62.5, n: 8, correct: 5, ciLow: 30.57, ciHigh: 86.32, scorer: 'contains' },
  { model: 'a', dataset: 'phrases', value: 25, n: 4, correct: 1 }, // no interval known: no error bar
  { model: 'b', dataset: 'colours', value: 50, n: 6, correct: 3, ciLow: 18.76, ciHigh: 81.24, scorer: 'contains', comparable: false },
]

describe('bar chart with error bars', () => {
  it('draws one whisker per bar with an interval, on its bar', () => {
    const option = barOption(points)
    const custom = option.series.filter((s) => s.type === 'custom') as unknown as { name: string; data: number[][]; renderItem: (p: unknown, api: unknown) => { children: { shape: { x1: number; y1: number; x2: number; y2: number } }[] } }[]
    expect(custom.map((s) => [s.name, s.data])).toEqual([['a', [[0, 30.57, 86.32]]], ['b', [[0, 18.76, 81.24]]]])
    // A fake coordinate system: category i centred at 100 + 200 i, a band of 200 px, y = 300 - 3 * value.
    const values = [0, 30.57, 86.32]
    const api = {
      value: (dimension: number) => values[dimension],
      coord: ([category, value]: number[]) => [100 + 200 * category, 300 - 3 * value],
      size: () => [200, 0],
    }
    const [stem] = custom[1].renderItem({}, api).children
    const slot = barSlot(200, 1, 2)
    expect(stem.shape).toEqual({ x1: 100 + slot.offset, y1: 300 - 3 * 30.57, x2: 100 + slot.offset, y2: 300 - 3 * 86.32 })
  })

  it('places bars as ECharts does: centred, 30 % gaps, at most 40 px wide', () => {
    // Band 200: 80 % usable = 160 for 2 bars and a 30 % gap: 69.6 each, capped at 40; centres at ±26.
    expect(barSlot(200, 0, 2)).toEqual({ offset: -26, width: 40 })
    expect(barSlot(200, 1, 2)).toEqual({ offset: 26, width: 40 })
    const narrow = barSlot(50, 0, 3) // 40 / 3.6 = 11.1 px bars
    expect(narrow.width).toBeCloseTo(40 / 3.6)
    expect(narrow.offset).toBeCloseTo(-(3 * narrow.width + 2 * 0.3 * narrow.width) / 2 + narrow.width / 2)
  })

  it('greys a result whose settings differ and says so in its label and tooltip', () => {
    const option = barOption(points)
    const b = option.series.find((s) => s.type === 'bar' && s.name === 'b') as unknown as { data: { itemStyle?: { color: string } }[]; label: { formatter: (p: unknown) => string } }
    expect(b.data[0].itemStyle?.color).toBe('#cbd5e1')
    expect(b.label.formatter({ value: 50, data: b.data[0] })).toBe('≠50.0')
    const tooltip = option.tooltip.formatter([
      { seriesType: 'bar', seriesName: 'a', marker: '', data: { point: points[0] }, axisValueLabel: 'colours' },
      { seriesType: 'bar', seriesName: 'b', marker: '', data: { point: points[2] } },
      { seriesType: 'custom', seriesName: 'a', data: null },
    ])
    expect(tooltip).toBe('colours<br/>a: 62.5 % ± 27.9 · n = 8 · contains<br/>b: ≠ 50 % ± 31.2 · n = 6 · contains')
  })
})

describe('error bars in a real ECharts layout', () => {
  it('each whisker stands on the centre of its own bar', async () => {
    const echarts = await import('echarts/core')
    const { BarChart, CustomChart } = await import('echarts/charts')
    const { GridComponent, LegendComponent, TooltipComponent } = await import('echarts/components')
    const { SVGRenderer } = await import('echarts/renderers')
    const { LegacyGridContainLabel } = await import('echarts/features')
    // As charts/echarts.ts registers them (the canvas renderer aside): the layout checked is the app's.
    echarts.use([BarChart, CustomChart, GridComponent, LegendComponent, TooltipComponent, LegacyGridContainLabel,
      SVGRenderer])
    const three = [...points, { model: 'c', dataset: 'colours', value: 40, ciLow: 20, ciHigh: 60 }, { model: 'c', dataset: 'phrases', value: 70, ciLow: 60, ciHigh: 80 }]
    for (const width of [390, 1440]) {
      const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width, height: 300 })
      chart.setOption(barOption(three, width < 768) as never)
      type Layout = { x: number; width: number }
      type Element = { childAt: (i: number) => { shape: { x1: number } } }
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const model = (chart as any).getModel()
      const checked: number[] = []
      for (const [barIndex, customIndex] of [[0, 3], [1, 4], [2, 5]]) {
        const bars = model.getSeriesByIndex(barIndex).getData()
        const whiskers = model.getSeriesByIndex(customIndex).getData()
        for (let i = 0; i < whiskers.count(); i++) {
          const category = whiskers.get('x', i) as number // dimension 0 of [category, low, high]
          const bar = bars.getItemLayout(category) as Layout
          const stem = (whiskers.getItemGraphicEl(i) as unknown as Element).childAt(0)
          expect(stem.shape.x1).toBeCloseTo(bar.x + bar.width / 2, 1)
          checked.push(category)
        }
      }
      expect(checked).toHaveLength(4)
      chart.dispose()
    }
  })
})
