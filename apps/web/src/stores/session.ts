import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { ApiError, setCsrfToken } from '@/services/api'
import * as sessionApi from '@/services/session'
import type { SessionInfo, SessionUser } from '@/services/session'
import { forgetPersonalData } from '@/stores/personal'

/** 'unknown' until /auth/me answered; 'unavailable' when it could not be asked (server away, older server):
 *  the app then works as before sign-in existed, and the server still refuses what it must. */
export type SessionState = 'unknown' | 'signed-in' | 'signed-out' | 'unavailable'

export const useSessionStore = defineStore('session', () => {
  const user = ref<SessionUser | null>(null)
  const authEnabled = ref(false)
  const csrfToken = ref<string | null>(null)
  const state = ref<SessionState>('unknown')
  let loading: Promise<void> | null = null

  /** Sign-in is on and nobody is signed in: every page but the sign-in page is closed. */
  const mustSignIn = computed(() => state.value === 'signed-out')
  /** Sign-in is off on this server: everyone acts as its single local administrator. */
  const isLocalUser = computed(() => !!user.value?.is_local)
  /** Viewers create nothing (no model, dataset or evaluation): the UI's one copy of that rule, for hiding the
   *  buttons. Unknown role (server unreachable): shown, and the server still refuses what it must. */
  const canCreate = computed(() => user.value?.role !== 'viewer')
  /** Administrators see the account and audit pages (the server refuses everyone else anyway). */
  const isAdmin = computed(() => user.value?.role === 'admin')

  function apply(info: SessionInfo) {
    user.value = info.user
    authEnabled.value = info.auth_enabled
    csrfToken.value = info.csrf_token
    setCsrfToken(info.csrf_token)
    state.value = 'signed-in'
  }

  /** Drop everything we knew about the session (signed out here, or the server said 401). */
  function forget() {
    user.value = null
    csrfToken.value = null
    setCsrfToken(null)
    authEnabled.value = true // only a server with sign-in on can have signed us out
    state.value = 'signed-out'
    loading = Promise.resolve()
    forgetPersonalData()
  }

  /** Ask the server once who we are; later calls wait for that same answer. */
  function load(): Promise<void> {
    loading ??= sessionApi.fetchSession().then(apply, (error: unknown) => {
      if (error instanceof ApiError && error.status === 401) forget()
      else state.value = 'unavailable'
    })
    return loading
  }

  async function signIn(username: string, password: string) {
    apply(await sessionApi.login(username, password))
  }

  async function signOut() {
    try {
      await sessionApi.logout()
    } catch (error) {
      // Already signed out on the server (expired, revoked): the same result. Anything else is reported and the
      // session stays, since the server still holds it.
      if (!(error instanceof ApiError && error.status === 401)) throw error
    }
    forget()
  }

  async function changePassword(currentPassword: string, newPassword: string) {
    await sessionApi.changePassword(currentPassword, newPassword)
  }

  return {
    user, authEnabled, csrfToken, state, mustSignIn, isLocalUser, canCreate, isAdmin, load, signIn, signOut, changePassword, forget,
  }
})
