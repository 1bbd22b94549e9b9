// A user's quota as the admin page edits it. The server stores null (the installation's default), 0 (no limit) or a
// value, and takes -1 in an update to mean "back to the default" (UserUpdate in schemas/api.py).
export type LimitMode = 'default' | 'none' | 'custom'
export interface LimitDraft { mode: LimitMode; value: number | null }

export const GIB = 2 ** 30

/** The form's state for a stored limit; `unit` turns the stored number into the one typed (bytes → GiB). */
export function limitDraft(stored: number | null | undefined, unit = 1): LimitDraft {
  if (stored == null) return { mode: 'default', value: null }
  if (stored === 0) return { mode: 'none', value: null }
  return { mode: 'custom', value: Number((stored / unit).toFixed(2)) }
}

/** What to send for this limit, or undefined when it did not change (or a custom value is missing). */
export function limitUpdate(draft: LimitDraft, stored: number | null | undefined, unit = 1): number | undefined {
  let next: number | null
  if (draft.mode === 'default') next = null
  else if (draft.mode === 'none') next = 0
  else if (draft.value == null || !(draft.value > 0)) return undefined
  else next = Math.max(1, Math.round(draft.value * unit))
  if (next === (stored ?? null)) return undefined
  return next === null ? -1 : next
}

/** A limit for a table cell: the mode's word, or the value in the unit with its suffix. */
export function limitText(stored: number | null | undefined, words: { default: string; none: string }, unit = 1, suffix = ''): string {
  if (stored == null) return words.default
  if (stored === 0) return words.none
  const value = stored / unit
  return `${Number.isInteger(value) ? value : value.toFixed(2)}${suffix}`
}
