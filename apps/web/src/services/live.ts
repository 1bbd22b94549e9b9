// Live updates: a WebSocket when the server (or a proxy in between) allows one, plain polling otherwise.
// WebSocket routes are not part of the OpenAPI schema, so their paths live here and nowhere else; each
// message carries the same objects the generated client's `show`/`list` calls return.
import type { EvaluationDetail, EvaluationSummary } from '@/api/types.gen'

export type LiveMode = 'connecting' | 'websocket' | 'polling' | 'closed'

export interface LiveFeedOptions<T> {
  path: string
  onMessage: (message: T) => void
  /** Called every intervalMs while the WebSocket is unavailable; return true when nothing more will change. */
  poll: () => Promise<boolean>
  onMode?: (mode: LiveMode) => void
  intervalMs?: number
  /** Server closes with 1000 when the watched thing is final: no reconnect, no polling. */
  finalCloseCode?: number
  socketFactory?: (url: string) => WebSocket
}

export function websocketUrl(path: string, location: Pick<Location, 'protocol' | 'host'> = window.location): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}${path}`
}

export class LiveFeed<T> {
  private socket: WebSocket | null = null
  private timer: ReturnType<typeof setTimeout> | null = null
  private stopped = false
  private opened = false
  mode: LiveMode = 'connecting'

  constructor(private options: LiveFeedOptions<T>) {}

  start(): this {
    const factory = this.options.socketFactory ?? ((url: string) => new WebSocket(url))
    try {
      this.socket = factory(websocketUrl(this.options.path))
    } catch {
      this.fallBackToPolling()
      return this
    }
    this.setMode('connecting')
    this.socket.onopen = () => { this.opened = true; this.setMode('websocket') }
    this.socket.onmessage = (event) => {
      try { this.options.onMessage(JSON.parse(String(event.data)) as T) } catch { /* a malformed frame is skipped */ }
    }
    this.socket.onclose = (event) => {
      this.socket = null
      if (this.stopped) return
      if (this.opened && event.code === (this.options.finalCloseCode ?? 1000)) {
        this.setMode('closed')
        return
      }
      // Refused, dropped by a proxy or the server went away: keep the page current by polling.
      this.fallBackToPolling()
    }
    return this
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.socket) {
      this.socket.onclose = null
      this.socket.close()
      this.socket = null
    }
    this.setMode('closed')
  }

  private setMode(mode: LiveMode) {
    this.mode = mode
    this.options.onMode?.(mode)
  }

  private fallBackToPolling() {
    if (this.stopped || this.mode === 'polling') return
    this.setMode('polling')
    const tick = async () => {
      if (this.stopped) return
      let done = false
      try { done = await this.options.poll() } catch { /* transient: try again next tick */ }
      if (done) { this.setMode('closed'); return }
      if (!this.stopped) this.timer = setTimeout(tick, this.options.intervalMs ?? 2000)
    }
    void tick()
  }
}

export type EvaluationMessage =
  | { type: 'update'; evaluation: EvaluationDetail }
  | { type: 'log'; lines: string[] }
  | { type: 'error'; detail: string }

export type EvaluationListMessage = { type: 'evaluations'; items: EvaluationSummary[] }

export const evaluationSocketPath = (id: number) => `/api/v1/evaluations/${id}/ws`
export const evaluationListSocketPath = '/api/v1/evaluations/ws'
