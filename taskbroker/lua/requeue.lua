-- requeue: after their message was republished (and confirmed), lapsed running tasks -> pending.
-- Compare-and-set on the lapsed lease: a task a consumer has claimed again is left alone.
-- ARGV: prefix, now, id...
local now = tonumber(ARGV[2])
local count = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local task = read_task(id)
  if task and task.state == 'running' and tonumber(task.lease_until or '0') <= now then
    local key = task_key(id)
    redis.call('HSET', key, 'state', 'pending', 'events', emit(task, 'requeued', ARGV[2]))
    redis.call('HDEL', key, 'lease_owner', 'lease_until')
    redis.call('ZREM', leases, id)
    redis.call('ZADD', unclaimed, now + republish_after, id)
    count = count + 1
  end
end
return count
