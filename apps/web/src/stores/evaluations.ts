// The evaluations list: filters, pagination, and rows kept current by the list WebSocket (or polling).
import { defineStore } from 'pinia'
import { computed, reactive, ref } from 'vue'
import {
  cancelEvaluationApiV1EvaluationsEvaluationIdCancelPost as cancelEvaluation,
  deleteEvaluationApiV1EvaluationsEvaluationIdDelete as deleteEvaluation,
  listEvaluationsApiV1EvaluationsGet as listEvaluations,
  retryEvaluationApiV1EvaluationsEvaluationIdRetryPost as retryEvaluation,
} from '@/api/sdk.gen'
import type { EvaluationStatus, EvaluationSummary } from '@/api/types.gen'
import { call, describeError } from '@/services/api'
import type { ListScope } from '@/stores/registry'
import { evaluationListSocketPath, type EvaluationListMessage, LiveFeed, type LiveMode } from '@/services/live'

export interface EvaluationFilters {
  statuses: EvaluationStatus[]
  q: string
  modelId: number | null
  datasetId: number | null
  /** Only the caller's own evaluations ("mine") or all it may read. */
  scope: ListScope
}

export const useEvaluationsStore = defineStore('evaluations', () => {
  const items = ref<EvaluationSummary[]>([])
  const total = ref(0)
  const page = ref(1)
  const pageSize = ref(20)
  const filters = reactive<EvaluationFilters>({ statuses: [], q: '', modelId: null, datasetId: null, scope: 'all' })
  const loading = ref(false)
  const error = ref<string | null>(null)
  const liveMode = ref<LiveMode>('closed')
  let feed: LiveFeed<EvaluationListMessage> | null = null
  let requestSerial = 0

  const hasFilters = computed(
    () => filters.statuses.length > 0 || filters.q.trim() !== '' || filters.modelId != null || filters.datasetId != null
      || filters.scope === 'mine',
  )

  async function load() {
    const serial = ++requestSerial
    loading.value = true
    try {
      const result = await call(listEvaluations({
        query: {
          status: filters.statuses.length ? filters.statuses : undefined,
          q: filters.q.trim() || undefined,
          model_id: filters.modelId ?? undefined,
          dataset_id: filters.datasetId ?? undefined,
          scope: filters.scope === 'mine' ? 'mine' : undefined,
          page: page.value,
          page_size: pageSize.value,
        },
      }))
      if (serial !== requestSerial) return // a newer request (filters typed quickly) has won
      items.value = result.items
      total.value = result.total
      error.value = null
    } catch (e) {
      if (serial === requestSerial) error.value = describeError(e).message
    } finally {
      if (serial === requestSerial) loading.value = false
    }
  }

  /** Merge pushed summaries: update rows on this page in place; a brand-new job shows up on page 1. */
  function applyUpdates(updates: EvaluationSummary[]) {
    let unseenNew = false
    const byId = new Map(items.value.map((item, index) => [item.id, index]))
    const next = [...items.value]
    for (const update of updates) {
      const index = byId.get(update.id)
      if (index !== undefined) next[index] = update
      else if (items.value.length === 0 || update.id > Math.max(...items.value.map((i) => i.id))) unseenNew = true
    }
    items.value = next
    if (unseenNew && page.value === 1) void load()
  }

  function startLive() {
    stopLive()
    feed = new LiveFeed<EvaluationListMessage>({
      path: evaluationListSocketPath,
      onMessage: (message) => { if (message.type === 'evaluations') applyUpdates(message.items) },
      poll: async () => { await load(); return false },
      onMode: (mode) => { liveMode.value = mode },
      intervalMs: 3000,
    }).start()
  }

  function stopLive() {
    feed?.stop()
    feed = null
  }

  function setPage(next: number) { page.value = next; void load() }
  function setPageSize(next: number) { pageSize.value = next; page.value = 1; void load() }
  function applyFilters() { page.value = 1; void load() }

  async function cancel(id: number) {
    const detail = await call(cancelEvaluation({ path: { evaluation_id: id } }))
    applyUpdates([detail])
    return detail
  }
  async function retry(id: number) {
    const detail = await call(retryEvaluation({ path: { evaluation_id: id } }))
    applyUpdates([detail])
    return detail
  }
  async function remove(id: number) {
    await call(deleteEvaluation({ path: { evaluation_id: id } }))
    items.value = items.value.filter((item) => item.id !== id)
    total.value = Math.max(0, total.value - 1)
    await load()
  }

  return {
    items, total, page, pageSize, filters, loading, error, liveMode, hasFilters,
    load, applyUpdates, startLive, stopLive, setPage, setPageSize, applyFilters, cancel, retry, remove,
  }
})
