// One evaluation as it runs: detail (status, progress per pair, ETA), the live log tail, then results.
import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import {
  evaluationLogsApiV1EvaluationsEvaluationIdLogsGet as evaluationLogs,
  showEvaluationApiV1EvaluationsEvaluationIdGet as showEvaluation,
} from '@/api/sdk.gen'
import type { EvaluationDetail } from '@/api/types.gen'
import { call, describeError } from '@/services/api'
import { evaluationSocketPath, type EvaluationMessage, LiveFeed, type LiveMode } from '@/services/live'

export const LOG_TAIL_LINES = 300

export interface PairProgress {
  model: string
  dataset: string
  state: string
  done: number
  total: number | null
  /** Why this model × dataset failed (the engine's message), when it did. */
  error: string | null
}

export const useEvaluationStore = defineStore('evaluation', () => {
  const detail = ref<EvaluationDetail | null>(null)
  const logLines = ref<string[]>([])
  const error = ref<string | null>(null)
  const loading = ref(false)
  const liveMode = ref<LiveMode>('closed')
  let feed: LiveFeed<EvaluationMessage> | null = null
  let watchedId: number | null = null

  // The server says when a job is final (timeout included): nothing more to follow, stop polling.
  const isFinal = computed(() => !!detail.value?.terminal)
  /** Per model × dataset progress: the live event while running, the stored final pairs afterwards. */
  const pairs = computed<PairProgress[]>(() => {
    const d = detail.value
    if (!d) return []
    const live = (d.progress?.pairs as PairProgress[] | undefined) ?? []
    const stored = (d.pairs as PairProgress[] | null | undefined) ?? []
    // Once final, the stored pairs are the truth (they carry per-pair errors the live events do not).
    const source = (isFinal.value && stored.length) || !live.length ? stored : live
    return source.map((p) => ({
      model: String(p.model), dataset: String(p.dataset), state: String(p.state ?? ''),
      done: Number(p.done ?? 0), total: p.total == null ? null : Number(p.total),
      error: p.error ? String(p.error) : null,
    }))
  })
  const etaSeconds = computed<number | null>(() => (detail.value?.progress?.eta_s as number | null | undefined) ?? null)

  function setDetail(next: EvaluationDetail) {
    // Out-of-order frames (poll racing the socket) must not move the page backwards.
    if (detail.value && detail.value.id === next.id && next.revision < detail.value.revision) return
    detail.value = next
  }

  async function refresh(id: number) {
    setDetail(await call(showEvaluation({ path: { evaluation_id: id } })))
  }

  async function refreshLog(id: number) {
    const text = await call(evaluationLogs({ path: { evaluation_id: id }, query: { tail: LOG_TAIL_LINES }, parseAs: 'text' }))
    logLines.value = String(text ?? '').split('\n').filter((line, i, all) => line !== '' || i < all.length - 1)
  }

  function appendLog(lines: string[]) {
    logLines.value = [...logLines.value, ...lines].slice(-LOG_TAIL_LINES)
  }

  async function open(id: number) {
    close()
    watchedId = id
    detail.value = null
    logLines.value = []
    error.value = null
    loading.value = true
    try {
      await refresh(id)
      await refreshLog(id).catch(() => undefined)
    } catch (e) {
      error.value = describeError(e).message
      loading.value = false
      return
    }
    loading.value = false
    if (isFinal.value) return
    let polls = 0
    feed = new LiveFeed<EvaluationMessage>({
      path: evaluationSocketPath(id),
      onMessage: (message) => {
        if (message.type === 'update') {
          const wasFinal = isFinal.value
          setDetail(message.evaluation)
          // Without Redis the socket carries no log lines: re-read the tail as progress moves.
          if (!wasFinal) void refreshLog(id).catch(() => undefined)
        } else if (message.type === 'log') appendLog(message.lines)
        else if (message.type === 'error') error.value = message.detail
      },
      poll: async () => {
        if (watchedId !== id) return true
        await refresh(id)
        if (++polls % 2 === 0 || isFinal.value) await refreshLog(id).catch(() => undefined)
        return isFinal.value
      },
      onMode: (mode) => {
        liveMode.value = mode
        // The socket closes when the job is final: read the final state (scores, manifest) once more.
        if (mode === 'closed' && watchedId === id) {
          void refresh(id).catch(() => undefined)
          void refreshLog(id).catch(() => undefined)
        }
      },
    }).start()
  }

  function close() {
    watchedId = null
    feed?.stop()
    feed = null
    liveMode.value = 'closed'
  }

  return { detail, logLines, error, loading, liveMode, isFinal, pairs, etaSeconds, open, close, refresh, setDetail, appendLog }
})
