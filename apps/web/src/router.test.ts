import { describe, expect, it } from 'vitest'
import { createAppRouter, legacyHashTarget } from './router'

describe('router', () => {
  it('uses clean history URLs, not hash routes', async () => {
    window.history.replaceState(null, '', '/')
    const router = createAppRouter('/')
    expect(router.resolve('/evaluations/12').href).toBe('/evaluations/12')
    expect(router.resolve({ name: 'models' }).href).toBe('/models')

    await router.push('/evaluations/12')
    expect(window.location.pathname).toBe('/evaluations/12')
    expect(window.location.hash).toBe('')
    expect(router.currentRoute.value.name).toBe('evaluation')
  })

  it('opens a deep link from the address bar (reload or pasted link)', async () => {
    window.history.replaceState(null, '', '/evaluations/7')
    const router = createAppRouter('/')
    await router.push(router.options.history.location)
    await router.isReady()
    expect(router.currentRoute.value.name).toBe('evaluation')
    expect(router.currentRoute.value.params.id).toBe('7')
  })

  it('defaults to the build base', () => {
    expect(createAppRouter().options.history.base).toBe('')
  })
})

describe('links from the hash-routing days', () => {
  it('maps /#/path to /path and leaves other hashes alone', () => {
    expect(legacyHashTarget({ hash: '#/evaluations/12' }, '/')).toBe('/evaluations/12')
    expect(legacyHashTarget({ hash: '#/' }, '/')).toBe('/')
    expect(legacyHashTarget({ hash: '#/models?x=1' }, '/ui/')).toBe('/ui/models?x=1')
    expect(legacyHashTarget({ hash: '#section' }, '/')).toBeNull()
    expect(legacyHashTarget({ hash: '' }, '/')).toBeNull()
  })

  it('an old bookmark opens the page it pointed at, under its clean URL', async () => {
    window.history.replaceState(null, '', '/#/evaluations/12')
    const router = createAppRouter('/')
    await router.push(router.options.history.location)
    expect(window.location.pathname).toBe('/evaluations/12')
    expect(window.location.hash).toBe('')
    expect(router.currentRoute.value.name).toBe('evaluation')
  })
})
