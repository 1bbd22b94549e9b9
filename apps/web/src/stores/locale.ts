import { defineStore } from 'pinia'
import { ref } from 'vue'
import { useI18n } from 'vue-i18n'
import { type AppLocale, initialLocale, LOCALE_STORAGE_KEY, safeStorage } from '@/i18n'

export const useLocaleStore = defineStore('locale', () => {
  const locale = ref<AppLocale>(initialLocale())
  const i18n = useI18n({ useScope: 'global' })
  i18n.locale.value = locale.value
  applyDocumentLang(locale.value)

  function setLocale(next: AppLocale) {
    locale.value = next
    i18n.locale.value = next
    safeStorage()?.setItem(LOCALE_STORAGE_KEY, next)
    applyDocumentLang(next)
  }
  return { locale, setLocale }
})

function applyDocumentLang(locale: AppLocale) {
  if (typeof document !== 'undefined') document.documentElement.lang = locale === 'zh' ? 'zh-CN' : 'en'
}
