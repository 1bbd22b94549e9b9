// Chart options built from score rows; pure functions so they are unit tested without a canvas.

export interface ScorePoint { model: string; dataset: string; value: number }

export function barOption(points: ScorePoint[], narrow = false) {
  const datasets = [...new Set(points.map((p) => p.dataset))]
  const models = [...new Set(points.map((p) => p.model))]
  return {
    tooltip: { trigger: 'axis' },
    legend: { type: 'scroll', top: 0 },
    grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
    xAxis: { type: 'category', data: datasets, axisLabel: { interval: 0, rotate: narrow || datasets.length > 4 ? 30 : 0 } },
    yAxis: { type: 'value', min: 0, max: 100 },
    series: models.map((model) => ({
      name: model,
      type: 'bar',
      barMaxWidth: 40,
      data: datasets.map((d) => points.find((p) => p.model === model && p.dataset === d)?.value ?? null),
      label: { show: true, position: 'top', formatter: ({ value }: { value: number | null }) => (value == null ? '' : value.toFixed(1)) },
    })),
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
