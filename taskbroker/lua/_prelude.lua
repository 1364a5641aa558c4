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
  return scheduler
end
