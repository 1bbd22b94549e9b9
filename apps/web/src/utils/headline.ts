// An evaluation's headline scores as its list rows show them (the server's EvaluationSummary.headline): per model
// `62.5 % ± 27.9` on its only dataset, or `avg 45.2 over 3 datasets`, beside its n. Pure, unit tested.
import type { HeadlineScore } from '@/api/types.gen'
import { formatValue, formatWithInterval } from '@/utils/provenance'

type Translate = (key: string, values?: Record<string, unknown>) => string

/** The number (with its interval, or "avg … over N datasets"), without the model's name or n. */
export function headlineValue(score: HeadlineScore, t: Translate): string {
  return score.datasets > 1
    ? t('headline.average', { value: formatValue(score.value), n: score.datasets })
    : formatWithInterval(score)
}

/** The tooltip of a headline: which dataset and metric it is, or that it is an average. */
export function headlineTitle(score: HeadlineScore, t: Translate): string {
  return score.datasets > 1
    ? t('headline.averageTitle', { model: score.model, n: score.datasets })
    : `${score.model} · ${score.dataset ?? ''} · ${score.metric ?? ''}`
}
