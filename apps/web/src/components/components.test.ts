import { afterEach, describe, expect, it } from 'vitest'
import ErrorAlert from '@/components/ErrorAlert.vue'
import EvaluationProgress from '@/components/EvaluationProgress.vue'
import HeadlineScores from '@/components/HeadlineScores.vue'
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

describe('HeadlineScores', () => {
  it('shows each model\'s headline with its n, the model named when there are several, in Chinese too', () => {
    const scores = [
      { model_id: 1, model: 'a-very-long-checkpoint-name-step-12000', value: 62.5, datasets: 1, dataset: 'qa', metric: 'accuracy', n: 8, correct: 5, ci_low: 30.57, ci_high: 86.32 },
      { model_id: 2, model: 'b', value: 45.25, datasets: 3, n: null },
    ]
    const wrapper = mountApp(HeadlineScores, { scores, showModel: true }, 'zh')
    expect(wrapper.findAll('[data-test=headline]').map((line) => line.text())).toEqual([
      'a-very-long-checkpoint-name-step-1200062.5 % ± 27.9n = 8', 'b3 个数据集平均 45.25'])
    const alone = mountApp(HeadlineScores, { scores: scores.slice(0, 1) }, 'en')
    expect(alone.find('[data-test=headline]').text()).toBe('62.5 % ± 27.9n = 8')
    expect(alone.find('[data-test=headline]').attributes('title')).toBe('a-very-long-checkpoint-name-step-12000 · qa · accuracy')
  })
})
