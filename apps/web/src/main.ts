import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { createAppI18n } from './i18n'
import { createAppRouter } from './router'
import './services/api' // configures the generated client before any view calls it
import './style.css'

const app = createApp(App)
app.use(createPinia())
app.use(createAppI18n())
app.use(createAppRouter())
// A render error in one view shows a message instead of a blank page.
app.config.errorHandler = (error, _instance, info) => {
  console.error('UI error', info, error)
  window.dispatchEvent(new CustomEvent('aieval:ui-error', { detail: error instanceof Error ? error.message : String(error) }))
}
app.mount('#app')
