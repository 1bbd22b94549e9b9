import { describe, expect, it } from 'vitest'
import { formatBytes, formatDuration, formatPercent, progressPercent, sampleText } from './format'

describe('format helpers', () => {
  it('formats durations at every scale and rejects nonsense', () => {
    expect(formatDuration(0)).toBe('0s')
    expect(formatDuration(59.4)).toBe('59s')
    expect(formatDuration(61)).toBe('1m 01s')
    expect(formatDuration(3 * 3600 + 5 * 60)).toBe('3h 05m')
    expect(formatDuration(null)).toBe('—')
    expect(formatDuration(-1)).toBe('—')
    expect(formatDuration(Number.NaN)).toBe('—')
  })

  it('clamps progress and shows finished jobs as full', () => {
    expect(progressPercent('running', 0.456)).toBe(45.6)
    expect(progressPercent('running', 1.7)).toBe(100)
    expect(progressPercent('running', -0.2)).toBe(0)
    expect(progressPercent('queued', null)).toBe(0)
    expect(progressPercent('succeeded', 0.5)).toBe(100)
    expect(progressPercent('failed', 0.5)).toBe(50)
  })

  it('formats percentages and sizes', () => {
    expect(formatPercent(0.25)).toBe('25%')
    expect(formatPercent(undefined)).toBe('—')
    expect(formatBytes(512)).toBe('512 B')
    expect(formatBytes(1536)).toBe('1.5 KB')
    expect(formatBytes(5 * 1024 * 1024)).toBe('5.0 MB')
  })

  it('renders chat prompts as role-prefixed lines and other values as JSON', () => {
    expect(sampleText([{ role: 'HUMAN', prompt: 'Hi?' }, { role: 'BOT', prompt: 'Hello' }])).toBe('HUMAN: Hi?\nBOT: Hello')
    expect(sampleText('plain')).toBe('plain')
    expect(sampleText(null)).toBe('')
    expect(sampleText({ a: 1 })).toBe('{\n  "a": 1\n}')
  })
})
