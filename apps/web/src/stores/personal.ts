import type { PiniaPluginContext } from 'pinia'

// Stores whose data does not belong to the person signed in: kept across a sign-out.
const KEPT = new Set(['session', 'locale'])
const resets = new Map<string, () => void>()

/** Pinia plugin: remembers each other store's first state, so that it can be put back when the person changes. */
export function personalData({ store }: PiniaPluginContext) {
  if (KEPT.has(store.$id)) return
  const initial = JSON.stringify(store.$state)
  resets.set(store.$id, () => store.$patch((state) => Object.assign(state, JSON.parse(initial))))
}

/** Drop what the previous person's pages loaded (lists, details): a next person must never see it. */
export function forgetPersonalData() {
  for (const reset of resets.values()) reset()
}
