// The one place that turns the generated client's {data, error, response} results into values or
// readable errors. Views never see raw responses, stack traces or URLs.
import { client } from '@/api/client.gen'

// Same origin in every deployment (API server serving dist/, nginx proxying /api, Vite dev proxy).
client.setConfig({ baseUrl: '' })

// --- Sign-in: the one place every request passes through (SDK calls, the dataset upload and its dry run alike).
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])
/** The session's anti-CSRF token (from /auth/me or the sign-in answer); null with sign-in off or signed out. */
let csrfToken: string | null = null
let unauthorizedHandler: (() => void) | null = null

/** Called by the session store whenever its token changes. */
export function setCsrfToken(token: string | null): void {
  csrfToken = token
}

/** Who hears about a 401 (the session guard: it forgets the user and opens the sign-in page). */
export function onUnauthorized(handler: (() => void) | null): void {
  unauthorizedHandler = handler
}

/** A refused sign-in is a wrong password, not an expired session: the sign-in page shows it itself. */
function isSignInRequest(request: Request): boolean {
  return request.method === 'POST' && new URL(request.url, 'http://localhost').pathname.endsWith('/api/v1/auth/login')
}

client.interceptors.request.use((request) => {
  // The cookie alone must not be enough to change anything: the server checks this header against the session.
  if (csrfToken && !SAFE_METHODS.has(request.method)) request.headers.set('X-CSRF-Token', csrfToken)
  return request
})
client.interceptors.response.use((response, request) => {
  if (response.status === 401 && !isSignInRequest(request)) unauthorizedHandler?.()
  return response
})

export class ApiError extends Error {
  status: number
  problems: string[]
  /** Seconds the server asked us to wait (Retry-After of a 429 or 503), when it said. */
  retryAfterS: number | null
  constructor(message: string, status: number, problems: string[] = [], retryAfterS: number | null = null) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.problems = problems
    this.retryAfterS = retryAfterS
  }
}

/** Retry-After in whole seconds: either a number of seconds or an HTTP date (RFC 9110). */
export function retryAfterSeconds(header: string | null | undefined, now: number = Date.now()): number | null {
  if (!header) return null
  const value = header.trim()
  if (/^\d+$/.test(value)) return Number(value)
  const at = Date.parse(value)
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000))
}

type Result<T> = { data?: T; error?: unknown; response?: Response }

/** A human sentence for anything the server (or the network) returned as an error. */
export function describeError(error: unknown, status = 0): { message: string; problems: string[] } {
  if (error instanceof ApiError) return { message: error.message, problems: error.problems }
  if (error && typeof error === 'object') {
    const body = error as { detail?: unknown; problems?: unknown }
    const problems = Array.isArray(body.problems) ? body.problems.map(String) : []
    if (typeof body.detail === 'string') return { message: body.detail, problems }
    // FastAPI's default validation shape: detail is a list of {loc, msg}.
    if (Array.isArray(body.detail)) {
      const lines = body.detail.map((d: { loc?: unknown[]; msg?: string }) =>
        [(d.loc ?? []).filter((p) => p !== 'body').join('.'), d.msg].filter(Boolean).join(': '),
      )
      return { message: lines.join('; '), problems: lines }
    }
  }
  if (error instanceof TypeError) return { message: `Cannot reach the server (${error.message})`, problems: [] }
  if (error instanceof Error) return { message: error.message, problems: [] }
  if (typeof error === 'string' && error.trim()) {
    // A bare proxy/server page ("Internal Server Error", "Bad Gateway"): say which side failed.
    const text = error.trim().slice(0, 500)
    return { message: status >= 500 ? `Server error (HTTP ${status}): ${text}` : text, problems: [] }
  }
  return { message: status ? `The server answered HTTP ${status}` : 'Unknown error', problems: [] }
}

/** Await a generated SDK call; return its data or throw an ApiError with the server's own message. */
export async function call<T>(request: Promise<Result<T>>): Promise<T> {
  let result: Result<T>
  try {
    result = await request
  } catch (error) {
    const { message, problems } = describeError(error)
    throw new ApiError(message, 0, problems)
  }
  const status = result.response?.status ?? 0
  if (result.error !== undefined || (result.response && !result.response.ok)) {
    const { message, problems } = describeError(result.error, status)
    throw new ApiError(message, status, problems, retryAfterSeconds(result.response?.headers.get('retry-after')))
  }
  return result.data as T
}

/** Save a Blob the API returned as a file download, named as the server suggested. */
export function saveBlob(blob: Blob, response: Response | undefined, fallbackName: string): string {
  const disposition = response?.headers.get('content-disposition') ?? ''
  const match = /filename="?([^";]+)"?/i.exec(disposition)
  const name = match?.[1] ?? fallbackName
  const url = URL.createObjectURL(blob)
  const link = document.createElement('a')
  link.href = url
  link.download = name
  document.body.appendChild(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
  return name
}
