// Issue 10, results pages: "Run again" on a finished evaluation, and a cancelled run shown as cancelled (not as an
// error). What is offered follows the server: `terminal` from the evaluation, the role from /auth/me.
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { EvaluationDetail } from '@/api/types.gen'
import { detail, mockApi } from '@/test/fetchMock'
import { mountApp, mountView, settle, signedInAs } from '@/test/mountApp'
import EvaluationDetailView from '@/views/EvaluationDetailView.vue'

let pinia: Pinia
beforeEach(() => {
  pinia = createPinia()
  setActivePinia(pinia)
})
afterEach(() => { document.body.innerHTML = '' })


async function open(evaluation: EvaluationDetail, role: 'member' | 'viewer', locale: 'en' | 'zh' = 'en', routes = {}) {
  const calls = mockApi({
    'GET /api/v1/auth/me': () => signedInAs(role),
    [`GET /api/v1/evaluations/${evaluation.id}`]: () => ({ json: evaluation }),
    [`GET /api/v1/evaluations/${evaluation.id}/logs`]: () => ({ text: '' }),
    ...routes,
  })
  pinia = createPinia() // who is signed in is asked once per app
  setActivePinia(pinia)
  const { wrapper, router } = await mountView(EvaluationDetailView, `/evaluations/${evaluation.id}`, { id: evaluation.id }, locale, pinia)
  return { wrapper, calls, router }
}

describe('EvaluationDetailView', () => {
  it('a cancelled run says so as a state, not as an error', async () => {
    const cancelled = detail(5, { status: 'cancelled', error: 'cancelled by request' })
    const { wrapper } = await open(cancelled, 'member', 'zh')
    expect(wrapper.find('[data-test=detail-error]').exists()).toBe(false)
    const note = wrapper.find('[data-test=detail-cancelled]')
    expect(note.text()).toContain('已取消')
    expect(note.text()).toContain('该评测已按请求停止')
    expect(note.text()).not.toContain('cancelled by request')
    // A failed run still shows its error.
    document.body.innerHTML = ''
    const failed = await open(detail(6, { status: 'failed', error: 'the model server refused' }), 'member')
    expect(failed.wrapper.find('[data-test=detail-error]').text()).toContain('the model server refused')
    expect(failed.wrapper.find('[data-test=detail-cancelled]').exists()).toBe(false)
  })

  it('Run again asks the server for a new evaluation and opens it; not offered while running, nor to viewers', async () => {
    const finished = detail(8, { status: 'succeeded', name: 'nightly' })
    const again = detail(9, { status: 'queued', name: 'nightly (again)' })
    const { wrapper, calls, router } = await open(finished, 'member', 'en', {
      'POST /api/v1/evaluations/8/rerun': () => ({ status: 201, json: again }),
      'GET /api/v1/evaluations/9': () => ({ json: again }),
    })
    const button = wrapper.find('[data-test=detail-rerun]')
    expect(button.text()).toBe('Run again')
    await button.trigger('click')
    await settle()
    expect(calls.filter((c) => c.method === 'POST').map((c) => c.url.pathname)).toEqual(['/api/v1/evaluations/8/rerun'])
    expect(router.currentRoute.value.fullPath).toBe('/evaluations/9')
    expect(document.body.textContent).toContain('Started "nightly (again)"')

    document.body.innerHTML = ''
    expect((await open(detail(10, { status: 'running' }), 'member')).wrapper.find('[data-test=detail-rerun]').exists()).toBe(false)
    document.body.innerHTML = ''
    expect((await open(detail(11, { status: 'succeeded' }), 'viewer')).wrapper.find('[data-test=detail-rerun]').exists()).toBe(false)
  })
})
