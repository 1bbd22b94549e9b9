// Mounts a component the way the app runs it: Pinia, i18n (English) and Naive UI's message provider.
import { flushPromises, mount } from '@vue/test-utils'
import { NMessageProvider } from 'naive-ui'
import { createPinia, type Pinia } from 'pinia'
import { type Component, defineComponent, h, type Plugin } from 'vue'
import { createAppI18n } from '@/i18n'
import { createAppRouter } from '@/router'
import { useSessionStore } from '@/stores/session'

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

/** Let pending fetches, their promise chains and the timers they start run (a few rounds: a view that loads one thing
 * and then another needs each round). */
export async function settle(rounds = 5) {
  for (let i = 0; i < rounds; i++) {
    await flushPromises()
    await new Promise((r) => setTimeout(r, 0))
  }
}

/** What GET /auth/me answers for Alice signed in with `role` (sign-in on). */
export function signedInAs(role: 'admin' | 'member' | 'viewer' = 'member') {
  return { json: { user: { id: 3, username: 'alice', display_name: 'Alice', role, is_local: false }, auth_enabled: true,
    csrf_token: 'csrf' } }
}

/** A routed view as the app shows it at `path`: the session store has asked who is signed in (mock GET /auth/me
 * first), the app's router is at `path`, and the first loads have settled. */
export async function mountView(
  component: Component, path: string, props: Record<string, unknown>, locale: 'en' | 'zh', pinia: Pinia,
) {
  await useSessionStore(pinia).load()
  const router = createAppRouter('/')
  await router.push(path)
  const wrapper = mountApp(component, props, locale, { pinia, plugins: [router] })
  await settle()
  return { wrapper, router }
}
