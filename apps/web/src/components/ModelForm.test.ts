import { afterEach, describe, expect, it } from 'vitest'
import ModelForm from '@/components/ModelForm.vue'
import { mockApi } from '@/test/fetchMock'
import { mountApp, settle } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

const stored = {
  id: 4, name: 'gpt', kind: 'openai', settings: { base_url: 'https://x/v1/', model: 'gpt-4o-mini' }, has_api_key: true,
  api_key_hint: 'sk-…abcd', is_demo: false, owner: { id: 3, username: 'alice', display_name: 'Alice' }, visibility: 'private',
  can_change: true, max_concurrency: 8, created_at: '2026-11-24T00:00:00Z', updated_at: '2026-11-24T00:00:00Z',
}

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
    // Visibility and the shared cap were left alone: the server's defaults apply (none sent).
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

describe('ModelForm: team features (issue 9)', () => {
  const failed = { ok: false, latency_ms: null, reply: null, error: 'could not connect to http://127.0.0.1:9/v1/chat/completions: connection refused' }

  it('tests the connection before saving (the draft, unsaved) and keeps a failure on screen until dismissed', async () => {
    const calls = mockApi({
      'POST /api/v1/models/test': () => ({ json: failed }),
      'POST /api/v1/models': () => ({ status: 201, json: stored }),
    })
    const wrapper = mountApp(ModelForm)
    await fill(wrapper, 'model-base-url', 'http://127.0.0.1:9/v1')
    await fill(wrapper, 'model-model', 'm')
    await wrapper.find('[data-test=model-test]').trigger('click')
    await settle()
    expect(calls.map((c) => `${c.method} ${c.url.pathname}`)).toEqual(['POST /api/v1/models/test'])
    // The name does not matter to a test, but the body is a full registration the server can validate.
    expect(calls[0].body).toEqual({ name: 'connection test', kind: 'openai', options: {}, base_url: 'http://127.0.0.1:9/v1', model: 'm' })
    const result = () => wrapper.find('[data-test=model-test-result]')
    expect(result().text()).toContain('http://127.0.0.1:9/v1/chat/completions')

    // Typing on and saving does not make the failure go away: only dismissing it does.
    await fill(wrapper, 'model-name', 'gpt')
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(result().exists()).toBe(true)
    await result().find('.n-alert__close').trigger('click')
    await settle()
    expect(result().exists()).toBe(false)
  })

  it('sends the chosen visibility and shared cap with a new model', async () => {
    const calls = mockApi({ 'POST /api/v1/models': () => ({ status: 201, json: stored }) })
    const wrapper = mountApp(ModelForm)
    await fill(wrapper, 'model-name', 'gpt')
    await fill(wrapper, 'model-base-url', 'https://x/v1')
    await fill(wrapper, 'model-model', 'gpt-4o-mini')
    await fill(wrapper, 'model-max-concurrency', '6')
    await wrapper.find('[data-test=visibility-shared] input').setValue(true)
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(calls[0].body).toMatchObject({ visibility: 'shared', max_concurrency: 6 })
  })

  it('editing: the stored model is tested as stored; changing the address tests the draft; clearing the cap sends 0', async () => {
    const calls = mockApi({
      'POST /api/v1/models/4/test': () => ({ json: { ok: true, latency_ms: 12, reply: 'hi', error: null } }),
      'POST /api/v1/models/test': () => ({ json: failed }),
      'PATCH /api/v1/models/4': () => ({ json: stored }),
    })
    const wrapper = mountApp(ModelForm, { model: stored })
    expect(wrapper.find('[data-test=visibility-private]').classes()).toContain('n-radio-button--checked')
    await wrapper.find('[data-test=model-test]').trigger('click')
    await settle()
    expect(wrapper.find('[data-test=model-test-result]').text()).toContain('Connection OK in 12 ms')
    await fill(wrapper, 'model-base-url', 'http://127.0.0.1:9/v1')
    await wrapper.find('[data-test=model-test]').trigger('click')
    await settle()
    expect(calls.map((c) => c.url.pathname)).toEqual(['/api/v1/models/4/test', '/api/v1/models/test'])
    expect(wrapper.find('[data-test=model-test-result]').text()).toContain('Connection failed')

    await fill(wrapper, 'model-max-concurrency', '')
    await wrapper.find('[data-test=visibility-shared] input').setValue(true)
    await wrapper.find('form').trigger('submit')
    await settle()
    expect(calls.at(-1)!.body).toMatchObject({ max_concurrency: 0, visibility: 'shared' })
  })
})
