// Display helpers for the upload dialog's preview. What a file must look like is decided by the server alone:
// the dialog sends the file to POST /api/v1/datasets/validate (the upload's dry run) and shows its answer.
import type { DatasetValidation } from '@/api/types.gen'

/** A cell as text: strings as they are, anything else (numbers, lists) as JSON. */
export function cellText(value: unknown): string {
  if (value == null) return ''
  return typeof value === 'string' ? value : JSON.stringify(value)
}

/** The preview table's columns: the server's columns, else every key of the rows it could read. */
export function previewColumns(validation: Pick<DatasetValidation, 'columns' | 'preview'>): string[] {
  if (validation.columns.length) return validation.columns
  return [...new Set(validation.preview.flatMap((row) => Object.keys(row)))]
}
