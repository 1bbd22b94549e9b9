import { createRouter, createWebHistory, type Router, type RouteRecordRaw } from 'vue-router'
import { onUnauthorized } from '@/services/api'
import { safeNextPath } from '@/services/session'
import type { useSessionStore } from '@/stores/session'

declare module 'vue-router' {
  interface RouteMeta {
    /** Rendered alone, without the header and navigation (the sign-in page). */
    bare?: boolean
    /** For administrators only (accounts, the audit log): others are sent to the dashboard. */
    admin?: boolean
    /** Creates something: viewers (session.canCreate false) are sent to the list instead. */
    creates?: boolean
  }
}

// History mode: clean URLs (/evaluations/5) for bookmarks and shared links. A reload or a pasted deep link
// reaches the server, which answers every non-API path that is not a file with index.html (the embedded
// server's SPA fallback in aieval_server/main.py, `try_files ... /index.html` in configs/deploy/nginx.conf).
export const routes: RouteRecordRaw[] = [
  { path: '/sign-in', name: 'sign-in', component: () => import('@/views/SignInView.vue'), meta: { bare: true } },
  { path: '/', name: 'dashboard', component: () => import('@/views/DashboardView.vue') },
  { path: '/evaluations/new', name: 'new-evaluation', component: () => import('@/views/NewEvaluationView.vue'), meta: { creates: true } },
  { path: '/evaluations', name: 'evaluations', component: () => import('@/views/EvaluationsView.vue') },
  { path: '/evaluations/:id(\\d+)', name: 'evaluation', component: () => import('@/views/EvaluationDetailView.vue'), props: (r) => ({ id: Number(r.params.id) }) },
  { path: '/models', name: 'models', component: () => import('@/views/ModelsView.vue') },
  { path: '/datasets', name: 'datasets', component: () => import('@/views/DatasetsView.vue') },
  { path: '/compare', name: 'compare', component: () => import('@/views/CompareView.vue'), props: { mode: 'compare' } },
  { path: '/compare/paired', name: 'paired', component: () => import('@/views/PairedView.vue') },
  { path: '/leaderboard', name: 'leaderboard', component: () => import('@/views/CompareView.vue'), props: { mode: 'leaderboard' } },
  { path: '/schedules', name: 'schedules', component: () => import('@/views/SchedulesView.vue') },
  { path: '/tokens', name: 'tokens', component: () => import('@/views/TokensView.vue') },
  { path: '/notifications', name: 'notifications', component: () => import('@/views/NotificationsView.vue') },
  { path: '/admin/users', name: 'admin-users', component: () => import('@/views/AdminUsersView.vue'), meta: { admin: true } },
  { path: '/admin/audit', name: 'admin-audit', component: () => import('@/views/AuditView.vue'), meta: { admin: true } },
  { path: '/:pathMatch(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue') },
]

/** The clean URL for a link from the hash-routing days (/#/evaluations/12 → /evaluations/12), or null. */
export function legacyHashTarget(location: Pick<Location, 'hash'>, base: string): string | null {
  if (!location.hash.startsWith('#/')) return null
  return base.replace(/\/$/, '') + location.hash.slice(1)
}

export function createAppRouter(base: string = import.meta.env.BASE_URL) {
  // Old bookmarks and shared links still open the page they pointed at.
  const legacy = legacyHashTarget(window.location, base)
  if (legacy) window.history.replaceState(window.history.state, '', legacy)
  return createRouter({ history: createWebHistory(base), routes })
}

/** With sign-in on, every page but the sign-in page needs a session: without one (never signed in, expired,
 *  revoked: any 401 from the API) the user is sent to /sign-in?next=<where they were>, and back there after. */
export function installSessionGuard(router: Router, session: ReturnType<typeof useSessionStore>) {
  router.beforeEach(async (to) => {
    await session.load()
    if (to.name === 'sign-in') return session.mustSignIn ? true : safeNextPath(to.query.next)
    if (session.mustSignIn) return { name: 'sign-in', query: { next: to.fullPath } }
    // Only with a known user: when /auth/me could not be asked the page opens and the server answers for itself.
    if (session.user && to.meta.admin && !session.isAdmin) return { name: 'dashboard' }
    if (session.user && to.meta.creates && !session.canCreate) return { name: 'evaluations' }
    return true
  })
  onUnauthorized(() => {
    session.forget()
    const current = router.currentRoute.value
    // Before the first page is shown the guard above does this itself.
    if (current.matched.length && current.name !== 'sign-in') {
      void router.push({ name: 'sign-in', query: { next: current.fullPath } })
    }
  })
}
