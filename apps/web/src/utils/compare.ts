// Turns the server's CompareTable (cells keyed by model id, then dataset id) into table rows and chart points.
import type { CompareCell, CompareDifference, CompareTable } from '@/api/types.gen'
import type { ScorePoint } from '@/charts/options'

export interface CompareRowCell {
  value: number
  evaluationId: number
  n: number | null
  correct: number | null
  ciLow: number | null
  ciHigh: number | null
  scorer: string | null
  // false: its settings differ from the results this column compares (what differs in `differences`)
  comparable: boolean
  differences: CompareDifference[]
}

export interface CompareRow {
  rank: number
  modelId: number
  model: string
  average: number | null
  cells: Record<string, CompareRowCell | undefined>
}

function rowCell(cell: CompareCell): CompareRowCell {
  return {
    value: cell.value, evaluationId: cell.evaluation_id, n: cell.n ?? null, correct: cell.correct ?? null,
    ciLow: cell.ci_low ?? null, ciHigh: cell.ci_high ?? null, scorer: cell.scorer ?? null,
    comparable: cell.comparable ?? true, differences: cell.differences ?? [],
  }
}

export function compareRows(table: CompareTable): CompareRow[] {
  const rows = table.models.map((m) => {
    const id = Number(m.id)
    const cells: CompareRow['cells'] = {}
    for (const d of table.datasets) {
      const cell = table.cells[String(id)]?.[String(d.id)]
      cells[String(d.id)] = cell ? rowCell(cell) : undefined
    }
    const average = table.averages[String(id)] ?? null
    return { rank: 0, modelId: id, model: String(m.name ?? `#${id}`), average, cells }
  })
  // Highest average first; models without an average sink to the bottom, unranked.
  rows.sort((a, b) => (b.average ?? -Infinity) - (a.average ?? -Infinity))
  rows.forEach((row, i) => { row.rank = row.average == null ? 0 : i + 1 })
  return rows
}

export function comparePoints(table: CompareTable): ScorePoint[] {
  const points: ScorePoint[] = []
  for (const m of table.models) {
    for (const d of table.datasets) {
      const cell = table.cells[String(m.id)]?.[String(d.id)]
      if (cell) {
        points.push({
          model: String(m.name), dataset: String(d.name), value: cell.value, n: cell.n, correct: cell.correct,
          ciLow: cell.ci_low, ciHigh: cell.ci_high, scorer: cell.scorer, comparable: cell.comparable ?? true,
        })
      }
    }
  }
  return points
}

/** The datasets the averages are over (the server's choice: every model has them with the same settings). */
export function averagedDatasets(table: CompareTable): { id: number; name: string }[] {
  const averaged = new Set(table.average_dataset_ids ?? [])
  return table.datasets.filter((d) => averaged.has(Number(d.id))).map((d) => ({ id: Number(d.id), name: String(d.name) }))
}
