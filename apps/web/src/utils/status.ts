// How each evaluation status looks. The statuses themselves come from the server's OpenAPI enum (the generated
// `EvaluationStatus`); what a status allows (final, cancel, retry) is not decided here: every evaluation carries
// the server's `terminal`, `can_cancel` and `can_retry`.
import type { EvaluationStatus } from '@/api/types.gen'

export type StatusColour = 'default' | 'info' | 'success' | 'error' | 'warning'

/** A status the server adds to its enum is a compile error here until it has a colour (and, in i18n, a name). */
export const STATUS_COLOURS: Record<EvaluationStatus, StatusColour> = {
  queued: 'default',
  running: 'info',
  succeeded: 'success',
  failed: 'error',
  cancelled: 'warning',
  timeout: 'warning',
}

/** Every status, in the server's order (for filters). */
export const EVALUATION_STATUSES = Object.keys(STATUS_COLOURS) as EvaluationStatus[]
