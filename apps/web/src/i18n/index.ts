import { createI18n } from 'vue-i18n'
import en from './en'
import zh from './zh'

export type AppLocale = 'zh' | 'en'
export const LOCALE_STORAGE_KEY = 'aieval.locale'

/** The user's saved choice wins; otherwise Chinese when the browser asks for any zh variant, else English. */
export function initialLocale(
  saved: string | null = safeStorage()?.getItem(LOCALE_STORAGE_KEY) ?? null,
  languages: readonly string[] = typeof navigator !== 'undefined' ? navigator.languages ?? [navigator.language] : [],
): AppLocale {
  if (saved === 'zh' || saved === 'en') return saved
  return languages.some((l) => l?.toLowerCase().startsWith('zh')) ? 'zh' : 'en'
}

export function safeStorage(): Storage | null {
  try { return typeof localStorage !== 'undefined' ? localStorage : null } catch { return null }
}

export function createAppI18n(locale: AppLocale = initialLocale()) {
  return createI18n({ legacy: false, locale, fallbackLocale: 'en', messages: { en, zh } })
}
