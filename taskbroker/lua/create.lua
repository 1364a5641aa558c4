-- create: store new pending tasks, all or none; refuse the whole batch if a scheduler is unknown,
-- a task asks a quorum scheduler (no priorities) for a priority, or a task id is already stored.
-- A task whose idempotency key is held by a live task is not created: the reply carries that
-- task's record instead. A key held by a task whose publish is not yet confirmed refuses the
-- whole call ('unconfirmed'), so a caller is never told of a task that may yet be discarded.
-- A task with a not_before is stored `delayed` (delay_task), not pending: nothing is published
-- for it now. Like a pending one it is marked published (`published`) only once its request
-- has succeeded, so that a request refused 503 still discards it. A task
-- without its own retry policy or attempt_timeout gets its scheduler's (register_scheduler
-- keeps them in {prefix}:scheduler_defaults); its reply item says which it got: 'new' or
-- 'new:<retry>;<attempt_timeout>'.
-- ARGV: prefix, now, then per task: id, scheduler, attributes (JSON), timeout (epoch seconds),
-- owner, priority, key (or ''), idempotency Redis key (or ''), callback_url (or ''),
-- not_before (epoch seconds or ''), retry (RetryPolicy.compact() or ''), attempt_timeout (or '')
local now = ARGV[2]
local stride = 12
local schedulers = prefix .. ':schedulers'
local scheduler_defaults = prefix .. ':scheduler_defaults'
local checked = {}  -- scheduler -> its task defaults ('' for none)
local classic = {}  -- scheduler -> true once its queue is known to take priorities
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
    checked[scheduler] = redis.call('HGET', scheduler_defaults, scheduler) or ''
  end
  -- Only a prioritised task pays for reading its scheduler's definition.
  if ARGV[i + 5] ~= '0' and not classic[scheduler] then
    local definition = cjson.decode(redis.call('HGET', schedulers, scheduler))
    if definition['queue_type'] == 'quorum' then
      return {'no_priority', scheduler}
    end
    classic[scheduler] = true
  end
end
local reply = {'ok'}
for i = 3, #ARGV, stride do
  local held = idempotency_holder(ARGV[i + 7])
  if held then
    if redis.call('HGET', task_key(held), 'published') ~= '1' then
      return {'unconfirmed', held}
    end
    reply[#reply + 1] = task_record(held)
  else
    reply[#reply + 1] = 'new'
  end
end
for i = 3, #ARGV, stride do
  if reply[(i - 3) / stride + 2] == 'new' then
    local id, scheduler, attributes, timeout = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local task = {id = id, scheduler = scheduler, attempts = '0', owner = ARGV[i + 4]}
    local not_before, retry, attempt_timeout = ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
    local defaults = checked[scheduler]
    local applied = ''
    if defaults ~= '' then
      local default_retry, default_timeout = string.match(defaults, '^([^;]*);(.*)$')
      if retry == '' and default_retry ~= '' then retry = default_retry else default_retry = '' end
      if attempt_timeout == '' and default_timeout ~= '' then
        attempt_timeout = default_timeout
      else
        default_timeout = ''
      end
      if default_retry ~= '' or default_timeout ~= '' then applied = default_retry .. ';' .. default_timeout end
    end
    if applied ~= '' then reply[(i - 3) / stride + 2] = 'new:' .. applied end
    local record = {'scheduler', scheduler, 'timeout', timeout, 'state', 'pending',
      'created_at', now, 'attempts', 0, 'owner', task.owner}
    if not_before == '' then
      record[#record + 1] = 'events'; record[#record + 1] = emit(task, 'pending', now)
    end
    if retry ~= '' then record[#record + 1] = 'retry'; record[#record + 1] = retry end
    if attempt_timeout ~= '' then
      record[#record + 1] = 'attempt_timeout'; record[#record + 1] = attempt_timeout
    end
    if ARGV[i + 5] ~= '0' then
      record[#record + 1] = 'priority'; record[#record + 1] = ARGV[i + 5]
    end
    if ARGV[i + 7] ~= '' then
      record[#record + 1] = 'key'; record[#record + 1] = ARGV[i + 6]
      record[#record + 1] = 'idem'; record[#record + 1] = ARGV[i + 7]
      redis.call('SET', ARGV[i + 7], id)
    end
    if ARGV[i + 8] ~= '' then
      record[#record + 1] = 'callback_url'; record[#record + 1] = ARGV[i + 8]
    end
    local inline = #attributes <= inline_attributes_max
    if inline then
      record[#record + 1] = 'attributes'; record[#record + 1] = attributes
    end
    redis.call('HSET', task_key(id), unpack(record))
    if not inline then redis.call('SET', attributes_key(id), attributes) end
    redis.call('ZADD', deadlines, timeout, id)
    if not_before == '' then
      redis.call('ZADD', unclaimed, tonumber(now) + republish_after, id)
    else
      task.state = 'pending'
      delay_task(task, not_before, 'delay', now, true)
    end
    redis.call('SADD', live_key(scheduler), id)
  end
end
return reply
