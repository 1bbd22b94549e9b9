// Sign-in: the generated SDK's /api/v1/auth/* calls (same base URL, same CSRF and 401 interceptors as every
// other call) through `call` (same error messages), and the one rule for where to go after signing in.
import {
  changePasswordApiV1AuthPasswordPost as changePasswordRequest,
  loginApiV1AuthLoginPost as loginRequest,
  logoutApiV1AuthLogoutPost as logoutRequest,
  meApiV1AuthMeGet as meRequest,
} from '@/api/sdk.gen'
import type { AuthState, CallerRead, UserRole } from '@/api/types.gen'
import { call } from './api'

export type Role = UserRole
export type SessionUser = CallerRead
export type SessionInfo = AuthState

/** Who is signed in (or the local user when sign-in is off). Answers 401 when sign-in is on and nobody is. */
export function fetchSession(): Promise<SessionInfo> {
  return call(meRequest())
}

export function login(username: string, password: string): Promise<SessionInfo> {
  return call(loginRequest({ body: { username, password } }))
}

export async function logout(): Promise<void> {
  await call(logoutRequest())
}

export async function changePassword(currentPassword: string, newPassword: string): Promise<void> {
  await call(changePasswordRequest({ body: { current_password: currentPassword, new_password: newPassword } }))
}

/** Where to go after signing in: only a path of this app. An absolute URL, `//host/...` or `/\host` (which
 *  browsers read as `//host`) would send a freshly signed-in user to another site: those become "/". */
export function safeNextPath(next: unknown): string {
  const value = Array.isArray(next) ? next[0] : next
  if (typeof value !== 'string' || !value.startsWith('/')) return '/'
  // eslint-disable-next-line no-control-regex
  if (value.startsWith('//') || value.includes('\\') || /[\u0000-\u001f\u007f]/.test(value)) return '/'
  if (value === '/sign-in' || value.startsWith('/sign-in?') || value.startsWith('/sign-in/')) return '/'
  return value
}
