// Mounts a component the way the app runs it: Pinia, i18n (English) and Naive UI's message provider.
import { mount } from '@vue/test-utils'
import { NMessageProvider } from 'naive-ui'
import { createPinia } from 'pinia'
import { type Component, defineComponent, h } from 'vue'
import { createAppI18n } from '@/i18n'

export function mountApp(component: Component, props: Record<string, unknown> = {}, locale: 'en' | 'zh' = 'en') {
  const host = defineComponent({ render: () => h(NMessageProvider, null, { default: () => h(component, props) }) })
  return mount(host, { global: { plugins: [createPinia(), createAppI18n(locale)] }, attachTo: document.body })
}
