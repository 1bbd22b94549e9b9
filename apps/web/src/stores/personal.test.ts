// Issue 9: what one person's pages loaded is gone when they sign out (or the server says 401), so the next person
// signing in at the same browser never sees it.
import { createPinia, setActivePinia } from 'pinia'
import { describe, expect, it } from 'vitest'
import { createApp } from 'vue'
import type { ModelRead } from '@/api/types.gen'
import { personalData } from '@/stores/personal'
import { useRegistryStore } from '@/stores/registry'
import { useSessionStore } from '@/stores/session'

describe('signing out', () => {
  it('empties the data stores and keeps the language', () => {
    const pinia = createPinia()
    pinia.use(personalData)
    createApp({}).use(pinia) // Pinia applies plugins once installed in an app, as main.ts does
    setActivePinia(pinia)
    const registry = useRegistryStore()
    const session = useSessionStore()
    registry.models = [{ id: 7, name: 'alice private model' } as ModelRead]
    expect(registry.models).toHaveLength(1)
    session.forget()
    expect(registry.models).toEqual([])
    expect(session.state).toBe('signed-out')
  })
})
