import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { createAppI18n } from './i18n'
import { createAppRouter, installSessionGuard } from './router'
import './services/api' // configures the generated client before any view calls it
import { personalData } from './stores/personal'
import { useSessionStore } from './stores/session'
import './style.css'

const app = createApp(App)
const pinia = createPinia()
pinia.use(personalData)
app.use(pinia)
app.use(createAppI18n())
const router = createAppRouter()
installSessionGuard(router, useSessionStore(pinia))
app.use(router)
// A render error in one view shows a message instead of a blank page.
app.config.errorHandler = (error, _instance, info) => {
  console.error('UI error', info, error)
  window.dispatchEvent(new CustomEvent('aieval:ui-error', { detail: error instanceof Error ? error.message : String(error) }))
}
app.mount('#app')
