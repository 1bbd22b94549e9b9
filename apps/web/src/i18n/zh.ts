import type en from './en'

const zh: typeof en = {
  app: { title: 'AI 评测', subtitle: '基于 OpenCompass 的大模型评测', language: '语言', menu: '菜单' },
  nav: {
    dashboard: '概览', newEvaluation: '新建评测', evaluations: '评测任务', models: '模型', datasets: '数据集',
    compare: '模型对比', leaderboard: '排行榜',
  },
  common: {
    refresh: '刷新', create: '创建', edit: '编辑', delete: '删除', save: '保存', cancel: '取消', close: '关闭', confirm: '请确认',
    back: '上一步', next: '下一步', search: '搜索', actions: '操作', name: '名称', kind: '类型', status: '状态',
    created: '创建时间', loading: '加载中…', none: '无', yes: '是', no: '否',
    confirmDelete: '确定删除“{name}”？此操作无法撤销。', deleted: '已删除', saved: '已保存', retry: '重试',
    test: '测试连接', all: '全部', rows: '行数', size: '大小', demo: '演示', view: '查看',
    errorTitle: '出错了', notFound: '页面不存在', goHome: '返回概览',
    liveWebsocket: '实时', livePolling: '轮询', liveClosed: '已结束', liveConnecting: '连接中',
  },
  status: {
    queued: '排队中', running: '运行中', succeeded: '已完成', failed: '失败', cancelled: '已取消', timeout: '已超时',
    cancelling: '取消中',
  },
  stage: {
    preparing: '准备中', infer: '推理中', eval: '评分中', summarize: '汇总中', pending: '等待中', inferring: '推理中',
    inferred: '推理完成', evaluated: '评分完成', failed: '失败', succeeded: '完成', cancelled: '已取消', queued: '排队中',
    timeout: '已超时',
  },
  dashboard: {
    running: '正在运行', recent: '最近的评测', total: '评测总数', succeeded: '已完成', failed: '失败', active: '进行中',
    models: '模型', datasets: '数据集', quickStart: '快速开始', quickStartText: '几步即可用演示模型评测演示数据集。',
    nothingRunning: '当前没有运行中的评测。', noEvaluations: '还没有评测。', start: '开始评测',
  },
  evaluations: {
    title: '评测任务', searchPlaceholder: '按名称搜索', statusFilter: '状态', modelFilter: '模型', datasetFilter: '数据集',
    progress: '进度', models: '模型', datasets: '数据集', duration: '耗时', confirmCancel: '确定取消“{name}”？',
    cancelRequested: '已请求取消', retried: '已重新排队', empty: '没有符合条件的评测。', total: '共 {n} 个评测',
  },
  wizard: {
    title: '新建评测', stepModels: '模型', stepDatasets: '数据集', stepParams: '参数', stepReview: '确认',
    chooseModels: '选择一个或多个模型', registerModel: '注册新模型', chooseDatasets: '选择数据集',
    registered: '已注册的数据集', builtin: 'OpenCompass 内置', upload: '上传文件', available: '数据可用',
    unavailable: '缺少数据', builtinSearch: '搜索内置配置', onlyAvailable: '仅显示可用', params: '参数',
    name: '评测名称', limit: '每个数据集的样本上限', limitHint: '留空：全部样本', maxOutLen: '最大输出长度（token）',
    workers: '并发数', seed: '随机种子', timeout: '超时（秒）', submit: '开始评测', submitted: '评测已开始',
    needModel: '请至少选择一个模型', needDataset: '请至少选择一个数据集', selected: '已选 {n} 个',
    missingFiles: '缺少的文件', add: '添加', added: '已添加',
  },
  detail: {
    overview: '概况', progress: '进度', pairs: '模型 × 数据集', eta: '预计剩余', elapsed: '已用时间', samples: '样本',
    stage: '阶段', logs: '日志', results: '结果', scores: '得分', charts: '图表', sampleBrowser: '样本浏览',
    manifest: '复现清单', export: '导出', exportCsv: 'CSV', exportJson: 'JSON', exportMd: 'Markdown 报告',
    exportZip: '全部产物（zip）', wrongOnly: '只看错误', prompt: '提示', prediction: '预测', gold: '标准答案',
    correct: '正确', model: '模型', dataset: '数据集', metric: '指标', value: '得分', params: '参数',
    attempts: '尝试次数', worker: '执行节点', noResults: '评测完成后显示结果。', noResultsFinal: '该评测没有产生得分。',
    failingLog: '失败任务的日志', noLog: '暂无日志。', error: '错误',
    downloadLog: '下载完整日志', bar: '各数据集得分', radar: '模型能力画像', searchSamples: '搜索提示与答案',
    started: '开始时间', finished: '结束时间', queue: '队列', extracted: '提取的答案',
  },
  models: {
    title: '模型', add: '注册模型', editTitle: '编辑模型', kindOpenai: 'OpenAI 兼容接口', kindDify: 'Dify 对话应用',
    kindHf: '本地 Hugging Face 模型', baseUrl: '接口地址', modelName: '模型名', apiKey: 'API 密钥',
    apiKeyKeep: '留空则保留已保存的密钥', clearKey: '删除已保存的密钥', path: '模型目录（执行节点上）', mode: '模式',
    options: '选项（JSON）', testOk: '连接成功，耗时 {ms} 毫秒', testFailed: '连接失败：{error}', secret: '密钥',
    noKey: '无密钥', optionsInvalid: '选项必须是 JSON 对象', settings: '配置', reply: '回复',
  },
  datasets: {
    title: '数据集', upload: '上传数据集', custom: '自定义与已注册', builtin: '内置数据集目录',
    dropHint: '点击或拖入 {extensions} 文件（选择题：question, A, B, C, D, answer；问答：question, answer）',
    dropHintAny: '点击或拖入数据集文件（选择题：question, A, B, C, D, answer；问答：question, answer）',
    dataType: '题型', detect: '根据列自动识别', scorer: '评分方式', scorerExact: '完全匹配', scorerContains: '预测包含答案',
    inferMethod: '推理方式', preview: '预览', uploadOk: '已上传“{name}”',
    uploadExisting: '相同文件已上传为“{name}”', previewOf: '前 {shown} 行，共 {total} 行', fileProblems: '文件无法使用',
    columns: '列', register: '注册', missing: '缺少', folder: '目录', sendUpload: '上传', detected: '识别为：{type}',
    checking: '正在检查文件…', rowCount: '{n} 行', alreadyUploaded: '此文件之前已上传过',
    tooLarge: '文件大小为 {size}，服务器最多接受 {max}',
  },
  compare: {
    title: '模型对比', leaderboardTitle: '排行榜', pickModels: '要对比的模型', pickDatasets: '数据集（留空：所有共同数据集）',
    average: '平均分', rank: '排名', noData: '所选范围内还没有完成的得分。', fromEvaluation: '来自评测 #{id}',
    sharedOnly: '只看所有模型都有的数据集', allDatasets: '数据集（留空：全部）', metric: '指标',
  },
}
export default zh
