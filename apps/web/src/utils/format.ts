// Small, pure formatting helpers (unit tested): durations, ETAs, percentages, sizes.
import type { EvaluationStatus } from '@/api/types.gen'

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return '—'
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`
  const h = Math.floor(m / 60)
  return `${h}h ${String(m % 60).padStart(2, '0')}m`
}

export function formatPercent(fraction: number | null | undefined, digits = 0): string {
  if (fraction == null || !Number.isFinite(fraction)) return '—'
  return `${(fraction * 100).toFixed(digits)}%`
}

export function formatScore(value: number | null | undefined): string {
  if (value == null || !Number.isFinite(value)) return '—'
  return value.toFixed(2)
}

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes == null) return '—'
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

export function formatDate(iso: string | null | undefined, locale: string): string {
  if (!iso) return '—'
  const date = new Date(iso)
  if (Number.isNaN(date.getTime())) return '—'
  return date.toLocaleString(locale === 'zh' ? 'zh-CN' : 'en-GB', {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  })
}

/** Whole-job progress in 0..100 for a progress bar; finished jobs are full whatever the last event said. */
export function progressPercent(status: EvaluationStatus, fraction: number | null | undefined): number {
  if (status === 'succeeded') return 100
  if (fraction == null || !Number.isFinite(fraction)) return 0
  return Math.max(0, Math.min(100, Math.round(fraction * 1000) / 10))
}

/** Anything a sample field may hold (strings, chat message lists, numbers) as readable text. */
export function sampleText(value: unknown): string {
  if (value == null) return ''
  if (typeof value === 'string') return value
  if (Array.isArray(value) && value.every((m) => m && typeof m === 'object' && 'prompt' in m)) {
    return value.map((m: { role?: string; prompt?: unknown }) => `${m.role ?? ''}: ${String(m.prompt)}`).join('\n')
  }
  return JSON.stringify(value, null, 2)
}
