-- release_due: delayed tasks whose not_before has come -> pending, a batch at a time, for the
-- timeout daemon to publish. Reads only the due slice of the delayed index (ZRANGE BYSCORE
-- LIMIT: a sweep with nothing due costs O(log n) however many wait), and runs atomically, so
-- concurrent daemons never release one task twice. A released task enters the unclaimed index
-- as a new task does (due republish_after from now): a publish that is lost or never confirmed
-- is made again by reconciliation (the daemon makes a failed one due at once: republish_soon).
-- ARGV: prefix, now, limit
-- Returns id, scheduler, priority for each released task.
local ids = redis.call('ZRANGE', delayed, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local task = read_task(id)
  if task and task.state == 'delayed' then
    local key = task_key(id)
    redis.call('HSET', key, 'state', 'pending', 'events', emit(task, 'pending', ARGV[2]))
    undelay(task)
    redis.call('ZADD', unclaimed, tonumber(ARGV[2]) + republish_after, id)
    out[#out + 1] = id
    out[#out + 1] = task.scheduler
    out[#out + 1] = redis.call('HGET', key, 'priority') or '0'
  else
    -- Not delayed any more (or gone): nothing to release, the index entry is stale.
    redis.call('ZREM', delayed, id)
  end
end
return out
