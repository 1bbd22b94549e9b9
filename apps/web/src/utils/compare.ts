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
  // The server's 95 % rank range (bootstrap over the samples); null when it gave none (one model, no average)
  rankLow: number | null
  rankHigh: number | null
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
    const range = table.rank_intervals?.[String(id)]
    return { rank: 0, rankLow: range?.low ?? null, rankHigh: range?.high ?? null, modelId: id, model: String(m.name ?? `#${id}`), average, cells }
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

/** The rank a row is shown with: its plausible range when the server gave one ("1–2", or "1" when certain), else
 *  the plain place by average ("—" for a model without an average). */
export function rankLabel(row: Pick<CompareRow, 'rank' | 'rankLow' | 'rankHigh'>): string {
  if (row.rankLow != null && row.rankHigh != null) return row.rankLow === row.rankHigh ? String(row.rankLow) : `${row.rankLow}–${row.rankHigh}`
  return row.rank ? String(row.rank) : '—'
}

/** Groups of models (in table order) whose rank ranges overlap, chained: A–B and B–C make one group, since the
 *  order within it is not settled by the data. Only groups of two or more. */
export function overlappingRanks(rows: CompareRow[]): string[][] {
  const ranged = rows.filter((r) => r.rankLow != null && r.rankHigh != null)
    .sort((a, b) => (a.rankLow! - b.rankLow!) || (a.rankHigh! - b.rankHigh!))
  const groups: CompareRow[][] = []
  let reach = -Infinity
  for (const row of ranged) {
    const last = groups.at(-1)
    if (last && row.rankLow! <= reach) {
      last.push(row)
      reach = Math.max(reach, row.rankHigh!)
    } else {
      groups.push([row])
      reach = row.rankHigh!
    }
  }
  return groups.filter((g) => g.length > 1).map((g) => g.map((r) => r.model))
}
