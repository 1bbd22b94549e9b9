// Chart options built from score rows; pure functions so they are unit tested without a canvas.
import { formatBasis, formatWithInterval, halfInterval } from '@/utils/provenance'

export interface ScorePoint {
  model: string
  dataset: string
  value: number
  // What the value rests on (optional: charts of older scores have none); error bars need both ends.
  n?: number | null
  correct?: number | null
  ciLow?: number | null
  ciHigh?: number | null
  scorer?: string | null
  comparable?: boolean // false: greyed, its settings differ from the others in its column
}

// Bar geometry, set explicitly so the error bars can be placed on their bar (ECharts' barGrid layout, uniform bars).
const BAR_GAP = 0.3 // between the bars of one category, as a share of a bar's width
const BAR_CATEGORY_GAP = 0.2 // between categories, as a share of the band
const BAR_MAX_WIDTH = 40
const INCOMPARABLE_COLOUR = '#cbd5e1'

/** The x offset of bar `index` of `count` from its category's centre, and its width (px), as ECharts lays it out. */
export function barSlot(bandWidth: number, index: number, count: number): { offset: number; width: number } {
  const auto = Math.max(0, (bandWidth * (1 - BAR_CATEGORY_GAP)) / (count + (count - 1) * BAR_GAP))
  const width = Math.min(auto, BAR_MAX_WIDTH)
  const total = count * width + (count - 1) * BAR_GAP * width
  return { offset: -total / 2 + index * width * (1 + BAR_GAP) + width / 2, width }
}

interface ErrorBarApi {
  value: (dimension: number) => number
  coord: (point: number[]) => number[]
  size: (point: number[]) => number[]
}

/** A custom series drawing one whisker per bar of `modelIndex`: its 95 % interval. */
function errorBarSeries(model: string, modelIndex: number, modelCount: number, whiskers: number[][]) {
  return {
    name: model,
    type: 'custom',
    z: 3,
    silent: true,
    tooltip: { show: false },
    encode: { x: 0, y: [1, 2] },
    data: whiskers,
    renderItem: (_params: unknown, api: ErrorBarApi) => {
      const category = api.value(0)
      const low = api.coord([category, api.value(1)])
      const high = api.coord([category, api.value(2)])
      const { offset, width } = barSlot(api.size([1, 0])[0], modelIndex, modelCount)
      const x = low[0] + offset
      const cap = Math.max(3, Math.min(8, width / 4))
      const style = { stroke: '#1f2937', lineWidth: 1.2 }
      return {
        type: 'group',
        children: [
          { type: 'line', shape: { x1: x, y1: low[1], x2: x, y2: high[1] }, style },
          { type: 'line', shape: { x1: x - cap, y1: high[1], x2: x + cap, y2: high[1] }, style },
          { type: 'line', shape: { x1: x - cap, y1: low[1], x2: x + cap, y2: low[1] }, style },
        ],
      }
    },
  }
}

function pointTooltip(point: ScorePoint): string {
  const basis = formatBasis({ value: point.value, n: point.n, scorer: point.scorer })
  const text = formatWithInterval({ value: point.value, n: point.n, correct: point.correct, ci_low: point.ciLow, ci_high: point.ciHigh })
  return `${point.comparable === false ? '≠ ' : ''}${text}${basis ? ` · ${basis}` : ''}`
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

export function barOption(points: ScorePoint[], narrow = false) {
  const datasets = [...new Set(points.map((p) => p.dataset))]
  const models = [...new Set(points.map((p) => p.model))]
  const find = (model: string, dataset: string) => points.find((p) => p.model === model && p.dataset === dataset)
  const bars = models.map((model) => ({
    name: model,
    type: 'bar',
    barMaxWidth: BAR_MAX_WIDTH,
    barGap: `${BAR_GAP * 100}%`,
    barCategoryGap: `${BAR_CATEGORY_GAP * 100}%`,
    data: datasets.map((d) => {
      const point = find(model, d)
      if (!point) return null
      return point.comparable === false
        ? { value: point.value, point, itemStyle: { color: INCOMPARABLE_COLOUR } }
        : { value: point.value, point }
    }),
    label: {
      show: true, position: 'top',
      formatter: ({ value, data }: { value: number | null; data?: { point?: ScorePoint } | null }) =>
        value == null ? '' : `${data?.point?.comparable === false ? '≠' : ''}${value.toFixed(1)}`,
    },
  }))
  const whiskers = models.map((model, modelIndex) => errorBarSeries(model, modelIndex, models.length,
    datasets.flatMap((d, i) => {
      const point = find(model, d)
      return point && halfInterval({ ci_low: point.ciLow, ci_high: point.ciHigh }) != null ? [[i, point.ciLow as number, point.ciHigh as number]] : []
    })))
  return {
    tooltip: {
      trigger: 'axis',
      formatter: (items: { seriesType?: string; seriesName?: string; marker?: string; data?: { point?: ScorePoint } | null; axisValueLabel?: string }[]) => {
        const rows = items.filter((item) => item.seriesType === 'bar' && item.data?.point)
          .map((item) => `${item.marker ?? ''}${escapeHtml(item.seriesName ?? '')}: ${escapeHtml(pointTooltip(item.data!.point!))}`)
        return [escapeHtml(items[0]?.axisValueLabel ?? ''), ...rows].join('<br/>')
      },
    },
    // Not toggleable: hiding a model would move the bars but not their error bars.
    legend: { type: 'scroll', top: 0, data: models, selectedMode: false },
    grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
    xAxis: { type: 'category', data: datasets, axisLabel: { interval: 0, rotate: narrow || datasets.length > 4 ? 30 : 0 } },
    yAxis: { type: 'value', min: 0, max: 100 },
    series: [...bars, ...whiskers],
  }
}

/** A radar needs at least three axes to be a shape; with fewer datasets callers show only the bar chart. */
export function radarOption(points: ScorePoint[]) {
  const datasets = [...new Set(points.map((p) => p.dataset))]
  const models = [...new Set(points.map((p) => p.model))]
  return {
    tooltip: {},
    legend: { type: 'scroll', bottom: 0 },
    radar: { indicator: datasets.map((name) => ({ name, max: 100 })), radius: '62%' },
    series: [{
      type: 'radar',
      data: models.map((model) => ({
        name: model,
        value: datasets.map((d) => points.find((p) => p.model === model && p.dataset === d)?.value ?? 0),
      })),
    }],
  }
}
