import { beforeEach, describe, expect, it } from 'vitest'
import { showEvaluationApiV1EvaluationsEvaluationIdGet as showEvaluation } from '@/api/sdk.gen'
import { mockApi } from '@/test/fetchMock'
import { ApiError, call, describeError, retryAfterSeconds } from './api'

describe('api error handling', () => {
  beforeEach(() => {
    mockApi({
      'GET /api/v1/evaluations/404': () => ({ status: 404, json: { detail: 'evaluation 404 not found', problems: [] } }),
      'GET /api/v1/evaluations/422': () => ({ status: 422, json: { detail: [{ loc: ['path', 'evaluation_id'], msg: 'bad id' }] } }),
      'GET /api/v1/evaluations/500': () => ({ status: 500, text: 'Internal Server Error' }),
    })
  })

  it('throws the server\'s own message with its status', async () => {
    const error = await call(showEvaluation({ path: { evaluation_id: 404 } })).catch((e) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error.status).toBe(404)
    expect(error.message).toBe('evaluation 404 not found')
  })

  it('flattens FastAPI validation lists into readable lines', async () => {
    const error = await call(showEvaluation({ path: { evaluation_id: 422 } })).catch((e) => e)
    expect(error.message).toBe('path.evaluation_id: bad id')
    expect(error.problems).toEqual(['path.evaluation_id: bad id'])
  })

  it('shows a plain-text 500 as text, never an empty message', async () => {
    const error = await call(showEvaluation({ path: { evaluation_id: 500 } })).catch((e) => e)
    expect(error.status).toBe(500)
    expect(error.message).toBe('Server error (HTTP 500): Internal Server Error')
  })

  it('describes network failures and unknown values', () => {
    expect(describeError(new TypeError('Failed to fetch')).message).toMatch(/Cannot reach the server/)
    expect(describeError(undefined, 502).message).toBe('The server answered HTTP 502')
    expect(describeError({ detail: 'x', problems: ['line 2: y'] })).toEqual({ message: 'x', problems: ['line 2: y'] })
  })
})

describe('Retry-After', () => {
  it('reads seconds or an HTTP date, and ignores anything else', () => {
    expect(retryAfterSeconds('30')).toBe(30)
    expect(retryAfterSeconds('Tue, 01 Dec 2026 12:00:30 GMT', Date.parse('Tue, 01 Dec 2026 12:00:00 GMT'))).toBe(30)
    expect(retryAfterSeconds('soon')).toBeNull()
    expect(retryAfterSeconds(null)).toBeNull()
  })
})
