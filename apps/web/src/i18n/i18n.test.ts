import { describe, expect, it } from 'vitest'
import en from './en'
import { createAppI18n, initialLocale } from './index'
import zh from './zh'

function keys(object: object, prefix = ''): string[] {
  return Object.entries(object).flatMap(([k, v]) => (v && typeof v === 'object' ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`]))
}

describe('i18n', () => {
  it('Chinese by default when the browser asks for any zh variant, English otherwise', () => {
    expect(initialLocale(null, ['zh-CN', 'en'])).toBe('zh')
    expect(initialLocale(null, ['en-US', 'zh-TW'])).toBe('zh')
    expect(initialLocale(null, ['en-US', 'fr'])).toBe('en')
    expect(initialLocale(null, [])).toBe('en')
  })

  it('a saved choice wins over the browser', () => {
    expect(initialLocale('en', ['zh-CN'])).toBe('en')
    expect(initialLocale('zh', ['en-US'])).toBe('zh')
    expect(initialLocale('klingon', ['en-US'])).toBe('en')
  })

  it('every message compiles (a bare @ or | in text is vue-i18n syntax: it broke the schedule form)', () => {
    const broken: string[] = []
    for (const locale of ['en', 'zh'] as const) {
      const { t } = createAppI18n(locale).global
      for (const key of keys(locale === 'en' ? en : zh)) {
        try { t(key) } catch (e) { broken.push(`${locale}.${key}: ${(e as Error).message.split('\n')[0]}`) }
      }
    }
    expect(broken).toEqual([])
  })

  it('both catalogues have exactly the same keys, none empty', () => {
    expect(keys(zh).sort()).toEqual(keys(en).sort())
    for (const key of keys(zh)) {
      const value = key.split('.').reduce((o: Record<string, unknown>, k) => o[k] as Record<string, unknown>, zh as never)
      expect(String(value).trim(), key).not.toBe('')
    }
  })
})
