// Turns the server's CompareTable (cells keyed by model id, then dataset id) into table rows and chart points.
import type { CompareTable } from '@/api/types.gen'
import type { ScorePoint } from '@/charts/options'

export interface CompareRow {
  rank: number
  modelId: number
  model: string
  average: number | null
  cells: Record<string, { value: number; evaluationId: number } | undefined>
}

export function compareRows(table: CompareTable): CompareRow[] {
  const rows = table.models.map((m) => {
    const id = Number(m.id)
    const cells: CompareRow['cells'] = {}
    for (const d of table.datasets) {
      const cell = table.cells[String(id)]?.[String(d.id)]
      cells[String(d.id)] = cell ? { value: cell.value, evaluationId: cell.evaluation_id } : undefined
    }
    const average = table.averages[String(id)] ?? null
    return { rank: 0, modelId: id, model: String(m.name ?? `#${id}`), average, cells }
  })
  // Highest average first; models without any score sink to the bottom, unranked.
  rows.sort((a, b) => (b.average ?? -Infinity) - (a.average ?? -Infinity))
  rows.forEach((row, i) => { row.rank = row.average == null ? 0 : i + 1 })
  return rows
}

export function comparePoints(table: CompareTable): ScorePoint[] {
  const points: ScorePoint[] = []
  for (const m of table.models) {
    for (const d of table.datasets) {
      const cell = table.cells[String(m.id)]?.[String(d.id)]
      if (cell) points.push({ model: String(m.name), dataset: String(d.name), value: cell.value })
    }
  }
  return points
}
