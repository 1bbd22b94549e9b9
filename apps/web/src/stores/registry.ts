// Registered models and datasets, shared by the registries, the wizard, filters and compare.
import { defineStore } from 'pinia'
import { ref } from 'vue'
import {
  listDatasetsApiV1DatasetsGet as listDatasets,
  listModelsApiV1ModelsGet as listModels,
} from '@/api/sdk.gen'
import type { DatasetRead, ModelRead } from '@/api/types.gen'
import { call, describeError } from '@/services/api'

/** Lists show everything the caller may read ("all", the server's default) or only what the caller owns. */
export type ListScope = 'all' | 'mine'

export const useRegistryStore = defineStore('registry', () => {
  const models = ref<ModelRead[]>([])
  const datasets = ref<DatasetRead[]>([])
  const error = ref<string | null>(null)
  const loading = ref(false)

  // The pickers (wizard, filters, compare) always list all: only the registry pages offer "mine".
  async function loadModels(scope: ListScope = 'all') {
    models.value = await call(listModels({ query: scope === 'mine' ? { scope } : undefined }))
  }
  async function loadDatasets(scope: ListScope = 'all') {
    datasets.value = await call(listDatasets({ query: scope === 'mine' ? { scope } : undefined }))
  }

  async function loadAll(scope: ListScope = 'all') {
    loading.value = true
    try {
      await Promise.all([loadModels(scope), loadDatasets(scope)])
      error.value = null
    } catch (e) {
      error.value = describeError(e).message
    } finally {
      loading.value = false
    }
  }

  function modelName(id: number) { return models.value.find((m) => m.id === id)?.name ?? `#${id}` }
  function datasetName(id: number) { return datasets.value.find((d) => d.id === id)?.name ?? `#${id}` }

  return { models, datasets, error, loading, loadModels, loadDatasets, loadAll, modelName, datasetName }
})
