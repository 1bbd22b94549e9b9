// Issue 9, second increment: the UI's side of ownership, visibility, roles, tokens, accounts and the audit log.
// What a page offers follows the server's answers (can_change per row, the role from /auth/me), never a local copy
// of the access rules.
import { NDialogProvider } from 'naive-ui'
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { type Component, defineComponent, h } from 'vue'
import type { DatasetRead, ModelRead, TokenRead, UserRead } from '@/api/types.gen'
import UserMenu from '@/components/UserMenu.vue'
import { createAppRouter, installSessionGuard } from '@/router'
import { setCsrfToken } from '@/services/api'
import type { SessionInfo } from '@/services/session'
import { useSessionStore } from '@/stores/session'
import { mockApi, summary } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'
import AdminUsersView from '@/views/AdminUsersView.vue'
import AuditView from '@/views/AuditView.vue'
import DatasetsView from '@/views/DatasetsView.vue'
import EvaluationsView from '@/views/EvaluationsView.vue'
import ModelsView from '@/views/ModelsView.vue'
import TokensView from '@/views/TokensView.vue'

const ALICE = { id: 3, username: 'alice', display_name: 'Alice' }
const BOB = { id: 4, username: 'bob', display_name: 'Bob' }
function me(role: 'admin' | 'member' | 'viewer'): SessionInfo {
  return { user: { ...ALICE, role, is_local: false }, auth_enabled: true, csrf_token: 'csrf' }
}
function model(id: number, overrides: Partial<ModelRead> = {}): ModelRead {
  return {
    id, name: `model ${id}`, kind: 'openai', settings: { base_url: 'http://127.0.0.1:8000/v1', model: 'm' }, has_api_key: false,
    api_key_hint: null, is_demo: false, max_concurrency: null, owner: ALICE, visibility: 'private', can_change: true,
    created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z', ...overrides,
  }
}
function dataset(id: number, overrides: Partial<DatasetRead> = {}): DatasetRead {
  return {
    id, name: `dataset ${id}`, kind: 'custom', data_type: 'qa', builtin_config: null, rows: 3, size_bytes: 100, scorer: 'exact',
    infer_method: 'gen', available: true, is_demo: false, owner: ALICE, visibility: 'private', can_change: true,
    created_at: '2026-11-24T00:00:00Z', ...overrides,
  } as DatasetRead
}

let pinia: Pinia
beforeEach(() => {
  pinia = createPinia()
  setActivePinia(pinia)
  setCsrfToken(null)
  window.history.replaceState(null, '', '/')
})
afterEach(() => { document.body.innerHTML = '' })

/** The evaluations list confirms with Naive's dialog, which the app provides around every page. */
function withDialogs(page: Component) {
  return defineComponent({ render: () => h(NDialogProvider, null, { default: () => h(page) }) })
}

async function signedInAs(role: 'admin' | 'member' | 'viewer', routes: Parameters<typeof mockApi>[0] = {}) {
  const calls = mockApi({ 'GET /api/v1/auth/me': () => ({ json: me(role) }), ...routes })
  await useSessionStore(pinia).load()
  const router = createAppRouter('/')
  installSessionGuard(router, useSessionStore(pinia))
  return { calls, router }
}

describe('ownership on the lists', () => {
  const twoModels = () => ({ json: [model(1), model(2, { owner: BOB, visibility: 'shared', can_change: false })] })

  it('models: owner and visibility shown; Edit and Delete only where the server says can_change; "Mine" asks the server', async () => {
    const { calls, router } = await signedInAs('member', { 'GET /api/v1/models': twoModels, 'GET /api/v1/datasets': () => ({ json: [] }) })
    const wrapper = mountApp(ModelsView, {}, 'en', { pinia, plugins: [router] })
    await settle()
    const row = (id: number) => wrapper.find(`[data-model-id="${id}"]`)
    expect(row(1).find('[data-test=owner-name]').text()).toBe('Alice')
    expect(row(1).find('[data-test=visibility-private]').exists()).toBe(true)
    expect(row(2).find('[data-test=owner-name]').text()).toBe('Bob')
    expect(row(2).find('[data-test=visibility-shared]').text()).toBe('Shared')
    expect(row(1).find('[data-test=edit-model]').exists()).toBe(true)
    expect(row(1).find('[data-test=delete-model]').exists()).toBe(true)
    expect(row(2).find('[data-test=edit-model]').exists()).toBe(false)
    expect(row(2).find('[data-test=delete-model]').exists()).toBe(false)
    expect(wrapper.find('[data-test=add-model]').exists()).toBe(true)

    expect(calls.find((c) => c.url.pathname === '/api/v1/models')!.url.searchParams.has('scope')).toBe(false)
    await wrapper.find('[data-test=scope-mine] input').setValue(true)
    await settle()
    expect(calls.filter((c) => c.url.pathname === '/api/v1/models').at(-1)!.url.searchParams.get('scope')).toBe('mine')
  })

  it('a viewer sees no "Register model", no upload, no "Register" of a built-in, no "New evaluation"', async () => {
    const { router } = await signedInAs('viewer', {
      'GET /api/v1/models': twoModels,
      'GET /api/v1/datasets': () => ({ json: [dataset(5, { owner: null, visibility: 'shared', can_change: false })] }),
      'GET /api/v1/evaluations': () => ({ json: { items: [summary(7, { status: 'failed', can_change: false, owner: BOB })], total: 1, page: 1, page_size: 20 } }),
    })
    const models = mountApp(ModelsView, {}, 'en', { pinia, plugins: [router] })
    await settle()
    expect(models.find('[data-test=add-model]').exists()).toBe(false)
    models.unmount()

    const datasets = mountApp(DatasetsView, {}, 'en', { pinia, plugins: [router] })
    await settle()
    expect(datasets.find('[data-test=dataset-upload-card]').exists()).toBe(false)
    expect(datasets.find('[data-test=dataset-edit]').exists()).toBe(false)
    expect(datasets.find('[data-test=dataset-delete]').exists()).toBe(false)
    expect(datasets.find('[data-test=owner-name]').text()).toBe('Installation')
    datasets.unmount()

    const evaluations = mountApp(withDialogs(EvaluationsView), {}, 'en', { pinia, plugins: [router] })
    await settle()
    expect(evaluations.find('[data-test=new-evaluation]').exists()).toBe(false)
    // A failed evaluation offers Retry and Delete, but not to someone who may not change it.
    expect(evaluations.find('[data-evaluation-id="7"]').exists()).toBe(true)
    expect(evaluations.find('[data-test=retry]').exists()).toBe(false)
    expect(evaluations.find('[data-test=delete]').exists()).toBe(false)
    evaluations.unmount()

    // The wizard's address, typed by hand, leads back to the list.
    await router.push('/evaluations/new')
    expect(router.currentRoute.value.name).toBe('evaluations')
  })

  it('evaluations: the owner may retry and delete; "Mine" goes to the server as scope=mine', async () => {
    const { calls, router } = await signedInAs('member', {
      'GET /api/v1/models': () => ({ json: [] }), 'GET /api/v1/datasets': () => ({ json: [] }),
      'GET /api/v1/evaluations': () => ({ json: { items: [summary(7, { status: 'failed', owner: ALICE, visibility: 'private' })], total: 1, page: 1, page_size: 20 } }),
    })
    const wrapper = mountApp(withDialogs(EvaluationsView), {}, 'en', { pinia, plugins: [router] })
    await settle()
    expect(wrapper.find('[data-test=new-evaluation]').exists()).toBe(true)
    expect(wrapper.find('[data-test=retry]').exists()).toBe(true)
    expect(wrapper.find('[data-test=delete]').exists()).toBe(true)
    await wrapper.find('[data-test=scope-mine] input').setValue(true)
    await settle()
    const lists = calls.filter((c) => c.url.pathname === '/api/v1/evaluations')
    expect(lists[0].url.searchParams.has('scope')).toBe(false)
    expect(lists.at(-1)!.url.searchParams.get('scope')).toBe('mine')
    wrapper.unmount()
  })
})

describe('user menu and admin pages', () => {
  async function menuEntries(role: 'admin' | 'member') {
    pinia = createPinia()
    setActivePinia(pinia)
    const { router } = await signedInAs(role)
    const wrapper = mountApp(UserMenu, {}, 'en', { pinia, plugins: [router] })
    await wrapper.find('[data-test=user-menu]').trigger('click')
    await settle()
    const entries = ['tokens', 'users', 'audit'].filter((k) => document.querySelector(`[data-test=menu-${k}]`))
    return { entries, router }
  }

  it('everyone signed in gets the tokens page; only administrators the users and audit pages', async () => {
    expect((await menuEntries('member')).entries).toEqual(['tokens'])
    document.body.innerHTML = ''
    const admin = await menuEntries('admin')
    expect(admin.entries).toEqual(['tokens', 'users', 'audit'])
    ;(document.querySelector('[data-test=menu-audit]') as HTMLElement).click()
    await vi.waitFor(() => expect(admin.router.currentRoute.value.name).toBe('admin-audit'))
  })

  it('a member who types an admin address lands on the dashboard', async () => {
    const { router } = await signedInAs('member')
    await router.push('/admin/users')
    expect(router.currentRoute.value.name).toBe('dashboard')
    await router.push('/tokens')
    expect(router.currentRoute.value.name).toBe('tokens')
  })
})

describe('tokens page', () => {
  const token: TokenRead = {
    id: 9, name: 'ci', prefix: 'aiev_Ab12', scope: 'run', created_at: '2026-11-24T00:00:00Z', expires_at: null,
    last_used_at: null, revoked_at: null, active: true,
  }

  it('creates a token, shows it once with a warning and a copy button, and forgets it when closed', async () => {
    let listed: unknown[] = []
    const { calls, router } = await signedInAs('member', {
      'GET /api/v1/tokens': () => ({ json: listed }),
      'POST /api/v1/tokens': () => { listed = [token]; return { status: 201, json: { ...token, token: 'aiev_Ab12-the-secret' } } },
    })
    const writeText = vi.fn(async () => undefined)
    Object.defineProperty(navigator, 'clipboard', { value: { writeText }, configurable: true })
    const wrapper = mountApp(TokensView, {}, 'en', { pinia, plugins: [router] })
    await settle()
    await wrapper.find('[data-test=token-name] input').setValue('ci')
    await wrapper.find('[data-test=token-scope-run] input').setValue(true)
    await wrapper.find('[data-test=token-create]').trigger('click')
    await settle()
    const post = calls.find((c) => c.method === 'POST')!
    expect(post.body).toEqual({ name: 'ci', scope: 'run', expires_in_days: 90 })
    expect(post.headers.get('X-CSRF-Token')).toBe('csrf')
    const value = () => document.querySelector('[data-test=token-value]') as HTMLTextAreaElement | null
    expect(value()!.value).toBe('aiev_Ab12-the-secret')
    expect(document.querySelector('[data-test=token-warning]')!.textContent).toContain('shown only this once')
    ;(document.querySelector('[data-test=token-copy]') as HTMLElement).click()
    await settle()
    expect(writeText).toHaveBeenCalledWith('aiev_Ab12-the-secret')
    // The list shows the new token by its prefix only.
    expect(wrapper.find('[data-token-id="9"]').text()).toContain('aiev_Ab12…')
    expect(wrapper.find('[data-token-id="9"]').text()).not.toContain('the-secret')

    ;(document.querySelector('[data-test=token-done]') as HTMLElement).click()
    await settle()
    expect(document.body.innerHTML).not.toContain('the-secret')
  })

  it('revoking calls DELETE and the list says revoked', async () => {
    let listed = [token]
    const { calls, router } = await signedInAs('member', {
      'GET /api/v1/tokens': () => ({ json: listed }),
      'DELETE /api/v1/tokens/9': () => { listed = [{ ...token, active: false, revoked_at: '2026-11-25T00:00:00Z' }]; return { status: 204 } },
    })
    const wrapper = mountApp(TokensView, {}, 'en', { pinia, plugins: [router] })
    await settle()
    await wrapper.find('[data-test=revoke-token]').trigger('click')
    await settle()
    ;(document.querySelector('.n-popconfirm__action .n-button--primary-type') as HTMLElement).click()
    await settle()
    expect(calls.some((c) => c.method === 'DELETE' && c.url.pathname === '/api/v1/tokens/9')).toBe(true)
    expect(wrapper.find('[data-test=token-state-revoked]').text()).toBe('Revoked')
    expect(wrapper.find('[data-test=revoke-token]').exists()).toBe(false)
  })
})

describe('users page', () => {
  const carol: UserRead = {
    id: 7, username: 'carol', display_name: 'Carol', role: 'member', disabled: false, sso: false,
    max_active_evaluations: 5, max_stored_bytes: null, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z',
  }

  it('lists quotas as default / value, and an edit sends only what changed (-1 back to default, bytes from GiB)', async () => {
    const { calls, router } = await signedInAs('admin', {
      'GET /api/v1/users': () => ({ json: [carol] }),
      'PATCH /api/v1/users/7': () => ({ json: carol }),
    })
    const wrapper = mountApp(AdminUsersView, {}, 'zh', { pinia, plugins: [router] })
    await settle()
    const row = wrapper.find('[data-user-id="7"]')
    expect(row.text()).toContain('默认') // stored bytes: the installation's default
    expect(row.text()).toContain('5')
    await row.find('[data-test=edit-user]').trigger('click')
    await settle()
    const click = (test: string) => (document.querySelector(`[data-test=${test}] input`) as HTMLInputElement).click()
    click('limit-active-default')
    click('limit-stored-custom')
    await settle()
    const gib = document.querySelector('[data-test=limit-stored-value] input') as HTMLInputElement
    gib.value = '2.5'
    gib.dispatchEvent(new Event('input'))
    gib.dispatchEvent(new Event('blur'))
    await settle()
    ;(document.querySelector('[data-test=user-edit-save]') as HTMLElement).click()
    await settle()
    const patch = calls.find((c) => c.method === 'PATCH')!
    expect(patch.body).toEqual({ max_active_evaluations: -1, max_stored_bytes: 2.5 * 2 ** 30 })
  })
})

describe('audit page', () => {
  it('shows who did what, and sends the filters to the server', async () => {
    const event = {
      id: 1, at: '2026-11-24T10:00:00Z', actor_id: 3, actor_name: 'alice', action: 'deleted', target_type: 'evaluation',
      target_id: 12, target_name: 'nightly', detail: null, address: '127.0.0.1',
    }
    const { calls, router } = await signedInAs('admin', {
      'GET /api/v1/audit': () => ({ json: { items: [event], total: 1, page: 1, page_size: 50 } }),
      'GET /api/v1/users': () => ({ json: [] }),
    })
    const wrapper = mountApp(AuditView, {}, 'en', { pinia, plugins: [router] })
    await settle()
    const row = wrapper.find('[data-event-id="1"]')
    expect(row.text()).toContain('alice')
    expect(row.find('[data-test=audit-action]').text()).toBe('deleted')
    expect(row.text()).toContain('Evaluation #12 · nightly')
    expect(row.text()).toContain('127.0.0.1')

    const id = wrapper.find('[data-test=audit-target-id] input')
    await id.setValue('12')
    await id.trigger('blur')
    await settle()
    const query = calls.filter((c) => c.url.pathname === '/api/v1/audit').at(-1)!.url.searchParams
    expect(query.get('target_id')).toBe('12')
    expect(query.get('page')).toBe('1')
  })
})
