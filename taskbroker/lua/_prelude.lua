-- Shared by every transition script (prepended by TaskStore). Keys are derived from the prefix
-- (ARGV[1]) inside the scripts, so taskbroker needs a single Redis node, not a cluster.
local prefix = ARGV[1]
local deadlines = prefix .. ':deadlines'
local leases = prefix .. ':leases'

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
  return scheduler
end
