// Issue 9 (sign-in, first increment): the UI's side of the contract in docs/SECURITY.md "Accounts and sign-in".
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  createModelApiV1ModelsPost as createModel,
  deleteModelApiV1ModelsModelIdDelete as deleteModel,
  listModelsApiV1ModelsGet as listModels,
  updateModelApiV1ModelsModelIdPatch as updateModel,
  uploadDatasetApiV1DatasetsPost as uploadDataset,
  validateDatasetApiV1DatasetsValidatePost as validateDataset,
} from '@/api/sdk.gen'
import UserMenu from '@/components/UserMenu.vue'
import { LOCALE_STORAGE_KEY } from '@/i18n'
import { createAppRouter, installSessionGuard } from '@/router'
import { call, setCsrfToken } from '@/services/api'
import { safeNextPath, type SessionInfo } from '@/services/session'
import { useSessionStore } from '@/stores/session'
import { mockApi, type Recorded } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'
import SignInView from '@/views/SignInView.vue'

const ALICE: SessionInfo = {
  user: { id: 3, username: 'alice', display_name: 'Alice Liddell', role: 'member', is_local: false },
  auth_enabled: true, csrf_token: 'csrf-alice',
}
const LOCAL: SessionInfo = {
  user: { id: null, username: 'local', display_name: 'Local user', role: 'admin', is_local: true },
  auth_enabled: false, csrf_token: null,
}
const SIGN_IN_FIRST = () => ({ status: 401, json: { detail: 'sign in first', problems: [] } })
const MODELS = () => ({ json: [] })

let pinia: Pinia
beforeEach(() => {
  pinia = createPinia()
  setActivePinia(pinia)
  setCsrfToken(null)
  window.history.replaceState(null, '', '/')
})
afterEach(() => { document.body.innerHTML = '' })


function appRouter() {
  const router = createAppRouter('/')
  installSessionGuard(router, useSessionStore(pinia))
  return router
}

async function signInThroughThePage(router: ReturnType<typeof appRouter>, password = 'right') {
  const wrapper = mountApp(SignInView, {}, 'en', { pinia, plugins: [router] })
  await wrapper.find('[data-test=sign-in-username] input').setValue('alice')
  await wrapper.find('[data-test=sign-in-password] input').setValue(password)
  await wrapper.find('form').trigger('submit')
  await settle()
  return wrapper
}

describe('sign-in redirects', () => {
  it('a 401 at start opens the sign-in page with next=<where the user was going>, and signing in goes back there', async () => {
    let signedIn = false
    const calls = mockApi({
      'GET /api/v1/auth/me': () => (signedIn ? { json: ALICE } : SIGN_IN_FIRST()),
      'POST /api/v1/auth/login': () => { signedIn = true; return { json: ALICE } },
      'GET /api/v1/models': MODELS,
    })
    const router = appRouter()
    await router.push('/models?kind=openai')
    expect(router.currentRoute.value.name).toBe('sign-in')
    expect(router.currentRoute.value.query.next).toBe('/models?kind=openai')

    await signInThroughThePage(router)
    await vi.waitFor(() => expect(router.currentRoute.value.fullPath).toBe('/models?kind=openai'), { timeout: 10_000 })
    const login = calls.find((c) => c.url.pathname === '/api/v1/auth/login')!
    expect(login.body).toEqual({ username: 'alice', password: 'right' })
    expect(login.headers.get('X-CSRF-Token')).toBeNull() // sign-in itself is exempt: there is no session yet
    expect(useSessionStore(pinia).user?.username).toBe('alice')
  })

  it('a 401 in the middle of a session (expired, revoked) forgets the user and sends them to sign in', async () => {
    let expired = false
    mockApi({
      'GET /api/v1/auth/me': () => ({ json: ALICE }),
      'GET /api/v1/models': () => (expired ? SIGN_IN_FIRST() : MODELS()),
    })
    const router = appRouter()
    await router.push('/models')
    expect(router.currentRoute.value.name).toBe('models')
    expired = true
    await call(listModels()).catch(() => undefined)
    await settle()
    expect(router.currentRoute.value.name).toBe('sign-in')
    expect(router.currentRoute.value.query.next).toBe('/models')
    const session = useSessionStore(pinia)
    expect(session.user).toBeNull()
    expect(session.csrfToken).toBeNull()
  })

  it('a wrong password is shown as the server sent it, without leaving the page', async () => {
    mockApi({
      'GET /api/v1/auth/me': SIGN_IN_FIRST,
      'POST /api/v1/auth/login': () => ({ status: 401, json: { detail: 'wrong username or password', problems: [] } }),
    })
    const router = appRouter()
    await router.push('/sign-in?next=/models')
    const wrapper = await signInThroughThePage(router, 'wrong')
    expect(wrapper.find('[data-test=sign-in-error]').text()).toContain('wrong username or password')
    expect(router.currentRoute.value.fullPath).toBe('/sign-in?next=/models')
  })

  it('refuses to send a freshly signed-in user to another site (open redirect)', async () => {
    for (const next of ['//evil.example/x', 'https://evil.example/', '/\\evil.example', 'javascript:alert(1)', '/sign-in', '', '/%0a']) {
      expect(safeNextPath(next), next).toBe(next === '/%0a' ? '/%0a' : '/')
    }
    expect(safeNextPath('/evaluations/5?tab=logs')).toBe('/evaluations/5?tab=logs')
    expect(safeNextPath(['/models', '/x'])).toBe('/models')
    expect(safeNextPath(undefined)).toBe('/')
    expect(safeNextPath('/a\nb')).toBe('/')

    mockApi({ 'GET /api/v1/auth/me': SIGN_IN_FIRST, 'POST /api/v1/auth/login': () => ({ json: ALICE }) })
    const router = appRouter()
    await router.push('/sign-in?next=' + encodeURIComponent('//evil.example/steal'))
    await signInThroughThePage(router)
    await vi.waitFor(() => expect(router.currentRoute.value.fullPath).toBe('/'), { timeout: 10_000 })
  })

  it('with sign-in off nobody is sent to the sign-in page, and /sign-in itself goes home', async () => {
    mockApi({ 'GET /api/v1/auth/me': () => ({ json: LOCAL }) })
    const router = appRouter()
    await router.push('/models')
    expect(router.currentRoute.value.name).toBe('models')
    await router.push('/sign-in?next=/datasets')
    expect(router.currentRoute.value.fullPath).toBe('/datasets')
  })
})

describe('the CSRF token', () => {
  const routes = {
    'GET /api/v1/models': MODELS,
    'POST /api/v1/models': () => ({ status: 201, json: {} }),
    'PATCH /api/v1/models/1': () => ({ json: {} }),
    'DELETE /api/v1/models/1': () => ({ status: 204 }),
    'POST /api/v1/datasets/validate': () => ({ json: {} }),
    'POST /api/v1/datasets': () => ({ status: 201, json: {} }),
  }
  async function sendAll() {
    const file = new File(['{"question":"q","answer":"a"}\n'], 'qa.jsonl')
    const form = { file, name: null, data_type: null, scorer: 'exact', infer_method: 'gen' }
    await call(listModels())
    await call(createModel({ body: { name: 'm', kind: 'openai', base_url: 'http://127.0.0.1:1/v1', model_name: 'x' } as never }))
    await call(updateModel({ path: { model_id: 1 }, body: { name: 'n' } as never }))
    await call(deleteModel({ path: { model_id: 1 } }))
    await call(validateDataset({ body: form }))
    await call(uploadDataset({ body: form }))
  }
  const header = (c: Recorded) => [`${c.method} ${c.url.pathname}`, c.headers.get('X-CSRF-Token')]

  it('goes with every state-changing request, the dataset upload and its dry run included, never with a GET', async () => {
    const calls = mockApi({ ...routes, 'GET /api/v1/auth/me': () => ({ json: ALICE }) })
    await useSessionStore(pinia).load()
    await sendAll()
    expect(calls.slice(1).map(header)).toEqual([
      ['GET /api/v1/models', null],
      ['POST /api/v1/models', 'csrf-alice'],
      ['PATCH /api/v1/models/1', 'csrf-alice'],
      ['DELETE /api/v1/models/1', 'csrf-alice'],
      ['POST /api/v1/datasets/validate', 'csrf-alice'],
      ['POST /api/v1/datasets', 'csrf-alice'],
    ])
  })

  it('is not sent with sign-in off (there is no session)', async () => {
    const calls = mockApi({ ...routes, 'GET /api/v1/auth/me': () => ({ json: LOCAL }) })
    await useSessionStore(pinia).load()
    await sendAll()
    expect(calls.every((c) => !c.headers.has('X-CSRF-Token'))).toBe(true)
  })
})

describe('sign-in page', () => {
  it('a 429 shows the server\'s message and waits the Retry-After before the next try', async () => {
    mockApi({
      'GET /api/v1/auth/me': SIGN_IN_FIRST,
      'POST /api/v1/auth/login': () => ({
        status: 429, headers: { 'Retry-After': '30' },
        json: { detail: 'too many failed sign-ins; try again later', problems: [] },
      }),
    })
    const router = appRouter()
    await router.push('/sign-in')
    const wrapper = await signInThroughThePage(router)
    expect(wrapper.find('[data-test=sign-in-error]').text()).toContain('too many failed sign-ins; try again later')
    expect(wrapper.find('[data-test=sign-in-wait]').text()).toBe('Try again in 30 s')
    expect(wrapper.find('[data-test=sign-in-submit]').attributes('disabled')).toBeDefined()
    wrapper.unmount()
  })

  it('speaks Chinese too, with the language switch on the page', async () => {
    mockApi({ 'GET /api/v1/auth/me': SIGN_IN_FIRST })
    const router = appRouter()
    await router.push('/sign-in')
    localStorage.setItem(LOCALE_STORAGE_KEY, 'zh') // the choice made with the switch, here or in the header
    try {
      const wrapper = mountApp(SignInView, {}, 'en', { pinia, plugins: [router] })
      expect(wrapper.text()).toContain('用户名')
      expect(wrapper.find('[data-test=sign-in-submit]').text()).toBe('登录')
      expect(wrapper.find('[data-test=language-select]').exists()).toBe(true)
    } finally {
      localStorage.removeItem(LOCALE_STORAGE_KEY)
    }
  })
})

describe('header user menu', () => {
  it('with sign-in off: a clear local-user badge and nothing to sign out of', async () => {
    mockApi({ 'GET /api/v1/auth/me': () => ({ json: LOCAL }) })
    await useSessionStore(pinia).load()
    const router = appRouter()
    const en = mountApp(UserMenu, {}, 'en', { pinia, plugins: [router] })
    expect(en.find('[data-test=local-user-badge]').text()).toBe('Local user — no sign-in')
    expect(en.find('[data-test=user-menu]').exists()).toBe(false)
    en.unmount()
    const zh = mountApp(UserMenu, {}, 'zh', { pinia, plugins: [router] })
    expect(zh.find('[data-test=local-user-badge]').text()).toBe('本地用户（未启用登录）')
  })

  it('shows name and role; Sign out revokes the session on the server and clears it here', async () => {
    const calls = mockApi({
      'GET /api/v1/auth/me': () => ({ json: ALICE }),
      'POST /api/v1/auth/logout': () => ({ status: 204 }),
      'GET /api/v1/models': MODELS,
    })
    const router = appRouter()
    await router.push('/models')
    const wrapper = mountApp(UserMenu, {}, 'en', { pinia, plugins: [router] })
    expect(wrapper.find('[data-test=user-name]').text()).toBe('Alice Liddell')
    expect(wrapper.find('[data-test=user-role]').text()).toBe('Member')

    await wrapper.find('[data-test=user-menu]').trigger('click')
    await settle()
    expect(document.querySelector('[data-test=menu-who]')?.textContent).toContain('alice · Member')
    ;(document.querySelector('[data-test=menu-sign-out]') as HTMLElement).click()
    await settle()

    const logout = calls.find((c) => c.url.pathname === '/api/v1/auth/logout')!
    expect(logout.headers.get('X-CSRF-Token')).toBe('csrf-alice')
    const session = useSessionStore(pinia)
    expect([session.user, session.csrfToken, session.mustSignIn]).toEqual([null, null, true])
    expect(router.currentRoute.value.name).toBe('sign-in')
    await call(createModel({ body: {} as never })).catch(() => undefined)
    expect(calls.at(-1)!.headers.has('X-CSRF-Token')).toBe(false)
  })

  it('Change password: the server\'s 422 message is shown; the two new passwords must match', async () => {
    const calls = mockApi({
      'GET /api/v1/auth/me': () => ({ json: ALICE }),
      'POST /api/v1/auth/password': () => ({
        status: 422, json: { detail: 'the new password is too short', problems: ['new_password: at least 12 characters'] },
      }),
    })
    await useSessionStore(pinia).load()
    const wrapper = mountApp(UserMenu, {}, 'en', { pinia, plugins: [appRouter()] })
    await wrapper.find('[data-test=user-menu]').trigger('click')
    await settle()
    ;(document.querySelector('[data-test=menu-change-password]') as HTMLElement).click()
    await settle()
    const fill = (name: string, value: string) => {
      const input = document.querySelector(`[data-test=password-${name}] input`) as HTMLInputElement
      input.value = value
      input.dispatchEvent(new Event('input'))
    }
    const save = () => document.querySelector('[data-test=password-save]') as HTMLButtonElement
    fill('current', 'old-password')
    fill('new', 'short')
    fill('confirm', 'shorter')
    await settle()
    expect(document.querySelector('[data-test=password-dialog]')?.textContent).toContain('The two new passwords differ')
    expect(save().disabled).toBe(true)
    fill('confirm', 'short')
    await settle()
    save().click()
    await settle()
    const sent = calls.find((c) => c.url.pathname === '/api/v1/auth/password')!
    expect(sent.body).toEqual({ current_password: 'old-password', new_password: 'short' })
    expect(sent.headers.get('X-CSRF-Token')).toBe('csrf-alice')
    const error = document.querySelector('[data-test=password-error]')?.textContent
    expect(error).toContain('the new password is too short')
    expect(error).toContain('new_password: at least 12 characters')
  })
})
