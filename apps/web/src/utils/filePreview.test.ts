import { describe, expect, it } from 'vitest'
import { mergeServerProblems, parseCsv, previewText } from './filePreview'

describe('dataset file preview', () => {
  it('parses quoted CSV fields with commas, quotes and newlines', () => {
    expect(parseCsv('a,b\n"x, y","say ""hi"""\n"multi\nline",z\n')).toEqual([
      ['a', 'b'], ['x, y', 'say "hi"'], ['multi\nline', 'z'],
    ])
  })

  it('detects MCQ from CSV columns and flags a bad answer on its file line', () => {
    const preview = previewText('question,A,B,C,D,answer\nq1,a,b,c,d,A\nq2,a,b,c,d,E\n', 'mcq.csv')
    expect(preview.format).toBe('csv')
    expect(preview.detectedType).toBe('mcq')
    expect(preview.totalRows).toBe(2)
    expect(preview.rows[0]).toMatchObject({ line: 2, errors: [] })
    expect(preview.rows[1].line).toBe(3)
    expect(preview.rows[1].errors.join()).toContain('not one of A, B, C, D')
  })

  it('reports invalid JSON lines and missing fields for JSONL', () => {
    const preview = previewText('{"question":"1+1?","answer":"2"}\nnot json\n\n{"question":"x","answer":""}\n', 'qa.jsonl')
    expect(preview.detectedType).toBe('qa')
    expect(preview.rows.map((r) => r.line)).toEqual([1, 2, 4])
    expect(preview.rows[1].errors[0]).toMatch(/not valid JSON/)
    expect(preview.rows[2].errors).toEqual(['"answer" is empty'])
  })

  it('refuses files without the required columns and empty files', () => {
    expect(previewText('{"prompt":"x"}\n', 'x.jsonl').fileErrors[0]).toMatch(/question and answer/)
    expect(previewText('', 'x.jsonl').fileErrors).toEqual(['the file is empty'])
  })

  it('puts the server\'s "line N:" problems on the matching rows and keeps the rest file-level', () => {
    const preview = previewText('question,answer\nq1,a1\nq2,a2\n', 'qa.csv')
    const merged = mergeServerProblems(preview, ["line 3: 'answer' is too long", 'file too large'])
    expect(merged.rows[0].errors).toEqual([])
    expect(merged.rows[1].errors).toEqual(["'answer' is too long"])
    expect(merged.fileErrors).toEqual(['file too large'])
  })
})
