import { describe, expect, it } from 'vitest'
import { GIB, limitDraft, limitText, limitUpdate } from './limits'

describe('user quota drafts', () => {
  it('reads null as the default, 0 as no limit, anything else as a custom value in the unit', () => {
    expect(limitDraft(null)).toEqual({ mode: 'default', value: null })
    expect(limitDraft(0)).toEqual({ mode: 'none', value: null })
    expect(limitDraft(5)).toEqual({ mode: 'custom', value: 5 })
    expect(limitDraft(3 * GIB / 2, GIB)).toEqual({ mode: 'custom', value: 1.5 })
  })

  it('sends -1 to go back to the default, 0 for no limit, the value in the server unit, nothing when unchanged', () => {
    expect(limitUpdate({ mode: 'default', value: null }, 7)).toBe(-1)
    expect(limitUpdate({ mode: 'default', value: null }, null)).toBeUndefined()
    expect(limitUpdate({ mode: 'none', value: null }, null)).toBe(0)
    expect(limitUpdate({ mode: 'none', value: null }, 0)).toBeUndefined()
    expect(limitUpdate({ mode: 'custom', value: 3 }, null)).toBe(3)
    expect(limitUpdate({ mode: 'custom', value: 3 }, 3)).toBeUndefined()
    expect(limitUpdate({ mode: 'custom', value: 2.5 }, null, GIB)).toBe(2.5 * GIB)
    expect(limitUpdate({ mode: 'custom', value: null }, null)).toBeUndefined()
    expect(limitUpdate({ mode: 'custom', value: 0 }, 4)).toBeUndefined()
  })

  it('writes a limit for a table cell', () => {
    const words = { default: 'Default', none: 'No limit' }
    expect(limitText(null, words)).toBe('Default')
    expect(limitText(0, words)).toBe('No limit')
    expect(limitText(20, words)).toBe('20')
    expect(limitText(10 * GIB, words, GIB, ' GiB')).toBe('10 GiB')
    expect(limitText(1.25 * GIB, words, GIB, ' GiB')).toBe('1.25 GiB')
  })
})
