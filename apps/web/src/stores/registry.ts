// Registered models and datasets, shared by the registries, the wizard, filters and compare.
import { defineStore } from 'pinia'
import { ref } from 'vue'
import {
  listDatasetsApiV1DatasetsGet as listDatasets,
  listModelsApiV1ModelsGet as listModels,
} from '@/api/sdk.gen'
import type { DatasetRead, ModelRead } from '@/api/types.gen'
import { call, describeError } from '@/services/api'

export const useRegistryStore = defineStore('registry', () => {
  const models = ref<ModelRead[]>([])
  const datasets = ref<DatasetRead[]>([])
  const error = ref<string | null>(null)
  const loading = ref(false)

  async function loadModels() { models.value = await call(listModels()) }
  async function loadDatasets() { datasets.value = await call(listDatasets()) }

  async function loadAll() {
    loading.value = true
    try {
      await Promise.all([loadModels(), loadDatasets()])
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
