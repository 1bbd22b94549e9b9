import { flushPromises } from '@vue/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import DemoModelNotice from '@/components/DemoModelNotice.vue'
import { mockApi } from '@/test/fetchMock'
import { mountApp } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

async function settle(ms = 0) {
  await flushPromises()
  await new Promise((resolve) => setTimeout(resolve, ms))
  await flushPromises()
}

describe('DemoModelNotice', () => {
  it('says the demo model is being prepared until the server reports it ready, asking again meanwhile', async () => {
    const states = ['preparing', 'preparing', 'ready']
    const calls = mockApi({ 'GET /api/v1/health': () => ({ json: { status: 'ok', demo_model: states.shift() ?? 'ready' } }) })
    const notice = mountApp(DemoModelNotice, { intervalMs: 10 })
    await settle()
    expect(notice.find('[data-test=demo-model-preparing]').text()).toContain('The demo model is being prepared')
    await settle(50)
    await settle(50)
    expect(notice.find('[data-test=demo-model-preparing]').exists()).toBe(false)
    const asked = calls.filter((c) => c.url.pathname === '/api/v1/health').length
    expect(asked).toBe(3)
    await settle(50)
    expect(calls.filter((c) => c.url.pathname === '/api/v1/health').length).toBe(asked) // settled: no more asking
  })

  it('warns when the demo model could not be prepared, in Chinese too, and says nothing when there is none', async () => {
    mockApi({ 'GET /api/v1/health': () => ({ json: { status: 'ok', demo_model: 'unavailable' } }) })
    const zh = mountApp(DemoModelNotice, {}, 'zh')
    await settle()
    expect(zh.find('[data-test=demo-model-unavailable]').text()).toContain('演示模型不可用')
    mockApi({ 'GET /api/v1/health': () => ({ json: { status: 'ok', demo_model: 'off' } }) })
    const off = mountApp(DemoModelNotice)
    await settle()
    expect(off.find('[role=alert]').exists()).toBe(false)
  })
})
