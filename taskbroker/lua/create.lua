-- create: store new pending tasks, all or none; refuse the whole batch if a scheduler is unknown.
-- ARGV: prefix, now, then per task: id, scheduler, attributes (JSON), timeout (epoch seconds), owner
local now = ARGV[2]
local schedulers = prefix .. ':schedulers'
local checked = {}
for i = 3, #ARGV, 5 do
  local scheduler = ARGV[i + 1]
  if not checked[scheduler] then
    if redis.call('HEXISTS', schedulers, scheduler) == 0 then
      return {'unknown_scheduler', scheduler}
    end
    checked[scheduler] = true
  end
end
for i = 3, #ARGV, 5 do
  local id, scheduler, attributes, timeout = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('HSET', task_key(id), 'id', id, 'scheduler', scheduler, 'attributes', attributes,
    'timeout', timeout, 'state', 'pending', 'created_at', now, 'attempts', 0, 'owner', ARGV[i + 4])
  redis.call('ZADD', deadlines, timeout, id)
  redis.call('SADD', live_key(scheduler), id)
  emit(id, 'pending', now)
end
return {'ok'}
