// Issue 12, notifications: channels of every kind are created with what the form says, the URL and the secret are
// never shown back (the server answers a hint and whether a secret is set), a test message's result is shown, and
// the delivery log lists what was sent.
import { NSelect } from 'naive-ui'
import { createPinia, setActivePinia, type Pinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { ChannelCreate, ChannelRead, ChannelTestResult, DeliveryRead, NotificationKind } from '@/api/types.gen'
import { mockApi, type Recorded } from '@/test/fetchMock'
import { mountView, settle, signedInAs } from '@/test/mountApp'
import { formatDate } from '@/utils/format'
import NotificationsView from '@/views/NotificationsView.vue'

let pinia: Pinia
beforeEach(() => { pinia = createPinia(); setActivePinia(pinia) })
afterEach(() => { document.body.innerHTML = '' })

const SECRET = 's3cr3t-signing-key'
const URLS: Record<NotificationKind, string> = {
  webhook: 'http://127.0.0.1:9000/hook/abcdef',
  feishu: 'https://open.feishu.cn/open-apis/bot/v2/hook/feishu-token-123',
  dingtalk: 'https://oapi.dingtalk.com/robot/send?access_token=ding-token-456',
  wecom: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wecom-key-789',
  slack: 'https://hooks.slack.com/services/T000/B000/slack-token-000',
}

// The server's answer: which kinds are signed is its rule, not the page's.
const KINDS = [
  { kind: 'webhook', signed: true }, { kind: 'feishu', signed: true }, { kind: 'dingtalk', signed: true },
  { kind: 'wecom', signed: false }, { kind: 'slack', signed: false },
]

function channel(id: number, overrides: Partial<ChannelRead> = {}): ChannelRead {
  return {
    id, name: `channel ${id}`, kind: 'webhook', url_hint: 'http://127.0.0.1:9000/…cdef', secret_set: false,
    events: ['evaluation_succeeded', 'evaluation_failed', 'gate_failed'], enabled: true,
    created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z', ...overrides,
  }
}
function delivery(id: number, overrides: Partial<DeliveryRead> = {}): DeliveryRead {
  return {
    id, channel_id: 1, channel_name: 'team chat', evaluation_id: 7, evaluation_name: 'nightly', event: 'evaluation_failed',
    status: 'delivered', attempts: 1, created_at: '2026-11-24T01:00:00Z', finished_at: '2026-11-24T01:00:01Z',
    last_attempt_at: '2026-11-24T01:00:01Z', last_error: null, next_attempt_at: null, response_status: 200, ...overrides,
  }
}

/** A server holding channels: POST adds one the way the server shows it (a hint of the URL, whether a secret is set). */
function serve(channels: ChannelRead[], deliveries: DeliveryRead[] = [], routes: Parameters<typeof mockApi>[0] = {},
  role: 'member' | 'viewer' = 'member') {
  return mockApi({
    'GET /api/v1/auth/me': () => signedInAs(role),
    'GET /api/v1/notification-channels': () => ({ json: channels }),
    'GET /api/v1/notification-deliveries': () => ({ json: deliveries }),
    'GET /api/v1/notification-channels/kinds': () => ({ json: KINDS }),
    'POST /api/v1/notification-channels': ({ body }) => {
      const b = body as ChannelCreate & { secret?: string }
      const made = channel(channels.length + 1, { name: b.name, kind: b.kind, events: b.events!, secret_set: Boolean(b.secret),
        url_hint: `${new URL(b.url).origin}/…${b.url.slice(-4)}` })
      channels.push(made)
      return { status: 201, json: made }
    },
    ...routes,
  })
}

const inDocument = (selector: string) => document.querySelector(selector) as HTMLElement | null
async function type(selector: string, value: string) {
  const input = inDocument(`${selector} input`) as HTMLInputElement
  input.value = value
  input.dispatchEvent(new Event('input'))
  await settle()
}
const sent = (calls: Recorded[], method: string, path: string) => calls.filter((c) => c.method === method && c.url.pathname === path)
const channelRows = () => [...document.querySelectorAll('[data-test=channels-table] tbody tr')] as HTMLElement[]
const deliveryRows = () => [...document.querySelectorAll('[data-test=deliveries-table] tbody tr')] as HTMLElement[]

describe('NotificationsView', () => {
  it('creates a channel of each kind: a secret only where the kind is signed; neither URL nor secret is shown back', async () => {
    const channels: ChannelRead[] = []
    const calls = serve(channels)
    const { wrapper } = await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    expect(inDocument('[data-test=channel-new]')).not.toBeNull()
    expect(document.body.textContent).toContain('No channels yet')

    const kinds = KINDS.map((k) => k.kind as NotificationKind)
    const signed = (kind: string) => KINDS.find((k) => k.kind === kind)!.signed
    for (const kind of kinds) {
      inDocument('[data-test=channel-new]')!.click()
      await settle()
      const select = wrapper.findAllComponents(NSelect).find((s) => s.attributes('data-test') === 'channel-kind')!
      expect((select.props('options') as { value: string }[]).map((o) => o.value)).toEqual(kinds)
      select.vm.$emit('update:value', kind)
      await settle()
      await type('[data-test=channel-name]', `${kind} channel`)
      await type('[data-test=channel-url]', URLS[kind])
      const secretField = inDocument('[data-test=channel-secret]')
      if (signed(kind)) {
        expect(secretField).not.toBeNull()
        await type('[data-test=channel-secret]', SECRET)
      } else {
        // WeCom and Slack sign nothing: their URL is the secret.
        expect(secretField).toBeNull()
        expect(inDocument('[data-test=channel-form]')!.textContent).toContain('This kind is not signed: its URL is the secret.')
      }
      inDocument('[data-test=channel-save]')!.click()
      await settle()
    }

    const posts = sent(calls, 'POST', '/api/v1/notification-channels').map((c) => c.body)
    expect(posts).toEqual(kinds.map((kind) => ({
      name: `${kind} channel`, kind, url: URLS[kind], events: ['evaluation_succeeded', 'evaluation_failed', 'gate_failed'],
      enabled: true, ...(signed(kind) ? { secret: SECRET } : {}),
    })))
    expect(channelRows().map((r) => r.querySelector('td')!.textContent)).toEqual(kinds.map((k) => `${k} channel`))
    const page = document.body.textContent!
    expect(page).toContain('Feishu / Lark')
    expect(page).toContain('https://oapi.dingtalk.com/…-456')
    expect(channelRows()[0].textContent).toContain('signed')
    expect(channelRows()[3].textContent).not.toContain('signed')
    expect(page).not.toContain(SECRET)
    for (const url of Object.values(URLS)) expect(page).not.toContain(url)
    for (const input of document.querySelectorAll('input')) expect(input.value).not.toBe(SECRET)
  })

  it('which kinds take a secret is the server\'s answer, not a list of the page\'s own', async () => {
    serve([], [], { 'GET /api/v1/notification-channels/kinds': () => ({ json: [{ kind: 'webhook', signed: false }, { kind: 'wecom', signed: true }] }) })
    const { wrapper } = await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    inDocument('[data-test=channel-new]')!.click()
    await settle()
    const select = wrapper.findAllComponents(NSelect).find((s) => s.attributes('data-test') === 'channel-kind')!
    expect((select.props('options') as { value: string }[]).map((o) => o.value)).toEqual(['webhook', 'wecom'])
    expect(inDocument('[data-test=channel-secret]')).toBeNull() // webhook, unsigned by this server
    select.vm.$emit('update:value', 'wecom')
    await settle()
    expect(inDocument('[data-test=channel-secret]')).not.toBeNull()
  })

  it('editing never shows the URL or secret: empty fields keep them, the checkbox removes the secret', async () => {
    const calls = serve([channel(1, { name: 'ci hook', secret_set: true })], [], {
      'PATCH /api/v1/notification-channels/1': () => ({ json: channel(1, { name: 'ci hook', secret_set: true }) }),
    })
    await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    ;(channelRows()[0].querySelector('[data-test=channel-edit]') as HTMLElement).click()
    await settle()
    const url = inDocument('[data-test=channel-url] input') as HTMLInputElement
    const secret = inDocument('[data-test=channel-secret] input') as HTMLInputElement
    expect(url.value).toBe('')
    expect(url.placeholder).toBe('Leave empty to keep http://127.0.0.1:9000/…cdef')
    expect(secret.value).toBe('')
    expect(secret.placeholder).toBe('A secret is stored: leave empty to keep it')
    inDocument('[data-test=channel-save]')!.click()
    await settle()
    expect(sent(calls, 'PATCH', '/api/v1/notification-channels/1').at(-1)!.body).toEqual({
      name: 'ci hook', kind: 'webhook', events: ['evaluation_succeeded', 'evaluation_failed', 'gate_failed'], enabled: true,
      clear_secret: false,
    })

    ;(channelRows()[0].querySelector('[data-test=channel-edit]') as HTMLElement).click()
    await settle()
    const clear = [...document.querySelectorAll('[data-test=channel-form] .n-checkbox')].find((c) => c.textContent!.includes('Remove the stored secret'))
    ;(clear as HTMLElement).click()
    await settle()
    inDocument('[data-test=channel-save]')!.click()
    await settle()
    expect(sent(calls, 'PATCH', '/api/v1/notification-channels/1').at(-1)!.body).toMatchObject({ clear_secret: true })
  })

  it('the form says what is missing and shows the server\'s 422 refusal', async () => {
    const calls = serve([], [], {
      'POST /api/v1/notification-channels': () => ({ status: 422, json: {
        detail: 'The channel cannot be saved', problems: ['url: only http and https addresses can receive notifications'] } }),
    })
    await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    inDocument('[data-test=channel-new]')!.click()
    await settle()
    await type('[data-test=channel-name]', 'hook')
    inDocument('[data-test=channel-save]')!.click()
    await settle()
    expect(inDocument('[data-test=channel-form] [role=alert]')!.textContent).toContain("Give the receiver's URL")
    expect(sent(calls, 'POST', '/api/v1/notification-channels')).toHaveLength(0)

    await type('[data-test=channel-url]', 'ftp://127.0.0.1/hook')
    inDocument('[data-test=channel-save]')!.click()
    await settle()
    const alert = inDocument('[data-test=channel-form] [role=alert]')!.textContent
    expect(alert).toContain('The channel cannot be saved')
    expect(alert).toContain('url: only http and https addresses can receive notifications')
  })

  it('"Send a test" shows what the receiver answered, delivered or not', async () => {
    let answer: ChannelTestResult = { delivery_id: 1, ok: true, status_code: 200, latency_ms: 12.4, error: null, response: 'ok' }
    const calls = serve([channel(1)], [], { 'POST /api/v1/notification-channels/1/test': () => ({ json: answer }) })
    await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    const test = () => channelRows()[0].querySelector('[data-test=channel-test]') as HTMLElement
    test().click()
    await settle()
    expect(sent(calls, 'POST', '/api/v1/notification-channels/1/test')).toHaveLength(1)
    expect(document.body.textContent).toContain('Delivered (HTTP 200, 12 ms)')
    // The delivery log is read again: the test message is in it.
    expect(sent(calls, 'GET', '/api/v1/notification-deliveries')).toHaveLength(2)

    answer = { delivery_id: 2, ok: false, status_code: 403, latency_ms: 8, error: 'the receiver refused the signature', response: null }
    test().click()
    await settle()
    expect(document.body.textContent).toContain('Not delivered: the receiver refused the signature')

    answer = { delivery_id: 3, ok: false, status_code: 500, latency_ms: 8, error: null, response: 'boom' }
    test().click()
    await settle()
    expect(document.body.textContent).toContain('Not delivered: HTTP 500')
  })

  it('lists the deliveries: channel, event, evaluation, status, attempts, the last error and the next try', async () => {
    serve([channel(1, { name: 'team chat', kind: 'feishu' })], [
      delivery(2, { status: 'pending', attempts: 2, last_error: 'HTTP 502', next_attempt_at: '2026-11-24T01:05:00Z' }),
      delivery(1, { event: 'test', evaluation_id: null, evaluation_name: null }),
    ])
    await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    const [pending, test] = deliveryRows()
    expect(pending.textContent).toContain('team chat')
    expect(pending.textContent).toContain('Evaluation failed or timed out')
    expect(pending.querySelector('a')!.getAttribute('href')).toBe('/evaluations/7')
    expect(pending.querySelector('[data-test=delivery-pending]')!.textContent).toBe('Retrying')
    expect(pending.textContent).toContain(`HTTP 502 (next try ${formatDate('2026-11-24T01:05:00Z', 'en')})`)
    expect(test.textContent).toContain('Test message')
    expect(test.querySelector('[data-test=delivery-delivered]')!.textContent).toBe('Delivered')
  })

  it('zh: the page, kinds, events and statuses in Chinese', async () => {
    serve([channel(1, { kind: 'dingtalk', secret_set: true })], [delivery(1, { status: 'failed', last_error: 'timeout' })])
    await mountView(NotificationsView, '/notifications', {}, 'zh', pinia)
    const page = document.body.textContent!
    expect(document.querySelector('h1')!.textContent).toBe('通知')
    expect(channelRows()[0].textContent).toContain('钉钉')
    expect(deliveryRows()[0].querySelector('[data-test=delivery-failed]')!.textContent).not.toBe('Failed')
    expect(page).not.toMatch(/Delivered|Retrying|Evaluation failed|Send a test|Recent deliveries/)
  })

  it('a viewer may not make channels: no "New channel"', async () => {
    serve([], [], {}, 'viewer')
    await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    expect(inDocument('[data-test=channel-new]')).toBeNull()
  })

  it('on a phone (under 768 px) the test, edit and delete buttons sit next to the name', async () => {
    const width = window.innerWidth
    Object.defineProperty(window, 'innerWidth', { value: 390, configurable: true })
    try {
      serve([channel(1)])
      await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
      const headers = [...document.querySelectorAll('[data-test=channels-table] thead th')].map((th) => th.textContent)
      expect(headers.slice(0, 2)).toEqual(['Name', 'Actions'])
      expect(channelRows()[0].querySelectorAll('td')[1].querySelector('[data-test=channel-test]')).not.toBeNull()
    } finally {
      Object.defineProperty(window, 'innerWidth', { value: width, configurable: true })
    }
  })

  it('a failed load is shown', async () => {
    serve([], [], { 'GET /api/v1/notification-deliveries': () => ({ status: 503, json: { detail: 'The database is not reachable' } }) })
    await mountView(NotificationsView, '/notifications', {}, 'en', pinia)
    expect(inDocument('[role=alert]')!.textContent).toContain('The database is not reachable')
  })
})
