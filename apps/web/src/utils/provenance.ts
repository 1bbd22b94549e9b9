// What a score rests on, as people read it: `62.5 % ± 27.9 · n = 8 · contains` (the Markdown export's rule: ± is
// half the width of the 95 % interval, "%" only when the value is known to be the share right), and what makes two
// results not comparable ("limit 6 vs all"). Pure functions, unit tested.

export interface ScoreBasis {
  value: number
  n?: number | null
  correct?: number | null
  ci_low?: number | null
  ci_high?: number | null
  scorer?: string | null
}

export interface FingerprintDifference {
  part: string
  value?: string | number | null
  reference?: string | number | null
}

/** Half the width of the 95 % interval, or null when there is none. */
export function halfInterval(score: Pick<ScoreBasis, 'ci_low' | 'ci_high'>): number | null {
  if (score.ci_low == null || score.ci_high == null) return null
  const half = (score.ci_high - score.ci_low) / 2
  return Number.isFinite(half) ? half : null
}

/** The value is the share of right answers, in percent (so it may carry a "%"). */
export function isShare(score: ScoreBasis): boolean {
  const { value, n, correct } = score
  return correct != null && !!n && Math.abs(value - (100 * correct) / n) <= 1e-6 * Math.max(1, Math.abs(value))
}

/** The number itself: four significant digits, as the Markdown export's `.4g` (62.5, 66.67, 0.4523). */
export function formatValue(value: number | null | undefined): string {
  if (value == null || !Number.isFinite(value)) return '—'
  return String(Number(value.toPrecision(4)))
}

/** `62.5 % ± 27.9` — the value and its interval, as much of it as is known. */
export function formatWithInterval(score: ScoreBasis): string {
  const half = halfInterval(score)
  return `${formatValue(score.value)}${isShare(score) ? ' %' : ''}${half == null ? '' : ` ± ${half.toFixed(1)}`}`
}

/** `n = 8 · contains` — what the value rests on; empty when nothing is known (scores stored before it was). */
export function formatBasis(score: ScoreBasis): string {
  return [score.n != null ? `n = ${score.n}` : null, score.scorer || null].filter(Boolean).join(' · ')
}

/** `62.5 % ± 27.9 · n = 8 · contains` */
export function formatScoreLabel(score: ScoreBasis): string {
  return [formatWithInterval(score), formatBasis(score)].filter(Boolean).join(' · ')
}

type Translate = (key: string, values?: Record<string, unknown>) => string
const UNSET_MEANS: Record<string, string> = { limit: 'provenance.unset.limit', max_out_len: 'provenance.unset.max_out_len', config: 'provenance.unset.config' }
const KNOWN_PARTS = ['limit', 'scorer', 'max_out_len', 'data', 'config', 'prompt', 'opencompass']

function shownSetting(part: string, value: string | number | null | undefined, t: Translate): string {
  if (value == null) return t(UNSET_MEANS[part] ?? 'provenance.unset.unknown')
  return String(value)
}

/** "limit 6 vs all", "scorer exact vs contains", or "settings not recorded" — this cell's setting first. */
export function differenceText(difference: FingerprintDifference, t: Translate): string {
  if (difference.part === 'unrecorded') return t('provenance.unrecorded')
  const label = KNOWN_PARTS.includes(difference.part) ? t(`provenance.parts.${difference.part}`) : difference.part
  return t('provenance.differs', {
    part: label,
    value: shownSetting(difference.part, difference.value, t),
    reference: shownSetting(difference.part, difference.reference, t),
  })
}

export interface FingerprintLine { part: string; label: string; value: string }

/** What a score's comparability rests on, one line per fingerprint part in the order people check them ("limit:
 *  all", "scorer: contains", "data: 3f9a…"); parts recorded later (a judge) after those. Empty when not recorded. */
export function fingerprintLines(parts: Record<string, unknown> | null | undefined, t: Translate): FingerprintLine[] {
  if (!parts) return []
  const order = [...KNOWN_PARTS.filter((p) => p in parts), ...Object.keys(parts).filter((p) => !KNOWN_PARTS.includes(p)).sort()]
  return order.map((part) => {
    const raw = parts[part]
    const shown = raw != null && typeof raw === 'object' ? JSON.stringify(raw) : raw as string | number | null | undefined
    return {
      part,
      label: KNOWN_PARTS.includes(part) ? t(`provenance.parts.${part}`) : part,
      value: shownSetting(part, shown, t),
    }
  })
}
