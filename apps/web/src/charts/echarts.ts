// ECharts piece by piece: only what the score charts use, so the chart chunk stays small.
import { BarChart, CustomChart, RadarChart } from 'echarts/charts'
import { GridComponent, LegendComponent, RadarComponent, TooltipComponent } from 'echarts/components'
import * as echarts from 'echarts/core'
import { LegacyGridContainLabel } from 'echarts/features'
import { CanvasRenderer } from 'echarts/renderers'

// CustomChart draws the error bars (charts/options.ts errorBarSeries); LegacyGridContainLabel makes the bar chart's
// grid.containLabel (room for long model names) work in ECharts 6, which otherwise ignores it with a warning.
echarts.use([BarChart, CustomChart, RadarChart, GridComponent, LegendComponent, RadarComponent, TooltipComponent,
  LegacyGridContainLabel, CanvasRenderer])

export { echarts }
export type { EChartsCoreOption } from 'echarts/core'
