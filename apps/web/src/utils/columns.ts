// Table columns on a phone (under 768 px): the actions column moves next to the name, so it is reachable without
// scrolling sideways, and the bare "#" id column goes.
export function actionsBesideName<T extends { key?: unknown }>(columns: T[], narrow: boolean): T[] {
  if (!narrow) return columns
  const actions = columns.find((c) => c.key === 'actions')
  const rest = columns.filter((c) => c.key !== 'actions' && c.key !== 'id')
  return actions ? [rest[0], actions, ...rest.slice(1)] : rest
}
