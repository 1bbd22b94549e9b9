// How fast an endpoint model answered, as people read it next to the score: `p50 0.52 s · p95 0.9 s · first token
// p50 0.08 s · 120 tokens/answer` for a result, `0.52 s · first token 0.08 s · 101 → 12 tokens` for one sample (the
// first token only where the answers streamed). The numbers come from the server (the speed summary of a score, a
// sample's latency and usage); these only format them. Pure functions, unit tested.

export interface SpeedSummary {
  samples?: number
  latency_p50_s?: number | null
  latency_p95_s?: number | null
  ttft_p50_s?: number | null
  ttft_p95_s?: number | null
  completion_tokens_mean?: number | null
  prompt_tokens_mean?: number | null
  total_tokens?: number | null
  retries?: number
}

export interface SampleSpeed {
  latency_s?: number | null
  ttft_s?: number | null
  prompt_tokens?: number | null
  completion_tokens?: number | null
  retries?: number | null
}

type Translate = (key: string, values?: Record<string, unknown>) => string

/** 0.52 s, 12.3 s, 4 ms: two significant digits below 10 s, one decimal above (the Markdown report's rule). */
export function formatSeconds(value: number | null | undefined): string {
  if (value == null || !Number.isFinite(value)) return '—'
  if (value < 0.01) return `${Math.round(value * 1000)} ms`
  return value < 10 ? `${Number(value.toPrecision(2))} s` : `${value.toFixed(1)} s`
}

/** `p50 0.52 s · p95 0.9 s · first token p50 0.08 s · 120 tokens/answer`; null when the result has no speed recorded. */
export function formatSpeed(speed: SpeedSummary | null | undefined, t: Translate): string | null {
  if (!speed || speed.latency_p50_s == null) return null
  const parts = [`p50 ${formatSeconds(speed.latency_p50_s)}`]
  if (speed.latency_p95_s != null) parts.push(`p95 ${formatSeconds(speed.latency_p95_s)}`)
  if (speed.ttft_p50_s != null) parts.push(t('speed.firstTokenP50', { s: formatSeconds(speed.ttft_p50_s) }))
  if (speed.completion_tokens_mean != null) parts.push(t('speed.tokensPerAnswer', { n: Math.round(speed.completion_tokens_mean) }))
  return parts.join(' · ')
}

/** `0.52 s · first token 0.08 s · 101 → 12 tokens · 1 retry` for one sample; null when nothing was recorded for it. */
export function formatSampleSpeed(sample: SampleSpeed, t: Translate): string | null {
  if (sample.latency_s == null) return null
  const parts = [formatSeconds(sample.latency_s)]
  if (sample.ttft_s != null) parts.push(t('speed.firstToken', { s: formatSeconds(sample.ttft_s) }))
  if (sample.prompt_tokens != null && sample.completion_tokens != null) {
    parts.push(t('speed.tokensInOut', { prompt: sample.prompt_tokens, completion: sample.completion_tokens }))
  } else if (sample.completion_tokens != null) {
    parts.push(t('speed.tokens', { n: sample.completion_tokens }))
  }
  if (sample.retries) parts.push(t('speed.retries', { n: sample.retries }))
  return parts.join(' · ')
}
