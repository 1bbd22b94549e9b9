import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { LiveFeed, type LiveMode, websocketUrl } from './live'

class FakeSocket {
  static last: FakeSocket | null = null
  onopen: (() => void) | null = null
  onmessage: ((e: { data: string }) => void) | null = null
  onclose: ((e: { code: number }) => void) | null = null
  closed = false
  constructor(public url: string) { FakeSocket.last = this }
  close() { this.closed = true }
}

function feed(poll: () => Promise<boolean>, modes: LiveMode[], messages: unknown[]) {
  return new LiveFeed<unknown>({
    path: '/api/v1/evaluations/7/ws', poll, intervalMs: 1000, onMode: (m) => modes.push(m),
    onMessage: (m) => messages.push(m), socketFactory: (url) => new FakeSocket(url) as unknown as WebSocket,
  })
}

describe('LiveFeed', () => {
  beforeEach(() => vi.useFakeTimers())
  afterEach(() => vi.useRealTimers())

  it('builds ws/wss URLs from the page location', () => {
    expect(websocketUrl('/x', { protocol: 'http:', host: 'h:1' })).toBe('ws://h:1/x')
    expect(websocketUrl('/x', { protocol: 'https:', host: 'h' })).toBe('wss://h/x')
  })

  it('delivers socket messages and ends quietly on the final close code', async () => {
    const modes: LiveMode[] = []
    const messages: unknown[] = []
    const poll = vi.fn(async () => false)
    feed(poll, modes, messages).start()
    const socket = FakeSocket.last!
    expect(socket.url).toMatch(/\/api\/v1\/evaluations\/7\/ws$/)
    socket.onopen!()
    socket.onmessage!({ data: '{"type":"update","n":1}' })
    socket.onmessage!({ data: 'not json' })
    socket.onclose!({ code: 1000 })
    await vi.advanceTimersByTimeAsync(5000)
    expect(messages).toEqual([{ type: 'update', n: 1 }])
    expect(modes).toEqual(['connecting', 'websocket', 'closed'])
    expect(poll).not.toHaveBeenCalled()
  })

  it('falls back to polling when the socket is refused, until poll says done', async () => {
    const modes: LiveMode[] = []
    let calls = 0
    const poll = vi.fn(async () => ++calls >= 3)
    feed(poll, modes, []).start()
    FakeSocket.last!.onclose!({ code: 1006 }) // never opened: a proxy without WebSocket support
    await vi.advanceTimersByTimeAsync(10_000)
    expect(poll).toHaveBeenCalledTimes(3)
    expect(modes).toEqual(['connecting', 'polling', 'closed'])
  })

  it('keeps polling through transient poll errors and stops when asked', async () => {
    const poll = vi.fn(async () => { throw new Error('network') })
    const live = feed(poll, [], [])
    live.start()
    FakeSocket.last!.onopen!()
    FakeSocket.last!.onclose!({ code: 1011 }) // dropped mid-run
    await vi.advanceTimersByTimeAsync(2500)
    expect(poll).toHaveBeenCalledTimes(3)
    live.stop()
    await vi.advanceTimersByTimeAsync(5000)
    expect(poll).toHaveBeenCalledTimes(3)
  })
})
