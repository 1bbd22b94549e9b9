import { afterEach, describe, expect, it } from 'vitest'
import ErrorAlert from '@/components/ErrorAlert.vue'
import EvaluationProgress from '@/components/EvaluationProgress.vue'
import StatusTag from '@/components/StatusTag.vue'
import { mountApp } from '@/test/mountApp'

afterEach(() => { document.body.innerHTML = '' })

describe('StatusTag', () => {
  it('translates the status and marks a running job being cancelled', () => {
    expect(mountApp(StatusTag, { status: 'succeeded' }).text()).toBe('Succeeded')
    expect(mountApp(StatusTag, { status: 'running' }, 'zh').text()).toBe('运行中')
    expect(mountApp(StatusTag, { status: 'running', cancelRequested: true }).text()).toBe('Cancelling')
    expect(mountApp(StatusTag, { status: 'weird-new-state' }).text()).toBe('weird-new-state')
  })
})

describe('EvaluationProgress', () => {
  it('shows the running fraction and stage, and 100% once succeeded', () => {
    const running = mountApp(EvaluationProgress, { status: 'running', fraction: 0.42, stage: 'infer' })
    expect(running.find('[data-percent]').attributes('data-percent')).toBe('42')
    expect(running.text()).toContain('42% · inference')
    const done = mountApp(EvaluationProgress, { status: 'succeeded', fraction: 0.9 })
    expect(done.find('[data-percent]').attributes('data-percent')).toBe('100')
  })
})

describe('ErrorAlert', () => {
  it('renders nothing without a message and lists problems with one', () => {
    expect(mountApp(ErrorAlert, { message: null }).find('[role=alert]').exists()).toBe(false)
    const alert = mountApp(ErrorAlert, { message: 'bad file', problems: ['line 2: x', 'line 3: y'] })
    expect(alert.find('[role=alert]').text()).toContain('bad file')
    expect(alert.findAll('li').map((li) => li.text())).toEqual(['line 2: x', 'line 3: y'])
  })
})
