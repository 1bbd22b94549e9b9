// Reads an uploaded dataset file in the browser so the user sees its rows (and obvious mistakes) before
// sending it. The server re-validates everything; its "line N: ..." problems are merged into the same rows.

export interface PreviewRow {
  line: number // 1-based line in the file (CSV: the header is line 1)
  values: Record<string, string>
  errors: string[]
}

export interface FilePreview {
  format: 'jsonl' | 'csv'
  columns: string[]
  rows: PreviewRow[]
  totalRows: number
  detectedType: 'mcq' | 'qa' | null
  fileErrors: string[]
}

const MCQ_FIELDS = ['question', 'A', 'B', 'C', 'D', 'answer']
const QA_FIELDS = ['question', 'answer']

/** RFC 4180-style CSV line splitting, enough for previews (quoted fields, doubled quotes, commas). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = []
  let field = ''
  let row: string[] = []
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i++ }
      else if (ch === '"') quoted = false
      else field += ch
    } else if (ch === '"') quoted = true
    else if (ch === ',') { row.push(field); field = '' }
    else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++
      row.push(field); rows.push(row); row = []; field = ''
    } else field += ch
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row) }
  return rows
}

function detectType(columns: string[]): 'mcq' | 'qa' | null {
  if (MCQ_FIELDS.every((c) => columns.includes(c))) return 'mcq'
  if (QA_FIELDS.every((c) => columns.includes(c))) return 'qa'
  return null
}

function checkRow(values: Record<string, string>, type: 'mcq' | 'qa' | null): string[] {
  const errors: string[] = []
  const required = type === 'mcq' ? MCQ_FIELDS : QA_FIELDS
  for (const field of required) {
    if (!(field in values)) errors.push(`missing field "${field}"`)
    else if (String(values[field]).trim() === '') errors.push(`"${field}" is empty`)
  }
  if (type === 'mcq' && values.answer && !['A', 'B', 'C', 'D'].includes(values.answer.trim())) {
    errors.push(`answer "${values.answer}" is not one of A, B, C, D`)
  }
  return errors
}

export function previewText(text: string, filename: string, maxRows = 50): FilePreview {
  const format: 'jsonl' | 'csv' = filename.toLowerCase().endsWith('.csv') ? 'csv' : 'jsonl'
  const fileErrors: string[] = []
  const parsed: { line: number; values: Record<string, string>; errors: string[] }[] = []
  let columns: string[] = []
  const body = text.replace(/^\uFEFF/, '')
  if (format === 'csv') {
    const table = parseCsv(body).filter((r) => r.some((c) => c.trim() !== ''))
    if (!table.length) fileErrors.push('the file is empty')
    else {
      columns = table[0].map((c) => c.trim())
      table.slice(1).forEach((cells, i) => {
        const values: Record<string, string> = {}
        columns.forEach((c, j) => { if (j < cells.length) values[c] = cells[j] })
        const errors = cells.length !== columns.length ? [`${cells.length} cells, header has ${columns.length}`] : []
        parsed.push({ line: i + 2, values, errors })
      })
    }
  } else {
    body.split(/\r?\n/).forEach((raw, i) => {
      if (!raw.trim()) return
      try {
        const object = JSON.parse(raw)
        if (!object || typeof object !== 'object' || Array.isArray(object)) {
          parsed.push({ line: i + 1, values: {}, errors: ['not a JSON object'] })
          return
        }
        const values: Record<string, string> = {}
        for (const [k, v] of Object.entries(object)) values[k] = typeof v === 'string' ? v : JSON.stringify(v)
        for (const k of Object.keys(values)) if (!columns.includes(k)) columns.push(k)
        parsed.push({ line: i + 1, values, errors: [] })
      } catch (error) {
        parsed.push({ line: i + 1, values: {}, errors: [`not valid JSON (${(error as Error).message})`] })
      }
    })
    if (!parsed.length) fileErrors.push('the file is empty')
  }
  const detectedType = detectType(columns)
  if (columns.length && !detectedType) {
    fileErrors.push('columns must include question and answer (MCQ: question, A, B, C, D, answer)')
  }
  for (const row of parsed) if (!row.errors.length) row.errors.push(...checkRow(row.values, detectedType))
  return { format, columns, rows: parsed.slice(0, maxRows), totalRows: parsed.length, detectedType, fileErrors }
}

/** Attach the server's "line N: message" problems to preview rows; the rest stay file-level. */
export function mergeServerProblems(preview: FilePreview, problems: string[]): FilePreview {
  const rows = preview.rows.map((r) => ({ ...r, errors: [] as string[] }))
  const fileErrors: string[] = []
  for (const problem of problems) {
    const match = /^line (\d+):\s*(.*)$/i.exec(problem)
    const row = match ? rows.find((r) => r.line === Number(match[1])) : undefined
    if (row && match) row.errors.push(match[2])
    else fileErrors.push(problem)
  }
  return { ...preview, rows, fileErrors }
}
