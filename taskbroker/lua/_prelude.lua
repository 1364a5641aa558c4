-- Shared by every transition script (prepended by TaskStore). Keys are derived from the prefix
-- (ARGV[1]) inside the scripts, so taskbroker needs a single Redis node, not a cluster.
local prefix = ARGV[1]
local deadlines = prefix .. ':deadlines'
local leases = prefix .. ':leases'
local events = prefix .. ':events'

local function task_key(id)
  return prefix .. ':task:' .. id
end

local function live_key(scheduler)
  return prefix .. ':live:' .. scheduler
end

-- Idempotency keys ({prefix}:idem:{scheduler}:{hash}) name the live task that holds them.
-- The live task holding an idempotency key, or false (a stale key is ignored, then overwritten).
local function idempotency_holder(idem)
  if idem == '' then return false end
  local id = redis.call('GET', idem)
  if not id then return false end
  local state = redis.call('HGET', task_key(id), 'state')
  if state == 'pending' or state == 'running' then return id end
  return false
end

-- Free a task's idempotency key (if it still names this task): a new task may then take it.
local function release_idempotency_key(id)
  local idem = redis.call('HGET', task_key(id), 'idem')
  if idem and redis.call('GET', idem) == id then redis.call('DEL', idem) end
end

-- Webhooks: a final task with a callback_url gets a delivery due now in {prefix}:webhooks
-- (scored by due time), in the same script that made it final, so none is ever missed.
local function schedule_webhook(id, now)
  if redis.call('HEXISTS', task_key(id), 'callback_url') == 1 then
    redis.call('ZADD', prefix .. ':webhooks', now, id)
  end
end

-- Record a state change in the event stream, in the same script as the change itself, so there
-- is never a transition without its event. The entry id is appended to the task's `events` field:
-- that is how GET /task/{id}/events finds a task's events in O(its events), with no per-task key.
-- `events_max_length` is defined by TaskStore ahead of this prelude (a setting).
local function emit(id, state, now)
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'scheduler', 'attempts', 'owner', 'events')
  local event_id = redis.call('XADD', events, 'MAXLEN', '~', events_max_length, '*',
    'task', id, 'scheduler', fields[1], 'state', state, 'attempt', fields[2] or '0',
    'owner', fields[3] or '', 'at', now)
  if fields[4] then event_id = fields[4] .. ' ' .. event_id end
  redis.call('HSET', key, 'events', event_id)
end

-- Make a live task final: the one place that removes a task from every live index and starts
-- its retention countdown, so no transition can leave a final task behind in an index.
local function finalize(id, state, now, retention_ms, result, err)
  local key = task_key(id)
  local scheduler = redis.call('HGET', key, 'scheduler')
  redis.call('HSET', key, 'state', state, 'finished_at', now)
  if result then redis.call('HSET', key, 'result', result) end
  if err then redis.call('HSET', key, 'error', err) end
  redis.call('HDEL', key, 'lease_owner', 'lease_until')
  redis.call('PEXPIRE', key, retention_ms)
  redis.call('ZREM', deadlines, id)
  redis.call('ZREM', leases, id)
  redis.call('SREM', live_key(scheduler), id)
  release_idempotency_key(id)
  schedule_webhook(id, now)
  emit(id, state, now)
  return scheduler
end
