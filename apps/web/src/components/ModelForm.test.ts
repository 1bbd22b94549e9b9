import { flushPromises } from '@vue/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import ModelForm from '@/components/ModelForm.vue'
import { mockApi } from '@/test/fetchMock'
import { mountApp } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

const stored = {
  id: 4, name: 'gpt', kind: 'openai', settings: { base_url: 'https://x/v1/', model: 'gpt-4o-mini' }, has_api_key: true,
  api_key_hint: 'sk-…abcd', is_demo: false, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z',
}

async function settle() { await flushPromises(); await new Promise((r) => setTimeout(r, 0)); await flushPromises() }
function fill(wrapper: ReturnType<typeof mountApp>, test: string, value: string) {
  return wrapper.find(`[data-test=${test}] input`).setValue(value)
}

describe('ModelForm', () => {
  it('creates an API model with its key, then forgets the key in the page', async () => {
    const calls = mockApi({ 'POST /api/v1/models': () => ({ status: 201, json: stored }) })
    const wrapper = mountApp(ModelForm)
    await fill(wrapper, 'model-name', 'gpt')
    await fill(wrapper, 'model-base-url', 'https://x/v1')
    await fill(wrapper, 'model-model', 'gpt-4o-mini')
    await fill(wrapper, 'model-api-key', 'sk-secret-abcd')
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(calls[0].body).toEqual({ name: 'gpt', kind: 'openai', options: {}, base_url: 'https://x/v1', model: 'gpt-4o-mini', api_key: 'sk-secret-abcd' })
    expect((wrapper.find('[data-test=model-api-key] input').element as HTMLInputElement).value).toBe('')
    expect(wrapper.findComponent(ModelForm).emitted('saved')?.[0]).toEqual([stored])
  })

  it('editing without typing a key keeps the stored one (no api_key sent) and shows only its hint', async () => {
    const calls = mockApi({ 'PATCH /api/v1/models/4': () => ({ json: { ...stored, name: 'renamed' } }) })
    const wrapper = mountApp(ModelForm, { model: stored })
    expect((wrapper.find('[data-test=model-api-key] input').element as HTMLInputElement).placeholder).toContain('sk-…abcd')
    await fill(wrapper, 'model-name', 'renamed')
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(calls[0].method).toBe('PATCH')
    expect(calls[0].body).toEqual({ name: 'renamed', base_url: 'https://x/v1/', model: 'gpt-4o-mini' })
  })

  it('shows the server refusal with its problems and keeps the form', async () => {
    mockApi({ 'POST /api/v1/models': () => ({ status: 422, json: { detail: 'the request is not valid: base_url: must be an http(s) URL', problems: ['base_url: must be an http(s) URL'] } }) })
    const wrapper = mountApp(ModelForm)
    await fill(wrapper, 'model-name', 'bad')
    await fill(wrapper, 'model-base-url', 'nope')
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(wrapper.find('[role=alert]').text()).toContain('base_url: must be an http(s) URL')
    expect(wrapper.findComponent(ModelForm).emitted('saved')).toBeUndefined()
    expect((wrapper.find('[data-test=model-name] input').element as HTMLInputElement).value).toBe('bad')
  })

  it('refuses options that are not a JSON object before calling the server', async () => {
    const calls = mockApi({})
    const wrapper = mountApp(ModelForm)
    await fill(wrapper, 'model-name', 'x')
    await wrapper.find('textarea').setValue('[1, 2]')
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(calls).toHaveLength(0)
    expect(wrapper.find('[role=alert]').text()).toContain('Options must be a JSON object')
  })
})
