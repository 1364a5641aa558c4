-- create: store new pending tasks, all or none; refuse the whole batch if a scheduler is unknown
-- or a task id is already stored. A task whose idempotency key is held by a live task is not
-- created: the reply carries that task's record instead. A key held by a task whose publish is not
-- yet confirmed refuses the whole call ('unconfirmed'), so a caller is never told of a task that
-- may yet be discarded.
-- ARGV: prefix, now, then per task: id, scheduler, attributes (JSON), timeout (epoch seconds),
-- owner, priority, key (or ''), idempotency Redis key (or ''), callback_url (or '')
local now = ARGV[2]
local stride = 9
local schedulers = prefix .. ':schedulers'
local checked = {}
for i = 3, #ARGV, stride do
  -- A caller-chosen id (a schedule's run) may already be stored by a concurrent creator: never
  -- overwrite a task, so creating the same run twice stores it once.
  if redis.call('EXISTS', task_key(ARGV[i])) == 1 then
    return {'exists', ARGV[i]}
  end
  local scheduler = ARGV[i + 1]
  if not checked[scheduler] then
    if redis.call('HEXISTS', schedulers, scheduler) == 0 then
      return {'unknown_scheduler', scheduler}
    end
    checked[scheduler] = true
  end
end
local reply = {'ok'}
for i = 3, #ARGV, stride do
  local held = idempotency_holder(ARGV[i + 7])
  if held then
    if redis.call('HGET', task_key(held), 'published') ~= '1' then
      return {'unconfirmed', held}
    end
    reply[#reply + 1] = redis.call('HGETALL', task_key(held))
  else
    reply[#reply + 1] = 'new'
  end
end
for i = 3, #ARGV, stride do
  if reply[(i - 3) / stride + 2] == 'new' then
    local id, scheduler, attributes, timeout = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local key = task_key(id)
    redis.call('HSET', key, 'id', id, 'scheduler', scheduler, 'attributes', attributes,
      'timeout', timeout, 'state', 'pending', 'created_at', now, 'attempts', 0, 'owner', ARGV[i + 4])
    if ARGV[i + 5] ~= '0' then redis.call('HSET', key, 'priority', ARGV[i + 5]) end
    if ARGV[i + 7] ~= '' then
      redis.call('HSET', key, 'key', ARGV[i + 6], 'idem', ARGV[i + 7])
      redis.call('SET', ARGV[i + 7], id)
    end
    if ARGV[i + 8] ~= '' then redis.call('HSET', key, 'callback_url', ARGV[i + 8]) end
    redis.call('ZADD', deadlines, timeout, id)
    redis.call('SADD', live_key(scheduler), id)
    emit(id, 'pending', now)
  end
end
return reply
