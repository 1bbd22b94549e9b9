import { useI18n } from 'vue-i18n'

/** Engine stage and pair-state words in the user's language; unknown future values are shown as they are. */
export function useStageLabel() {
  const { t, te } = useI18n()
  return (stage: string | null | undefined) => (stage ? (te(`stage.${stage}`) ? t(`stage.${stage}`) : stage) : '—')
}
