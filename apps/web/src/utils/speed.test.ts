import { describe, expect, it } from 'vitest'
import { createI18n } from 'vue-i18n'
import en from '@/i18n/en'
import zh from '@/i18n/zh'
import { formatSampleSpeed, formatSeconds, formatSpeed } from './speed'

const translator = (locale: 'en' | 'zh') => {
  const i18n = createI18n({ legacy: false, locale, messages: { en, zh } })
  return (key: string, values?: Record<string, unknown>) => i18n.global.t(key, values ?? {})
}
const t = translator('en')

describe('speed formatting', () => {
  it('writes seconds with two significant digits, milliseconds below 10 ms, one decimal from 10 s', () => {
    expect(formatSeconds(0.523)).toBe('0.52 s')
    expect(formatSeconds(0.9)).toBe('0.9 s')
    expect(formatSeconds(1.25)).toBe('1.3 s')
    expect(formatSeconds(0.004)).toBe('4 ms')
    expect(formatSeconds(12.34)).toBe('12.3 s')
    expect(formatSeconds(null)).toBe('—')
  })

  it('summarises a result as p50 · p95 · tokens per answer', () => {
    const speed = { samples: 8, latency_p50_s: 0.523, latency_p95_s: 0.9, completion_tokens_mean: 119.6, retries: 0 }
    expect(formatSpeed(speed, t)).toBe('p50 0.52 s · p95 0.9 s · 120 tokens/answer')
    expect(formatSpeed(speed, translator('zh'))).toBe('p50 0.52 s · p95 0.9 s · 每个回答 120 tokens')
    // streamed answers: the median time to the first token too
    expect(formatSpeed({ ...speed, ttft_p50_s: 0.081, ttft_p95_s: 0.2 }, t)).toBe('p50 0.52 s · p95 0.9 s · first token p50 0.081 s · 120 tokens/answer')
    expect(formatSpeed({ ...speed, ttft_p50_s: 0.081 }, translator('zh'))).toBe('p50 0.52 s · p95 0.9 s · 首 token p50 0.081 s · 每个回答 120 tokens')
    // an endpoint that sends no usage: latency only
    expect(formatSpeed({ ...speed, completion_tokens_mean: null }, t)).toBe('p50 0.52 s · p95 0.9 s')
    // not recorded (a local model, a run from before): nothing to show
    expect(formatSpeed(null, t)).toBeNull()
    expect(formatSpeed({ samples: 0, latency_p50_s: null }, t)).toBeNull()
  })

  it('writes one sample as latency · prompt → answer tokens · retries', () => {
    expect(formatSampleSpeed({ latency_s: 0.523, prompt_tokens: 101, completion_tokens: 12, retries: 0 }, t))
      .toBe('0.52 s · 101 → 12 tokens')
    expect(formatSampleSpeed({ latency_s: 1.5, prompt_tokens: null, completion_tokens: null, retries: 2 }, t))
      .toBe('1.5 s · retried 2×')
    expect(formatSampleSpeed({ latency_s: 1.5, completion_tokens: 7, retries: 1 }, translator('zh')))
      .toBe('1.5 s · 7 tokens · 重试 1 次')
    expect(formatSampleSpeed({ latency_s: null, prompt_tokens: 3 }, t)).toBeNull()
    // a streamed answer: its time to the first token after the whole answer's
    expect(formatSampleSpeed({ latency_s: 0.523, ttft_s: 0.08, prompt_tokens: 101, completion_tokens: 12 }, t))
      .toBe('0.52 s · first token 0.08 s · 101 → 12 tokens')
    expect(formatSampleSpeed({ latency_s: 0.523, ttft_s: 0.004 }, translator('zh'))).toBe('0.52 s · 首 token 4 ms')
  })
})
