import { createRouter, createWebHashHistory, type RouteRecordRaw } from 'vue-router'

// Hash history: the embedded server serves dist/ with plain StaticFiles (no SPA fallback), so a reload of
// /#/evaluations/5 must not depend on the server knowing client routes.
export const routes: RouteRecordRaw[] = [
  { path: '/', name: 'dashboard', component: () => import('@/views/DashboardView.vue') },
  { path: '/evaluations/new', name: 'new-evaluation', component: () => import('@/views/NewEvaluationView.vue') },
  { path: '/evaluations', name: 'evaluations', component: () => import('@/views/EvaluationsView.vue') },
  { path: '/evaluations/:id(\\d+)', name: 'evaluation', component: () => import('@/views/EvaluationDetailView.vue'), props: (r) => ({ id: Number(r.params.id) }) },
  { path: '/models', name: 'models', component: () => import('@/views/ModelsView.vue') },
  { path: '/datasets', name: 'datasets', component: () => import('@/views/DatasetsView.vue') },
  { path: '/compare', name: 'compare', component: () => import('@/views/CompareView.vue'), props: { mode: 'compare' } },
  { path: '/leaderboard', name: 'leaderboard', component: () => import('@/views/CompareView.vue'), props: { mode: 'leaderboard' } },
  { path: '/:pathMatch(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue') },
]

export function createAppRouter() {
  return createRouter({ history: createWebHashHistory(), routes })
}
