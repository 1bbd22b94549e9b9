// Mounts a component the way the app runs it: Pinia, i18n (English) and Naive UI's message provider.
import { mount } from '@vue/test-utils'
import { NMessageProvider } from 'naive-ui'
import { createPinia, type Pinia } from 'pinia'
import { type Component, defineComponent, h, type Plugin } from 'vue'
import { createAppI18n } from '@/i18n'

/** `pinia` lets a test share the store it arranged; `plugins` adds e.g. the app's router. */
export function mountApp(
  component: Component, props: Record<string, unknown> = {}, locale: 'en' | 'zh' = 'en',
  options: { pinia?: Pinia; plugins?: Plugin[] } = {},
) {
  const host = defineComponent({ render: () => h(NMessageProvider, null, { default: () => h(component, props) }) })
  return mount(host, {
    global: { plugins: [options.pinia ?? createPinia(), createAppI18n(locale), ...(options.plugins ?? [])] },
    attachTo: document.body,
  })
}
